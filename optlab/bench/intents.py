"""The intents workload the transformer benches share: test rows one at a time and in padded
batches, a p50 timer, the tokenizer's cost, the CPU's speed flags and the worst length slice."""
from __future__ import annotations

import math

import numpy as np
from tokenizers import Tokenizer

from optlab.data.datasets import trim_padding
from optlab.instruments.environment import cpu_info
from optlab.instruments.timing import summarize, time_calls
from optlab.techniques.optimum import padded

THREADS = 2
SPEED_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_int8", "amx_bf16")
COMMAND = "python -m optlab.bench transformers"


def interval(p: float, n: int) -> tuple[float, float]:
    half = 1.96 * math.sqrt(max(p * (1 - p), 1e-12) / n)
    return p - half, p + half


def single_rows(split, n: int) -> list[dict[str, np.ndarray]]:
    return [trim_padding({k: v[i:i + 1] for k, v in split.inputs.items()}) for i in range(min(n, len(split)))]


def batches(split, size: int, n: int, padding: str, max_length: int) -> list[dict[str, np.ndarray]]:
    return [padded({k: v[i:i + size] for k, v in split.inputs.items()}, padding, max_length)
            for i in range(0, min(n * size, len(split) - size + 1), size)]


def p50_ms(fn, batches, budget_s: float) -> float:
    run = time_calls(fn, batches, warmup=5, min_samples=30, max_samples=3000, budget_s=budget_s)
    return summarize(run.samples_ns, n_boot=200).p50_ms


def tokenize_ms(tokenizer_path: str, texts, max_length: int, budget_s: float) -> float:
    tok = Tokenizer.from_file(tokenizer_path)
    tok.enable_truncation(max_length)
    tok.enable_padding(pad_id=tok.token_to_id("[PAD]"), pad_token="[PAD]")  # to the longest in the batch
    return p50_ms(lambda chunk: tok.encode_batch(list(chunk)), texts, budget_s)


def speed_flags() -> list[str]:
    _, flags = cpu_info()
    return sorted(f for f in SPEED_FLAGS if f in flags)


def worst_length(q, with_rows: bool = True) -> str:
    """The length slice whose quality dropped most, as "length=GROUP (+DROP pts[, ROWS rows])"."""
    by_length = [e for e in q.slices if e["slice"] == "length" and "drop" in e]
    worst = max(by_length, key=lambda e: e["drop"]) if by_length else None
    if worst is None:
        return "-"
    rows = f", {worst['rows']} rows" if with_rows else ""
    return f"length={worst['group']} ({100 * worst['drop']:+.1f}{rows})"
