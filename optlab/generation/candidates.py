"""Generation candidates as rows like any other: one per engine (and model), with the columns every
view, the costs owner and the recommendation already read.

A batch candidate's row has quality, latency and throughput; a generation candidate's row has the
same shape with the figures a language model is judged by:

- `quality`: perplexity on the test topics (`metric="perplexity"`, lower is better, token-weighted over
  windows nothing was trained on); `quality_drop` is its rise over the baseline's (0 for every engine
  over the target's fp32 weights: an engine changes when tokens are computed, not which; a candidate
  with int4 weights, `weights=`, changes which, and its rise is measured on its own weights);
- `size_mb`: the served model's weights as saved (int4 weights are about a third of fp32's);
- `agreement`: greedy token agreement with the baseline decoding each request alone, measured on the
  trace's first requests served at idle (never assumed from the engine's tests);
- goodput at the SLA from the serving layer's search (`server.goodput_at_sla`) and the figures at that
  rate: TTFT and TPOT p50/p99, `output_tokens_per_s`. `throughput_per_s` is the goodput (requests per
  second within the SLA), so the costs owner prices a request (`cost_per_1m_usd`) and an output token
  (`cost_per_1m_output_tokens_usd`) as for any row. A search that met nothing leaves them empty and says
  why in `notes`, never a zero that a cost would divide by.

The baseline is the naive deployment: the target, one request at a time (`sequential`).
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import pandas as pd

from optlab.generation.demo import ModelPair, engine_class, make_engine, missing_engine
from optlab.generation.server import GenerationServer, GoodputSearch, goodput_at_sla
from optlab.generation.trace import TraceRequest
from optlab.generation.weights import calibration_windows, quantized, size_mb, weight_format

MODELS = ("target", "draft")
PERPLEXITY_WINDOW_TOKENS = 128


@dataclass(frozen=True)
class GenerationCandidate:
    """One engine over one of the pair's models, with its options: `GenerationCandidate("continuous")`,
    `GenerationCandidate("continuous", model="draft")`, `GenerationCandidate("speculative", options=(("k", 4),))`."""

    engine: str
    model: str = "target"
    options: tuple[tuple[str, Any], ...] = field(default_factory=tuple)
    label: str = ""
    weights: str = "fp32"  # a `generation.weights` format: "int4-rtn-g32", "int4-gptq-g32", ...

    def __post_init__(self):
        if self.model not in MODELS:
            raise ValueError(f"GenerationCandidate.model must be one of {MODELS}, got {self.model!r}")
        if self.engine == "speculative" and self.model != "target":
            raise ValueError("a speculative candidate runs the target with the draft proposing; leave model='target'")
        weight_format(self.weights)
        if self.runtime == "openvino" and self.weights != "fp32":
            raise ValueError(f"an OpenVINO engine serves its own IR: give its NNCF weights as options=(('weights', "
                             f"'int8'),), not weights={self.weights!r}")

    @property
    def runtime(self) -> str:
        """"openvino" for OpenVINO GenAI's engines (they serve the exported IR), else "torch"."""
        return "openvino" if self.engine.startswith("openvino") else "torch"

    @property
    def ir_weights(self) -> str:
        """An OpenVINO engine's NNCF weights (a preset of `openvino_weights.PRESETS` or an OVWeights name)."""
        return str(dict(self.options).get("weights", "fp32"))

    @property
    def served(self) -> tuple[str, str]:
        """The weights this candidate computes with, as (model, weights): the key its perplexity is measured
        under. An OpenVINO engine's are the IR's ("openvino:int4"), measured on the IR itself."""
        return (self.model, f"openvino:{self.ir_weights}" if self.runtime == "openvino" else self.weights)

    @property
    def quantized(self) -> bool:
        return self.weights != "fp32" or (self.runtime == "openvino" and self.ir_weights != "fp32")

    @property
    def is_baseline(self) -> bool:
        return self.engine == "sequential" and self.model == "target" and not self.options and self.weights == "fp32"

    @property
    def name(self) -> str:
        if self.label:
            return self.label
        if self.is_baseline:
            return "baseline"
        opts = ", ".join(f"{k}={v}" for k, v in self.options)
        model = "" if self.model == "target" else f"{self.model} model"
        weights = "" if self.weights == "fp32" else weight_format(self.weights).label
        inner = ", ".join(part for part in (model, weights, opts) if part)
        return f"{self.engine}({inner})" if inner else self.engine

    def to_json(self) -> str:
        return json.dumps({"kind": "generation", "engine": self.engine, "model": self.model,
                           "options": dict(self.options), "weights": self.weights}, sort_keys=True)

    def module(self, pair: ModelPair) -> tuple[Any, dict]:
        """The model this candidate serves (its weights converted once per process) and what was done."""
        model = pair.target if self.model == "target" else pair.draft
        return quantized(model, self.weights,
                         lambda: calibration_windows(pair.tokenizer, model.config.vocab_size))

    def make(self, pair: ModelPair):
        """A fresh engine (None when this checkout lacks it)."""
        model, _ = self.module(pair)
        return make_engine(self.engine, ModelPair(model, pair.draft, pair.origin, pair.tokenizer), **dict(self.options))


BASELINE = GenerationCandidate("sequential")
OV_INT4 = "ov_weights(bits=4, group_size=16)"  # groups of 16: the zoo target's 688-wide MLP takes no group of 32
OPENVINO = (GenerationCandidate("openvino"),
            GenerationCandidate("openvino", options=(("weights", "int8"),), label="openvino(NNCF int8)"),
            GenerationCandidate("openvino", options=(("weights", OV_INT4),), label="openvino(NNCF int4 g16)"),
            GenerationCandidate("openvino-speculative", options=(("k", 4),)), GenerationCandidate("openvino-single"))
WORKSHOP = (BASELINE, GenerationCandidate("continuous"), GenerationCandidate("continuous", model="draft"))
FULL = (*WORKSHOP, GenerationCandidate("static"), GenerationCandidate("paged"), GenerationCandidate("transformers"),
        GenerationCandidate("speculative", options=(("k", 4),)),
        GenerationCandidate("continuous", weights="int4-rtn-g32"), GenerationCandidate("generate"),
        *OPENVINO)


LESSONS = {  # engine -> what its row teaches, shown beside its figures
    "sequential": "the baseline: one request at a time, each decode step reads every weight for one token",
    "generate": "the naive server: transformers' generate, one request at a time, no batching",
    "static": "static batching: a batch waits for its longest request, and arrivals wait for the batch",
    "continuous": "continuous batching: requests join and leave at every step, so one read of the weights serves "
                  "many sequences",
    "paged": "paged KV memory: blocks instead of a reservation per sequence, so more sequences fit one budget",
    "transformers": "the pinned library's own continuous batcher (generate_batch): the mechanism without optlab",
    "speculative": "speculative decoding: a draft proposes k tokens and the target checks them in one pass; it pays "
                   "only when the draft is right often and the target's pass is the bottleneck",
    "openvino": "a real engine: OpenVINO GenAI's continuous batching and paged attention in compiled kernels",
    "openvino-speculative": "speculative decoding inside the real engine (GenAI's draft_model, k tokens a round)",
    "openvino-single": "the real engine's kernels one request at a time (LLMPipeline): what its batching adds is "
                       "the gap to its continuous row",
}
WEIGHT_LESSONS = {"draft": "the draft model alone: faster and cheaper, and it changes which tokens come out",
                  "quantized": "weight-only quantization: fewer bytes read per decode step; its perplexity is "
                               "measured on those weights"}


def lesson(candidate: GenerationCandidate) -> str:
    """What `candidate`'s row teaches, in a sentence or two (engine, then model and weights)."""
    parts = [LESSONS.get(candidate.engine, "")]
    if candidate.model == "draft":
        parts.append(WEIGHT_LESSONS["draft"])
    if candidate.quantized:
        parts.append(WEIGHT_LESSONS["quantized"])
    return "; ".join(p for p in parts if p)


def perplexity_windows(pair: ModelPair, max_windows: int = 64) -> tuple[list, str]:
    """The held-out windows every perplexity of the pair is measured on (128 tokens of the test topics, at
    most `max_windows`; seeded random token windows for stand-in models) and what they are, in words."""
    import numpy as np

    from optlab.models import language  # lazy: the tokenizer library

    if pair.tokenizer is not None:
        docs = language.encode_split(pair.tokenizer, None, "test")
        where = "the test topics"
    else:
        rng = np.random.default_rng(0)
        docs = [rng.integers(0, pair.target.config.vocab_size, size=4 * PERPLEXITY_WINDOW_TOKENS)]
        where = "seeded random tokens (stand-in models)"
    windows = language.windows(docs, PERPLEXITY_WINDOW_TOKENS, limit=max_windows)
    return windows, f"perplexity on {len(windows)} windows of {PERPLEXITY_WINDOW_TOKENS} tokens of {where}"


def perplexities(pair: ModelPair, candidates: Sequence[GenerationCandidate] = (), *,
                 max_windows: int = 64) -> tuple[dict[tuple[str, str], float], str]:
    """Test-topic perplexity (`perplexity_windows`) of the target and the draft and of every other
    (model, weights) the `candidates` serve, keyed by (model, weights), and what it was measured on, in
    words. Stand-in models (no tokenizer) are scored on seeded random token windows, and the words say so."""
    from optlab.models import language  # lazy: the tokenizer library

    windows, words = perplexity_windows(pair, max_windows)
    served = {(name, "fp32"): GenerationCandidate("sequential", model=name) for name in MODELS}
    served.update({c.served: c for c in candidates})
    scores = {}
    for key, candidate in served.items():
        try:
            scores[key] = (_ir_perplexity(pair, candidate, windows) if candidate.runtime == "openvino"
                           else language.perplexity(candidate.module(pair)[0], windows))
        except Exception:  # noqa: BLE001 - the candidate's own row says why (its engine is built again there)
            continue
    return scores, words


def ir_folder(pair: ModelPair, candidate: GenerationCandidate):
    """The OpenVINO IR an OpenVINO candidate serves (exported once per model and weights in a process)."""
    from optlab.generation import openvino_engine  # lazy: OpenVINO and optimum-intel

    model = pair.target if candidate.model == "target" else pair.draft
    return openvino_engine.export(model, candidate.ir_weights)


def _ir_perplexity(pair: ModelPair, candidate: GenerationCandidate, windows) -> float:
    from optlab.generation import openvino_weights  # lazy: OpenVINO

    return openvino_weights.perplexity(ir_folder(pair, candidate), windows)


def _weights_label(candidate: GenerationCandidate) -> str:
    if candidate.runtime == "openvino":
        from optlab.generation.openvino_weights import recipe_for  # lazy: pulls the recipe module

        return recipe_for(candidate.ir_weights).label
    return weight_format(candidate.weights).label


def greedy_tokens(engine: Any, requests: Sequence[TraceRequest]) -> dict[str, list[int]]:
    """Every request's output tokens, all offered at once to a fresh `engine` (idle, no SLA)."""
    out: dict[str, list[int]] = {r.request_id: [] for r in requests}
    at_once = [r.__class__(r.request_id, 0.0, r.prompt_ids, r.max_new_tokens) for r in requests]
    GenerationServer(engine, saturation_s=600.0).run(at_once, n_boot=10,
                                                     on_token=lambda rid, token, _now: out[rid].append(int(token)))
    return out


def token_agreement(reference: dict[str, list[int]], other: dict[str, list[int]]) -> float | None:
    """Share of the reference's token positions where `other` has the same token (token-level exact match)."""
    total = sum(len(tokens) for tokens in reference.values())
    if not total:
        return None
    same = sum(sum(a == b for a, b in zip(tokens, other.get(rid, []), strict=False))  # a shorter answer misses the rest
               for rid, tokens in reference.items())
    return same / total


def _row(candidate: GenerationCandidate, quality: dict[str, float], quality_words: str) -> dict[str, Any]:
    from optlab.instruments.environment import environment  # lazy: reads /proc once

    ppl, base = quality.get(candidate.served), quality[("target", "fp32")]
    family = "baseline" if candidate.is_baseline else "quantization" if candidate.quantized else "generation"
    return {**environment().to_dict(), "candidate": candidate.name, "recipe": "baseline" if candidate.is_baseline
            else candidate.name, "recipe_json": candidate.to_json(), "family": family, "runtime": candidate.runtime,
            "engine": candidate.engine, "model": candidate.model, "weights": _weights_label(candidate),
            "status": "ok", "error": None, "metric": "perplexity", "quality": ppl, "perplexity": ppl,
            "baseline_quality": base, "quality_drop": None if ppl is None else ppl - base,
            "quality_note": quality_words, "lesson": lesson(candidate)}


def _figures(found) -> dict[str, Any]:
    """The goodput search's figures at its best rate; empty figures with the reason when nothing met the SLA."""
    best, row = found.at_best, found.row()
    met = found.goodput_per_s > 0 and math.isfinite(found.goodput_per_s)
    keep = ("ttft_p50_ms", "ttft_p99_ms", "tpot_p50_ms", "tpot_p99_ms", "e2e_p99_ms", "output_tokens_per_s",
            "output_tokens_per_s_per_request_p50")
    figures = {k: best.get(k) if met else None for k in keep}
    noisy = bool(row["noisy"]) or bool(best.get("ttft_noisy")) or bool(best.get("tpot_noisy"))
    return {**figures, "goodput_per_s": found.goodput_per_s if met else None,
            "throughput_per_s": found.goodput_per_s if met else None, "sla": row["sla"], "probes": row["probes"],
            "noisy": noisy, "notes": row["note"]}


def measure(pair: ModelPair, trace: Sequence[TraceRequest], candidates: Sequence[GenerationCandidate] = WORKSHOP,
            search: GoodputSearch | None = None, *, seed: int = 0, agreement_requests: int = 4,
            threads: int | None = None, on_probe: Callable[[dict, str], None] | None = None,
            on_row: Callable[[dict], None] | None = None) -> pd.DataFrame:
    """One row per candidate (see the module's docstring). A candidate whose engine this checkout lacks,
    or that raises, is an error row that says why; the others still run. `on_probe(row, name)` sees each
    probe of the goodput search (a live chart), `on_row(row)` each finished row."""
    if not candidates:
        raise ValueError("measure needs at least one GenerationCandidate (e.g. candidates.WORKSHOP)")
    search = search or GoodputSearch()
    quality, words = perplexities(pair, candidates)
    short = list(trace[:agreement_requests])
    reference = greedy_tokens(BASELINE.make(pair), short)
    rows = []
    for candidate in candidates:
        row = _row(candidate, quality, words)
        try:
            row.update(_measure_one(pair, candidate, trace, search, short, reference, seed, on_probe))
        except Exception as error:  # noqa: BLE001 - one failing engine becomes its row; the others still run
            row.update(status="error", error=f"{type(error).__name__}: {error}", notes=str(error))
        row["threads"] = threads
        rows.append(row)
        if on_row is not None:
            on_row(row)
    return pd.DataFrame(rows)


def _measure_one(pair, candidate, trace, search, short, reference, seed, on_probe) -> dict[str, Any]:
    if engine_class(candidate.engine) is None:
        return {"status": "error", "error": missing_engine(candidate.engine), "notes": missing_engine(candidate.engine)}
    made: list[Any] = []
    module, meta = candidate.module(pair)

    def make_server():
        made.append(candidate.make(pair))
        return GenerationServer(made[-1], saturation_s=5.0)

    try:
        if candidate.is_baseline:  # the reference is the baseline's own greedy output
            tokens = reference
        else:
            made.append(candidate.make(pair))
            tokens = greedy_tokens(made[-1], short)
        probe = None if on_probe is None else (lambda r: on_probe(r, candidate.name))
        found = goodput_at_sla(make_server, trace, search, seed=seed, on_probe=probe)
    finally:
        for engine in made:
            getattr(engine, "close", lambda: None)()
    size, stored = _served_size(pair, candidate, module, meta)
    notes = "; ".join(part for part in (stored, _figures(found)["notes"]) if part)
    return {"agreement": token_agreement(reference, tokens), "size_mb": size, **_figures(found), "notes": notes}


def _served_size(pair: ModelPair, candidate: GenerationCandidate, module, meta: dict) -> tuple[float, str]:
    """The served weights' size in MB and what they hold, in words: the torch module's, or for an OpenVINO
    engine the IR's file and what NNCF really stored in it (read back from the IR, never assumed)."""
    if candidate.runtime != "openvino":
        return size_mb(module), meta.get("int4_layers", "")
    from optlab.generation.openvino_engine import ir_mb  # lazy: OpenVINO
    from optlab.generation.openvino_ir import inspect_ir
    from optlab.generation.openvino_weights import recipe_for

    folder, claimed = ir_folder(pair, candidate), recipe_for(candidate.ir_weights).precision
    return ir_mb(folder), "" if claimed == "fp32" else inspect_ir(folder).describe(claimed)
