"""OpenVINO GenAI's continuous-batching pipeline as an `Engine`: a real engine beside optlab's small ones.

`ContinuousBatchingPipeline` is what a CPU user serves a language model with when vLLM needs a GPU:
paged attention (its KV cache in blocks of a pool of `kv_cache_mb`), continuous batching (requests
join and leave at every `step()`, at most `max_batched_tokens` tokens per step), greedy decoding here.
Its own calls map onto the `Engine` contract one to one: `add_request(id, input_ids, config)` is `add`,
`step()` is `step` (then every request's handle is read for the tokens it produced), and
`has_non_finished_requests()` is `has_work`, so the same servers, traces and instruments measure it.

The pipeline reads an OpenVINO IR folder. `export(model, weights=...)` writes one with optimum-intel's
exporter (`OVModelForCausalLM(export=True)`, offline: the hub is switched off while it runs), with
NNCF weight compression told by an `OVWeights` recipe or a preset's name (`weights="int8"`, `"int4"`:
int4 in groups of 32 input channels, the embedding and output head int8; see `openvino_weights`); the
folder is made once per model and recipe in a process. Token ids go in and come out as
they are: no tokenizer is converted.

With a draft LM (`draft=` a torch model, or `draft_folder=` its IR) the pipeline decodes speculatively:
GenAI's `draft_model` property and `num_assistant_tokens` k per request (`generation.openvino_draft`
says what else that needs). Greedy, the output is the target's own, token for token; a step then
verifies up to k drafted tokens per sequence, so a request may get several tokens from one step.
With a draft the prompts are prefilled whole by default (`split_prefill=False`): in openvino-genai
2026.4 a prompt whose prefill was split over steps while other sequences decoded got a different
first token from speculative decoding (2 of 16 requests of the zoo's trained pair, 87 and 91 prompt
tokens at 256 tokens per step; prefilled whole, or served alone, all 16 matched).
After its last token a request's own timings (GenAI's `PerfMetrics`) are kept: `genai_figures(id)`.
"""
from __future__ import annotations

import contextlib
import logging
import os
import tempfile
import warnings
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from optlab.generation import openvino_weights
from optlab.generation.engine import TokenEvent, make_request
from optlab.generation.openvino_draft import check_draft, draft_property, tokenized
from optlab.generation.openvino_metrics import GenAIFigures, figures_from, monotonic_ms
from optlab.generation.openvino_weights import Calibration
from optlab.models import signal_stack
from optlab.recipes.openvino import OVWeights

WEIGHTS = tuple(openvino_weights.PRESETS)  # the names export() takes; each is an OVWeights recipe
_EXPORTS: dict[tuple[int, str], tuple[Any, Path]] = {}
_FOLDER: tempfile.TemporaryDirectory | None = None


_EXPORT_LOGGERS = ("transformers", "optimum", "nncf")


@contextlib.contextmanager
def offline_and_quiet() -> Iterator[None]:
    """While exporting: the hub off (optimum's exporter looks for a tokenizer and a generation config
    there) and the exporter's chatter (tracer warnings, its guesses about the folder, deprecations) out
    of notebooks: those loggers at ERROR, warnings ignored. Everything is set back afterwards."""
    names = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    before = {name: os.environ.get(name) for name in names}
    loggers = [logging.getLogger(name) for name in _EXPORT_LOGGERS]
    levels = [logger.level for logger in loggers]
    os.environ.update({name: "1" for name in names})
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)
        for name, value in before.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def export(model: Any, weights: str | OVWeights = "fp32", folder: str | os.PathLike | None = None, *,
           calibration: Calibration | None = None) -> Path:
    """An OpenVINO IR folder of causal LM `model` with `weights`: an `OVWeights` recipe or a preset's name
    ("fp32", or NNCF-compressed "int8" / "int4" / "int4-awq"; `calibration()` gives the token windows a
    data-aware recipe needs), made once per model and recipe in a process (under a temporary folder
    unless `folder`). The recipe is checked against the model before anything is exported."""
    global _FOLDER
    recipe = openvino_weights.recipe_for(weights)
    openvino_weights.check_fits(recipe, model, calibration)
    key = (id(model), recipe.name)
    if key in _EXPORTS and _EXPORTS[key][0] is model and folder is None:
        return _EXPORTS[key][1]
    try:
        with offline_and_quiet():
            from optimum.intel import OVModelForCausalLM  # lazy: heavy
    except ImportError as error:
        raise RuntimeError(f"exporting to OpenVINO needs optimum-intel ({error}); pip install optimum-intel") from error
    fp32 = export(model, "fp32") if recipe.bits != 32 else None  # NNCF compresses the fp32 export (made once)
    if folder is None:
        _FOLDER = _FOLDER or tempfile.TemporaryDirectory(prefix="optlab-openvino-")
        folder = Path(_FOLDER.name) / f"model-{len(_EXPORTS)}-{recipe.precision}"
    folder = Path(folder)
    if fp32 is not None:
        windows = list(calibration()) if recipe.calibrated else []
        with offline_and_quiet():
            openvino_weights.compress(fp32, recipe, folder, windows)
        _EXPORTS[key] = (model, folder)
        return folder
    source = folder.with_name(folder.name + "-hf")
    model.save_pretrained(source)
    with offline_and_quiet():  # load_in_8bit=False: optimum would compress a model over 1B parameters unasked
        exported = OVModelForCausalLM.from_pretrained(source, export=True, compile=False, load_in_8bit=False)
        exported.save_pretrained(folder)
    _EXPORTS[key] = (model, folder)
    return folder


def ir_mb(folder: str | os.PathLike) -> float:
    """The IR's weights file in MB (what the pipeline loads)."""
    return Path(folder, "openvino_model.bin").stat().st_size / 1e6


def resolve_folder(model: Any, folder: str | os.PathLike | None, weights: str) -> Path:
    """The IR folder an engine loads: `folder`, or `model` exported with `weights`; exactly one of them."""
    if (model is None) == (folder is None):
        raise ValueError("pass a causal LM (model=) or an OpenVINO IR folder (folder=), not both")
    return Path(folder) if folder is not None else export(model, weights)


def device_properties(threads: int, precision: str) -> dict[str, Any]:
    """OpenVINO's CPU properties for every optlab pipeline: its inference threads and activations' precision
    (f32 unless asked: on a CPU with bf16 or AMX units OpenVINO would otherwise compute in bf16 by default)."""
    return {"INFERENCE_NUM_THREADS": int(threads), "INFERENCE_PRECISION_HINT": precision}


def speculative_properties(draft: Any, draft_folder: str | os.PathLike | None, weights: str,
                           device: dict[str, Any]) -> dict[str, Any]:
    """The pipeline properties that make it speculative: {} without a draft, else `draft_model` (the draft
    exported with the target's `weights` when given as a torch model; `check_draft` has checked them)."""
    if draft is None and draft_folder is None:
        return {}
    return {"draft_model": draft_property(draft_folder if draft_folder is not None else export(draft, weights),
                                          device)}


def greedy_config(genai: Any, max_new_tokens: int, k: int | None) -> Any:
    """Greedy, exactly `max_new_tokens` tokens (eos included, as optlab's engines decode: min_new_tokens would
    instead forbid eos and change the greedy answer), k drafted tokens per round when speculative."""
    config = genai.GenerationConfig()
    config.max_new_tokens = int(max_new_tokens)
    config.ignore_eos = True
    config.do_sample = False
    if k is not None:
        config.num_assistant_tokens = int(k)
    return config


class OpenVINOEngine:
    """OpenVINO GenAI continuous batching over `model` (a torch causal LM, exported on first use) or an
    IR `folder`; `weights` as for `export`. `max_batched_tokens` is the tokens per scheduler step,
    `max_batch` the sequences in flight, `threads` OpenVINO's inference threads (the optlab engines'
    torch threads' counterpart), `precision` the activations' ("f32", or "bf16" where the CPU has it).
    `draft` (a torch causal LM of the same vocabulary) or `draft_folder` makes it speculative with `k`
    drafted tokens per round (see the module's docstring). `split_prefill` is GenAI's dynamic split-fuse (a
    long prompt's prefill spread over steps, beside other sequences' decoding): on by default, off by default
    with a draft, where prompts are then prefilled whole and may hold at most `max_batched_tokens` tokens."""

    def __init__(self, model: Any = None, *, folder: str | os.PathLike | None = None, weights: str = "fp32",
                 max_batched_tokens: int = 256, max_batch: int = 8, threads: int = 1, prefix_caching: bool = False,
                 precision: str = "f32", draft: Any = None, draft_folder: str | os.PathLike | None = None,
                 k: int = 4, split_prefill: bool | None = None):
        import openvino as ov  # lazy: heavy
        import openvino_genai as genai

        self.k = check_draft(draft, draft_folder, k)
        self.folder = resolve_folder(model, folder, weights)
        self.model = model
        config = genai.SchedulerConfig()
        config.cache_size = 1  # GB of paged KV pool, the smallest it takes (reserved up front: no waste figure)
        config.max_num_batched_tokens = int(max_batched_tokens)
        config.max_num_seqs = int(max_batch)
        config.enable_prefix_caching = bool(prefix_caching)
        self.split_prefill = (self.k is None) if split_prefill is None else bool(split_prefill)
        config.dynamic_split_fuse = self.split_prefill
        self.max_batched_tokens = int(max_batched_tokens)
        device = device_properties(threads, precision)
        speculative = speculative_properties(draft, draft_folder, weights, device)
        folder_ = tokenized(self.folder) if speculative else self.folder  # GenAI checks both tokenizers
        with signal_stack.kept():  # its CPU plugin swaps the thread's signal stack (models.signal_stack)
            self.pipeline = genai.ContinuousBatchingPipeline(str(folder_), config, "CPU", {**device, **speculative})
        self._ov, self._genai = ov, genai
        self._known: set[str] = set()
        self._live: dict[str, tuple[Any, int, int]] = {}  # request id -> (handle, tokens emitted, asked)
        self._figures: dict[str, GenAIFigures] = {}
        self._first_ms: dict[str, float] = {}  # request id -> when its first token came back from a step
        self._handed_ms: dict[str, float] = {}  # request id -> just before add_request (monotonic ms)
        self._next_id = 0
        self.weights = weights

    def add(self, request_id: str, prompt_ids: list[int], max_new_tokens: int) -> None:
        request = make_request(self.model, request_id, prompt_ids, max_new_tokens, self._known)
        prompt_ids, max_new_tokens = list(request.prompt_ids), request.max_new_tokens
        if not self.split_prefill and len(prompt_ids) > self.max_batched_tokens:
            raise ValueError(f"request {request_id!r}: a {len(prompt_ids)}-token prompt exceeds max_batched_tokens"
                             f"={self.max_batched_tokens} (prompts are prefilled whole here); raise max_batched_tokens")
        ids = self._ov.Tensor(np.asarray([prompt_ids], dtype=np.int64))
        config = greedy_config(self._genai, max_new_tokens, self.k)
        self._handed_ms[request_id] = monotonic_ms()  # the last moment before GenAI has the request
        handle = self.pipeline.add_request(self._next_id, ids, config)
        self._next_id += 1
        self._known.add(request_id)
        self._live[request_id] = (handle, 0, int(max_new_tokens))

    def has_work(self) -> bool:
        return bool(self._live)

    def step(self) -> list[TokenEvent]:
        """One scheduler step of the pipeline, then the tokens each request produced in it."""
        events: list[TokenEvent] = []
        if not self._live:
            return events
        self.pipeline.step()
        now_ms = monotonic_ms()
        for request_id, (handle, emitted, asked) in list(self._live.items()):
            new: list[int] = []
            while handle.can_read():
                for output in handle.read().values():
                    new += [int(t) for t in output.generated_ids]
            new = new[: asked - emitted]
            if new and not emitted:
                self._first_ms[request_id] = now_ms
            done = not str(handle.get_status()).endswith("RUNNING") or emitted + len(new) >= asked
            for i, token in enumerate(new):
                events.append(TokenEvent(request_id, token, done and i == len(new) - 1))
            if done:  # one that ended without its last token (ignored, cancelled) is left unanswered: not completed
                del self._live[request_id]
                first_ms = self._first_ms.pop(request_id, None)
                self._figures[request_id] = figures_from(handle.get_perf_metrics(), first_ms,
                                                         self._handed_ms.pop(request_id, None))
            else:
                self._live[request_id] = (handle, emitted + len(new), asked)
        return events

    def genai_figures(self, request_id: str) -> GenAIFigures | None:
        """GenAI's own TTFT and TPOT of a finished request (None while it runs or if it never finished)."""
        return self._figures.get(request_id)


class OpenVINOSpeculativeEngine(OpenVINOEngine):
    """`OpenVINOEngine` decoding speculatively, the draft its second argument (as `SpeculativeEngine` takes
    it), so a model pair builds it by name ("openvino-speculative")."""

    def __init__(self, model: Any = None, draft: Any = None, *, k: int = 4, **options: Any):
        if draft is None and options.get("draft_folder") is None:
            raise ValueError("speculative decoding needs a draft LM: pass draft= (a causal LM) or draft_folder=")
        super().__init__(model, draft=draft, k=k, **options)
