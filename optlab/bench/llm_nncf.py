"""bench llm's NNCF section: the OpenVINO IR as exported and NNCF int8 / int4 / int4 AWQ, what the IR
really stores (read back), its size, perplexity on the IR itself and greedy tokens/s; the int4 target on it."""
from __future__ import annotations

import time
from typing import Any, Callable

import pandas as pd

from optlab.bench.llm_settings import COMMAND, Settings, spread
from optlab.bench.render import Col, Layout, target, times, verdict
from optlab.generation.demo import ModelPair

# --- NNCF weight compression of the OpenVINO export (issue 28) -----------------------------------------------
# Rows for the IR as exported (fp32) and NNCF int8 / int4 / int4 AWQ: what the IR really stores (read back),
# its size, its perplexity measured on the IR itself over the windows the INC table uses, and greedy tokens/s.

def nncf_recipes(model) -> list[Any]:
    """fp32, int8 per channel, int4 (RTN and data-aware AWQ) in the largest group <= 32 this model's layers
    take (the zoo's target, 688 channels wide in its MLP, takes 16)."""
    from optlab.generation.openvino_weights import largest_group_size  # lazy: pulls the recipe module
    from optlab.recipes.openvino import OVWeights

    group = largest_group_size(model, 32)
    return [OVWeights(bits=32), OVWeights(bits=8), OVWeights(bits=4, group_size=group),
            OVWeights(bits=4, group_size=group, awq=True)]


def nncf_rounds(pair: ModelPair, settings: Settings, threads: int, progress: Callable[[str], None]) -> pd.DataFrame:
    """One row per NNCF recipe on the target: what the IR stores, its size, perplexity on the IR, and greedy
    tokens/s (optimum-intel's `generate`, recipes interleaved within each round after one warm-up each)."""
    from optlab.generation import openvino_engine, openvino_weights  # lazy: OpenVINO is heavy
    from optlab.generation.candidates import perplexity_windows
    from optlab.generation.openvino_ir import inspect_ir
    from optlab.generation.weights import calibration_windows

    windows, _ = perplexity_windows(pair)
    calibration = lambda: calibration_windows(pair.tokenizer, pair.target.config.vocab_size)  # noqa: E731
    rows, loaded = [], {}
    for recipe in nncf_recipes(pair.target):
        row = {"weights": recipe.label, "recipe": recipe.name, "bits": recipe.bits, "awq": recipe.awq}
        rows.append(row)
        try:
            start = time.perf_counter()
            folder = openvino_engine.export(pair.target, recipe, calibration=calibration)
            stored = inspect_ir(folder)
            row.update(export_s=time.perf_counter() - start, size_mb=openvino_engine.ir_mb(folder),
                       stored=stored.describe(recipe.precision), perplexity=openvino_weights.perplexity(
                           folder, windows, threads))
            loaded[recipe.label] = openvino_weights.load(folder, threads)
        except Exception as error:  # noqa: BLE001 - one recipe that fails is its row; the others still run
            row["stored"] = f"failed: {type(error).__name__}: {error}"
        progress(f"  nncf {recipe.label}: {row['stored']}")
    prompt = list(windows[0][:16])
    speeds = {label: [] for label in loaded}
    for model in loaded.values():
        openvino_weights.tokens_per_s(model, prompt, settings.new_tokens)  # warm-up
    for round_ in range(settings.rounds):
        for label, model in loaded.items():
            speeds[label].append(openvino_weights.tokens_per_s(model, prompt, settings.new_tokens))
        progress(f"  nncf round {round_}: " + ", ".join(f"{k} {v[-1]:.0f} tokens/s" for k, v in speeds.items()))
    return _nncf_ratios(pd.DataFrame(rows), speeds)


def _nncf_ratios(frame: pd.DataFrame, speeds: dict[str, list[float]]) -> pd.DataFrame:
    """Size and perplexity against the fp32 IR's, median tokens/s and its ratio to fp32's per round."""
    for column in ("size_mb", "perplexity"):
        if column not in frame:
            frame[column] = None
    base = frame.set_index("weights").loc["fp32"]
    frame["size_ratio"] = pd.to_numeric(frame["size_mb"]) / base["size_mb"]
    frame["perplexity_rise"] = pd.to_numeric(frame["perplexity"]) / base["perplexity"] - 1
    frame["tokens_per_s"] = [spread(speeds.get(label, []))["median"] for label in frame["weights"]]
    fp32 = speeds.get("fp32", [])
    frame["speed_vs_fp32"] = [spread([s / f for s, f in zip(speeds.get(label, []), fp32, strict=False)])["median"]
                              for label in frame["weights"]]
    return frame


def nncf_int4_target(frame: pd.DataFrame, smoke: bool) -> dict[str, Any]:
    """The int4 target on NNCF int4 without AWQ: size <= 0.35x the fp32 IR, perplexity on the IR +<= 10%."""
    label = "NNCF int4 weight-only (OpenVINO IR): size <= 0.35x fp32 and perplexity +<= 10%"
    rows = frame[(frame["bits"] == 4) & ~frame["awq"].astype(bool)]
    row = rows.iloc[0] if len(rows) else None
    if row is None or pd.isna(row["size_ratio"]) or pd.isna(row["perplexity_rise"]):
        why = "no int4 recipe" if row is None else row["stored"]
        return target(label, None, None, COMMAND, f"NNCF int4 weight-only: not available ({why})")
    met = None if smoke else bool(row["size_ratio"] <= 0.35 and row["perplexity_rise"] <= 0.10)
    sentence = (f"int4 weight-only ({row['weights']}, the OpenVINO IR): size {row['size_mb']:.3g} MB = "
                f"{row['size_ratio']:.2f}x the fp32 IR (target <= 0.35x), perplexity on the IR {row['perplexity']:.2f} "
                f"({row['perplexity_rise']:+.2%}; target <= +10%), greedy decode {times(row['speed_vs_fp32'])} "
                f"fp32's tokens/s; stored: {row['stored']}: {verdict(met)}")
    return target(label, row["size_ratio"], met, COMMAND, sentence)


NNCF_LAYOUT = Layout((
    Col("weights", "weights", 24, "<"), Col("size_mb", "size MB", 9, spec=".3g"),
    Col("size_ratio", "x fp32", 8, spec=".2f"), Col("perplexity", "perplexity", 12, spec=".2f"),
    Col("perplexity_rise", "rise", 8, spec="+.2%"), Col("tokens_per_s", "tokens/s", 10, spec=".4g"),
    Col("speed_vs_fp32", "speed x fp32", 13, spec=".2f"), Col("stored", "stored in the IR", 40, "<", before="  ")))


