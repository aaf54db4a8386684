"""NNCF weight compression of a causal LM's OpenVINO export, told by an `OVWeights` recipe, and the
figures that judge it on the compressed IR itself: what it stores, its size, its perplexity on the same
held-out windows as the torch models' (`candidates.perplexity_windows`) and its greedy tokens/s.

The names `export(model, weights=...)` has always taken are presets of the recipe ("fp32", "int8",
"int4", and "int4-awq" for data-aware AWQ); a recipe is checked against the model (a group size must
divide every int4 layer's input channels) and its calibration before anything is exported. Compression
runs through optimum-intel's `OVQuantizer` on the fp32 export, with NNCF's data-aware AWQ calibrated on
token windows of the training text (`weights.calibration_windows`), never the test text.
"""
from __future__ import annotations

import contextlib
import io
import os
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from optlab.generation.openvino_ir import inspect_ir
from optlab.models import signal_stack
from optlab.recipes.openvino import OVWeights
from optlab.recipes.recipe import parse

PRESETS: dict[str, OVWeights] = {
    "fp32": OVWeights(bits=32),
    "int8": OVWeights(bits=8),
    "int4": OVWeights(bits=4, group_size=32, ratio=1.0),
    "int4-awq": OVWeights(bits=4, group_size=32, ratio=1.0, awq=True),
}
Calibration = Callable[[], Sequence[np.ndarray]]


def recipe_for(weights: str | OVWeights) -> OVWeights:
    """The recipe `weights` names: a preset name, a recipe's own name ("ov_weights(bits=4, awq=True)")
    or the recipe itself."""
    if isinstance(weights, OVWeights):
        return weights
    if isinstance(weights, str) and weights in PRESETS:
        return PRESETS[weights]
    if isinstance(weights, str) and weights.startswith(f"{OVWeights.kind}("):
        return parse(weights)
    raise ValueError(f"unknown weights {weights!r} for OpenVINO; use one of {', '.join(PRESETS)} or an "
                     f"OVWeights recipe, e.g. OVWeights(bits=4, group_size=32)")


def check_fits(recipe: OVWeights, model: Any, calibration: Calibration | None = None) -> None:
    """Refuse, before exporting, a recipe this model cannot take: a group size that does not divide the
    input channels of every layer it puts in int4, or data-aware compression without calibration windows."""
    if recipe.calibrated and calibration is None:
        raise ValueError(f"{recipe.name} is data-aware (AWQ): pass calibration=, e.g. lambda: "
                         f"weights.calibration_windows(tokenizer, vocab_size)")
    if recipe.bits != 4 or recipe.group_size == -1:
        return
    widths = {name: width for name, width in _int4_inputs(model, recipe.all_layers) if width % recipe.group_size}
    if widths:
        name, width = next(iter(widths.items()))
        more = f" (and {len(widths) - 1} more layers)" if len(widths) > 1 else ""
        raise ValueError(f"OVWeights.group_size={recipe.group_size} does not divide the {width} input channels of "
                         f"{name}{more}; choose a group size that divides every layer's input channels (e.g. "
                         f"{largest_group_size(model, recipe.group_size, recipe.all_layers)}) or -1 for per-channel")


def _int4_inputs(model: Any, all_layers: bool) -> list[tuple[str, int]]:
    """(name, input channels) of each layer NNCF may put in int4: the linear layers, the output head and
    embedding only with `all_layers` (otherwise NNCF keeps them in int8 per channel)."""
    import torch  # lazy: heavy

    head = model.get_output_embeddings()
    out = [(name, module.in_features) for name, module in model.named_modules()
           if isinstance(module, torch.nn.Linear) and (all_layers or module is not head)]
    if all_layers:
        out.append(("the embedding", model.get_input_embeddings().embedding_dim))
    return out


def largest_group_size(model: Any, at_most: int = 128, all_layers: bool = False) -> int:
    """The largest power of two <= `at_most` dividing every int4 layer's input channels (the zoo's target,
    688 channels wide in its MLP, takes 16, not 32); -1 (per channel) when none >= 2 does."""
    widths = [width for _, width in _int4_inputs(model, all_layers)]
    size = 1 << (max(int(at_most), 1).bit_length() - 1)
    while size >= 2:
        if all(width % size == 0 for width in widths):
            return size
        size //= 2
    return -1


def nncf_config(recipe: OVWeights, samples: int | None = None) -> Any:
    """optimum-intel's `OVWeightQuantizationConfig` for `recipe` (int8: per output channel)."""
    from optimum.intel import OVWeightQuantizationConfig  # lazy: heavy

    if recipe.bits == 8:
        return OVWeightQuantizationConfig(bits=8, sym=recipe.sym)
    return OVWeightQuantizationConfig(bits=4, sym=recipe.sym, group_size=recipe.group_size, ratio=recipe.ratio,
                                      all_layers=recipe.all_layers or None, num_samples=samples,
                                      quant_method="awq" if recipe.awq else "default")


def compress(fp32_folder: str | os.PathLike, recipe: OVWeights, folder: str | os.PathLike,
             windows: Sequence[np.ndarray] = ()) -> Path:
    """Write `recipe`'s compression of the fp32 IR in `fp32_folder` to `folder` (NNCF through optimum-intel's
    `OVQuantizer`; `windows` of token ids calibrate data-aware recipes) and check that it holds what it claims."""
    import torch  # lazy: heavy
    from optimum.intel import OVConfig, OVModelForCausalLM, OVQuantizer

    if recipe.bits == 32:
        raise ValueError("OVWeights(bits=32) is the fp32 export itself: nothing to compress")
    model = OVModelForCausalLM.from_pretrained(Path(fp32_folder).resolve(), export=False, compile=False)
    dataset = None
    if recipe.calibrated:
        import nncf  # lazy: heavy

        ids = [torch.as_tensor(np.asarray(w, dtype=np.int64))[None] for w in windows]
        dataset = nncf.Dataset([model.prepare_inputs(input_ids=i, attention_mask=torch.ones_like(i)) for i in ids])
    config = nncf_config(recipe, len(windows) if recipe.calibrated else None)
    with contextlib.redirect_stdout(io.StringIO()):  # NNCF's progress bars (rich, on stdout) stay out of output
        OVQuantizer(model).quantize(ov_config=OVConfig(quantization_config=config), calibration_dataset=dataset,
                                    save_directory=Path(folder))
    stored = inspect_ir(folder)
    if not stored.count(recipe.precision):
        raise RuntimeError(f"NNCF stored no matrix in {recipe.precision} for {recipe.name}: "
                           f"{stored.describe(recipe.precision)}")
    return Path(folder)


# --- judging the compressed IR itself --------------------------------------------------------------------

def load(folder: str | os.PathLike, threads: int = 1) -> Any:
    """The IR as optimum-intel's `OVModelForCausalLM`, computing in f32 (a CPU with bf16 units would
    otherwise run bf16 by default and blur the weights' own effect) on `threads` threads."""
    from optimum.intel import OVModelForCausalLM  # lazy: heavy

    from optlab.generation.openvino_engine import offline_and_quiet  # lazy: it imports this module

    # offline and quiet: optimum's guesses about the folder stay out of notebooks; its CPU plugin swaps the
    # thread's signal stack (models.signal_stack)
    with offline_and_quiet(), signal_stack.kept():
        return OVModelForCausalLM.from_pretrained(Path(folder).resolve(), export=False, ov_config={
            "INFERENCE_NUM_THREADS": int(threads), "INFERENCE_PRECISION_HINT": "f32"})


def perplexity(folder: str | os.PathLike, windows: Sequence[np.ndarray], threads: int = 1) -> float:
    """Perplexity of the IR's own logits on `windows`, by the formula the torch models are scored with
    (`language.perplexity`: exp of the token-weighted mean NLL of each window's tokens after the first)."""
    from optlab.models import language  # lazy: the tokenizer library

    return language.perplexity(load(folder, threads), list(windows))


def tokens_per_s(model: Any, prompt: Sequence[int], new_tokens: int) -> float:
    """One greedy decode of `new_tokens` after `prompt` by a `load`ed IR (optimum-intel's `generate`, the
    KV cache in the IR's state), in tokens/s; the caller warms it up and interleaves rounds."""
    import torch  # lazy: heavy

    ids = torch.as_tensor(np.asarray(prompt, dtype=np.int64))[None]
    start = time.perf_counter()
    out = model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False, max_new_tokens=new_tokens,
                         min_new_tokens=new_tokens, pad_token_id=0)
    return int(out.shape[1] - ids.shape[1]) / (time.perf_counter() - start)
