"""Weight-only int4 for the language model through Intel Neural Compressor (the recipes a user of an
LLM reaches for first: RTN, GPTQ, AWQ) and torchao (its CPU int4 layout), each a registered
`WeightFormat`, with the figures that decide between them: the model's size and its perplexity beside
the fp32 weights'.

Weight-only means each linear layer's weights are stored as 4-bit integers in groups of `group_size`
input channels, one scale per group, and dequantized on the fly; activations, the embedding and the
output head stay fp32. INC's `INCWeightOnlyLinear` unpacks its weights in every call and torchao's
CPU kernel packs for a GEMM that a one-token decode step barely uses, so on a CPU a decode step gets
*slower*, not faster: the gain is memory (the model shrinks to about a third), which is
what counts where a model does not fit or where memory bandwidth bounds decode with real int4 kernels.
GPTQ and AWQ calibrate on windows of the training topics, never the test topics perplexity is measured on.

`quantized(model, name, calibration)` converts once per model and format in a process (a goodput
search builds a fresh engine for every probe; they share the converted weights, which no engine changes).
"""
from __future__ import annotations

import copy
import io
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np

CALIBRATION_WINDOWS = 32
CALIBRATION_TOKENS = 128


@dataclass(frozen=True)
class WeightFormat:
    """How a causal LM's linear weights are stored: `algorithm` "fp32" (as trained), "rtn", "gptq" or "awq"."""

    algorithm: str
    bits: int = 4
    group_size: int = 32

    @property
    def name(self) -> str:
        return "fp32" if self.algorithm == "fp32" else f"int{self.bits}-{self.algorithm}-g{self.group_size}"

    @property
    def label(self) -> str:
        if self.algorithm in ("fp32", "torchao"):
            return "fp32" if self.algorithm == "fp32" else f"torchao int{self.bits} g{self.group_size}"
        return f"INC {self.algorithm.upper()} int{self.bits} g{self.group_size}"

    @property
    def calibrated(self) -> bool:
        return self.algorithm in ("gptq", "awq")


WEIGHT_FORMATS: dict[str, WeightFormat] = {f.name: f for f in (
    WeightFormat("fp32"), WeightFormat("rtn"), WeightFormat("rtn", group_size=128), WeightFormat("gptq"),
    WeightFormat("awq"), WeightFormat("torchao"))}


def weight_format(name: str) -> WeightFormat:
    if name not in WEIGHT_FORMATS:
        raise ValueError(f"unknown weight format {name!r}; use one of {', '.join(WEIGHT_FORMATS)}")
    return WEIGHT_FORMATS[name]


def size_mb(model: Any) -> float:
    """The model's weights as `torch.save` writes them (packed int4 tensors, scales, fp32 rest), in MB."""
    import torch

    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    return buffer.tell() / 1e6


def calibration_windows(tokenizer: Any, vocab_size: int, *, count: int = CALIBRATION_WINDOWS) -> list[np.ndarray]:
    """Windows of the training topics (the trained pair's tokenizer), or seeded random tokens for stand-ins."""
    if tokenizer is None:
        rng = np.random.default_rng(1)
        return [rng.integers(0, vocab_size, size=CALIBRATION_TOKENS) for _ in range(count)]
    from optlab.models import language  # lazy: the tokenizer library

    return language.windows(language.encode_split(tokenizer, None, "train"), CALIBRATION_TOKENS, limit=count)


_CACHE: dict[tuple[int, str], tuple[Any, Any, dict]] = {}


def quantized(model: Any, name: str, calibration: Callable[[], Sequence[np.ndarray]] | None = None) -> tuple[Any, dict]:
    """`model` with its weights in format `name` (a copy; `model` is untouched) and what was done, in
    words (`meta`). `calibration()` gives token windows for GPTQ and AWQ (read only when needed)."""
    fmt = weight_format(name)
    if fmt.algorithm == "fp32":
        return model, {"weights": "fp32"}
    key = (id(model), fmt.name)
    if key in _CACHE and _CACHE[key][0] is model:
        return _CACHE[key][1], _CACHE[key][2]
    if fmt.calibrated and calibration is None:
        raise ValueError(f"{fmt.label} calibrates: pass calibration (e.g. calibration_windows(tokenizer, vocab))")
    module, meta = _convert(model, fmt, list(calibration()) if fmt.calibrated else [])
    _CACHE[key] = (model, module, meta)
    return module, meta


def _layer_counts(module: Any) -> tuple[int, int]:
    """(linear layers holding int4: replaced by INC's weight-only module or given torchao's int4 tensor,
    linear layers in all): the row's evidence."""
    import torch

    inc = sum("WeightOnly" in type(m).__name__ for m in module.modules())
    linear = [m for m in module.modules() if isinstance(m, torch.nn.Linear)]
    torchao = sum("Int4" in type(m.weight).__name__ for m in linear)  # a tensor subclass inside nn.Linear
    return inc + torchao, inc + len(linear)


def _convert(model: Any, fmt: WeightFormat, windows: list[np.ndarray]) -> tuple[Any, dict]:
    import torch

    from optlab.models.runtimes import quiet_torch_logs
    from optlab.techniques.inc import _import_inc, _inc_workspace  # lazy: INC is heavy
    from optlab.techniques.workdirs import resolve_workdir

    module = copy.deepcopy(model).eval()
    if fmt.algorithm == "torchao":
        return _torchao(module, fmt)
    inc, workdir = _import_inc(), resolve_workdir(None)

    def calibrate(prepared) -> None:
        with torch.inference_mode():
            for window in windows:
                prepared(torch.as_tensor(np.asarray(window, dtype=np.int64))[None])

    with _inc_workspace(workdir), quiet_torch_logs():  # INC's layer-wise fallback and numba lines
        if fmt.algorithm == "rtn":
            module = inc.quantize(module, inc.RTNConfig(bits=fmt.bits, group_size=fmt.group_size))
        elif fmt.algorithm == "gptq":
            # a local model_path keeps INC off the hub (it resolves the path even when it never reads it)
            prepared = inc.prepare(module, inc.GPTQConfig(bits=fmt.bits, group_size=fmt.group_size,
                                                          model_path=str(workdir)))
            calibrate(prepared)
            module = inc.convert(prepared)
        else:
            example = torch.as_tensor(np.asarray(windows[0], dtype=np.int64))[None]
            prepared = inc.prepare(module, inc.AWQConfig(bits=fmt.bits, group_size=fmt.group_size),
                                   example_inputs=example)
            calibrate(prepared)
            module = inc.convert(prepared)
    return module.eval(), _meta(module, fmt, windows)


def _torchao(module: Any, fmt: WeightFormat) -> tuple[Any, dict]:
    """torchao's CPU int4 weight-only layout (`Int4OpaqueTensor`: packed for `_weight_int4pack_mm_for_cpu`)."""
    from optlab.models.runtimes import quiet_torch_logs

    with quiet_torch_logs():
        try:
            from torchao.prototype.quantization.int4 import PrototypeInt4WeightOnlyConfig
            from torchao.quantization import quantize_
        except ImportError as error:
            raise RuntimeError(f"torchao's CPU int4 layout is not in this torchao ({error}); pip install "
                               "torchao>=0.18 or use an INC format") from error
        quantize_(module, PrototypeInt4WeightOnlyConfig(group_size=fmt.group_size))
    return module.eval(), _meta(module, fmt, [])


def _meta(module: Any, fmt: WeightFormat, windows: list[np.ndarray]) -> dict:
    converted, linear = _layer_counts(module)
    if not converted:
        raise RuntimeError(f"{fmt.label} converted no linear layer of this model: it would be fp32 under an "
                           "int4 name; check the model's layer types")
    meta = {"weights": fmt.label, "int4_layers": f"{converted} of {linear} linear layers",
            "weight_only": "activations and the embedding stay fp32"}
    if fmt.calibrated:
        meta["calibration"] = f"{len(windows)} windows of the training topics"
    return meta
