"""The engines and measurements `python -m optlab.bench gpu-llm` runs the language model with on a GPU.

`DeviceEngine` keeps `generation.engine.SequentialEngine`'s schedule (first come first served, one
request at a time, KV cache, greedy) with the model on a device: each prompt is copied there and each
token read back (the server needs it, so every step ends in a synchronisation, as it would in a real
server). Its cache is transformers' `DynamicCache` (eager) or a `StaticDecoder`: one `StaticCache`
of fixed length, reset for each request, whose one-token decode step is `torch.compile`d (by default
with CUDA graphs, `mode="reduce-overhead"`); the prompt's prefill stays eager (its length varies).

The compiled step is shared by every engine made from one decoder, so a goodput search's fresh engine
per probe does not compile again. torch.compile's CUDA graphs run only in the thread that recorded
them (pytorch/pytorch#123177), so these engines are driven in-thread (`GenerationServer.run`).

`device_perplexity` is `models.language.perplexity` with the windows copied to the device;
`decode_step` times one decode step with the bench harness (warm-up until the latency settles).
torch and transformers are imported on use.
"""
from __future__ import annotations

import math
import time
from typing import Any

import numpy as np

from optlab.generation.engine import KvBytes, SequentialEngine


class StaticDecoder:
    """A `StaticCache` of `max_len` tokens for one sequence and the model's one-token decode step,
    compiled with `torch.compile(mode=mode, fullgraph=True)` (`mode=None`: eager, for tests)."""

    def __init__(self, model, device: str, max_len: int, mode: str | None = "reduce-overhead"):
        import torch
        from transformers import StaticCache

        self.model, self.device, self.max_len, self.mode = model, device, max_len, mode
        self.cache = StaticCache(config=model.config, max_cache_len=max_len)
        forward = model.forward
        self.step_fn = forward if mode is None else torch.compile(forward, mode=mode, fullgraph=True)
        self.compile_s: float | None = None  # seconds of the first compiled call (tracing + compiling)

    def prefill(self, prompt_ids) -> int:
        """Reset the cache, run the prompt (eager) and return the first greedy token."""
        import torch

        self.cache.reset()
        ids = torch.tensor([list(prompt_ids)], dtype=torch.long, device=self.device)
        positions = torch.arange(ids.shape[1], device=self.device)
        out = self.model(input_ids=ids, past_key_values=self.cache, cache_position=positions, use_cache=True)
        return int(out.logits[0, -1].argmax())

    def decode(self, token: int, position: int) -> int:
        """Feed `token` at `position` (compiled step) and return the next greedy token."""
        import torch

        ids = torch.tensor([[token]], dtype=torch.long, device=self.device)
        positions = torch.tensor([position], dtype=torch.long, device=self.device)
        first = self.compile_s is None and self.mode is not None
        start = time.perf_counter()
        out = self.step_fn(input_ids=ids, past_key_values=self.cache, cache_position=positions, use_cache=True)
        token = int(out.logits[0, -1].argmax())
        if first:
            self.compile_s = time.perf_counter() - start
        return token


class DeviceEngine(SequentialEngine):
    """`SequentialEngine` with the model on `device` (see the module's docstring); `decoder` (a
    `StaticDecoder`) replaces the dynamic cache."""

    def __init__(self, model, device: str, decoder: StaticDecoder | None = None, eos_token_id: int | None = None):
        super().__init__(model, eos_token_id=eos_token_id)
        self.device, self.decoder = device, decoder
        self._tokens_in_cache = 0

    def add(self, request_id: str, prompt_ids: list[int], max_new_tokens: int) -> None:
        if self.decoder is not None and len(prompt_ids) + max_new_tokens > self.decoder.max_len:
            raise ValueError(f"request {request_id!r}: prompt ({len(prompt_ids)}) + max_new_tokens ({max_new_tokens}) "
                             f"exceeds the static cache's {self.decoder.max_len} tokens; build it longer")
        super().add(request_id, prompt_ids, max_new_tokens)

    def kv_bytes(self) -> KvBytes:
        """Counted in Python (reading the cache's length would synchronise the device every step);
        a static cache reserves its whole length."""
        used = self._tokens_in_cache * self._bytes_per_token
        static = self.decoder is not None and self._current is not None
        reserved = self.decoder.max_len * self._bytes_per_token if static else used
        return KvBytes(reserved=reserved, used=used)

    def _prefill(self, request) -> Any:
        import torch

        self._current, self._generated = request, []
        self._tokens_in_cache = len(request.prompt_ids)
        with torch.inference_mode():
            if self.decoder is not None:
                return self._emit(self.decoder.prefill(request.prompt_ids))
            from transformers import DynamicCache

            self._cache = DynamicCache()
            ids = torch.tensor([request.prompt_ids], dtype=torch.long, device=self.device)
            out = self.model(input_ids=ids, past_key_values=self._cache, use_cache=True)
            return self._emit(int(out.logits[0, -1].argmax()))

    def _decode(self) -> Any:
        import torch

        position = self._tokens_in_cache
        self._tokens_in_cache += 1
        with torch.inference_mode():
            if self.decoder is not None:
                return self._emit(self.decoder.decode(self._generated[-1], position))
            ids = torch.tensor([[self._generated[-1]]], dtype=torch.long, device=self.device)
            out = self.model(input_ids=ids, past_key_values=self._cache, use_cache=True)
            return self._emit(int(out.logits[0, -1].argmax()))

    def _emit(self, token: int):
        event = super()._emit(token)
        if event.finished:
            self._tokens_in_cache = 0
        return event


def device_perplexity(model, windows: list[np.ndarray], device: str, batch_size: int = 16) -> float:
    """`models.language.perplexity` on `device`: exp(total NLL / predicted tokens), windows of equal
    length batched together, logits in fp32 whatever the weights' precision."""
    import torch

    total, count = 0.0, 0
    by_length: dict[int, list[np.ndarray]] = {}
    for window in windows:
        by_length.setdefault(len(window), []).append(np.asarray(window, dtype=np.int64))
    with torch.inference_mode():
        for group in by_length.values():
            for start in range(0, len(group), batch_size):
                ids = torch.from_numpy(np.stack(group[start:start + batch_size])).to(device)
                logits = model(input_ids=ids).logits[:, :-1].float()
                nll = torch.nn.functional.cross_entropy(logits.transpose(1, 2), ids[:, 1:], reduction="sum")
                total += float(nll)
                count += int(ids[:, 1:].numel())
    return math.exp(total / count)


def decode_step(engine_model, device: str, decoder: StaticDecoder | None, context: int = 64,
                budget_s: float = 1.0) -> dict[str, Any]:
    """One decode step at `context` cached tokens, timed with `time_calls` and a device sync (warm-up
    runs until the latency settles, so the clocks have ramped): p50 and p99 ms, warm-up calls. A
    static decoder is compiled (and its CUDA graphs recorded) by three calls before the timing."""
    import torch
    from transformers import DynamicCache

    from optlab.instruments.timing import summarize, time_calls

    prompt = list(range(1, context + 1))
    sync = torch.cuda.synchronize if device.startswith("cuda") else None
    with torch.inference_mode():
        if decoder is not None:
            decoder.prefill(prompt)
            for _ in range(3):  # compile, then (CUDA graphs) a warm-up run and the recording, before the timing
                decoder.decode(7, context)

            def step(_batch):
                return decoder.decode(7, context)
        else:
            cache = DynamicCache()
            engine_model(input_ids=torch.tensor([prompt], device=device), past_key_values=cache, use_cache=True)
            token = torch.tensor([[7]], device=device)

            def step(_batch):
                out = engine_model(input_ids=token, past_key_values=cache, use_cache=True)
                cache.crop(context)  # the same cache length every call
                return int(out.logits[0, -1].argmax())
        run = time_calls(step, [None], warmup=10, min_samples=50, budget_s=budget_s, sync=sync, warmup_max_s=10.0)
    stats = summarize(run.samples_ns)
    return {"decode_step_p50_ms": stats.p50_ms, "decode_step_p99_ms": stats.p99_ms, "warmup_calls": run.warmup,
            "warmup_settled": run.warmup_settled}


def weights_mb(model) -> float:
    """Bytes of the model's parameters and buffers (tied weights once), in MB."""
    seen, total = set(), 0
    for tensor in [*model.parameters(), *model.buffers()]:
        if tensor.data_ptr() in seen:
            continue
        seen.add(tensor.data_ptr())
        total += tensor.numel() * tensor.element_size()
    return total / 1e6


def cudagraph_skips() -> int | None:
    """How many compiled graphs Inductor ran without CUDA graphs so far (its counter; None if unreadable)."""
    try:
        from torch._dynamo.utils import counters

        return int(counters["inductor"]["cudagraph_skips"])
    except (ImportError, KeyError, TypeError):
        return None

