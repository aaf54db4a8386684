"""OpenVINO GenAI's `LLMPipeline`, one request at a time, as an `Engine`.

`LLMPipeline.generate` is what most OpenVINO GenAI users call to run a language model on a CPU: one
request, greedy here, its KV cache in the model's own state (`attention="SDPA"`, the stateful path, the
default without a draft) or in GenAI's paged pool (`attention="PA"`, the one speculative decoding runs
on here). It blocks until the answer is complete and hands each new token to a *streamer* as it is
produced. Served behind optlab's generation server it is the naive deployment of a real engine:
requests queue first come first served and each waits for every one before it to finish, as
`SequentialEngine` does with torch.

How it maps onto `step()`. The engine calls `generate` on a worker thread of its own, one request at
a time, with a streamer that hands each write (the token ids produced since the last one) to `step()`
and then waits until the next `step()` lets it go on (lockstep):

- a step that starts a request calls `generate` and returns the streamer's first write: the prefill's
  token (after the previous request's `generate` has returned);
- every later step lets the streamer return and returns its next write: one decode step, or with a
  draft (`draft=`/`draft_folder=`, GenAI's speculative decoding, k drafted tokens per round) one
  verification round, up to k + 1 tokens at once.

With `attention="SDPA"` the streamer runs on the generating thread, so between two steps the pipeline
waits, as optlab's own engines do nothing between steps, and the server's timestamp after `step()` is
the token's time plus the hand-off. With `attention="PA"` GenAI calls the streamer from a thread of its
own: the pipeline may compute ahead of the steps, and a step still returns one write's tokens.

Token ids go in (an `ov.Tensor` of input ids) and come out as they are; after its `generate` returns a
request's own timings (GenAI's `PerfMetrics`) are kept: `genai_figures(id)`.
"""
from __future__ import annotations

import os
import queue
import threading
from collections import deque
from pathlib import Path
from typing import Any

import numpy as np

from optlab.generation import openvino_engine as ove
from optlab.generation.engine import Request, TokenEvent, make_request
from optlab.generation.openvino_draft import check_draft, tokenized
from optlab.generation.openvino_metrics import GenAIFigures, figures_from, monotonic_ms
from optlab.models import signal_stack

ATTENTION = ("SDPA", "PA")


def check_attention(attention: str | None, speculative: bool) -> str:
    """The LLMPipeline backend: "SDPA" by default, "PA" with a draft (this GenAI runs speculative decoding in
    LLMPipeline on the paged backend only: with SDPA it refuses, outside NPUs, every pair but Gemma 4's)."""
    chosen = attention or ("PA" if speculative else "SDPA")
    if chosen not in ATTENTION:
        raise ValueError(f"unknown attention {attention!r} for LLMPipeline; use one of {', '.join(ATTENTION)}")
    if speculative and chosen == "SDPA":
        raise ValueError("speculative decoding in LLMPipeline needs attention='PA' on a CPU (OpenVINO GenAI refuses "
                         "SDPA with a draft); pass attention='PA' or leave it unset")
    return chosen


def _lockstep_streamer(genai: Any, engine: "OpenVINOSingleEngine", asked: int) -> Any:
    """A GenAI streamer that hands each write to `engine.step()` and waits for the next step (or a close);
    the write that completes the `asked` tokens does not wait (generate may return while the server goes
    on), and anything written after it is dropped (never a write that no step would let go on)."""

    class Lockstep(genai.StreamerBase):
        def __init__(self):
            super().__init__()
            self.delivered = 0
            self.first_ms: float | None = None  # when the first write came (GenAI's clock, ms)

        def write(self, token):
            if self.first_ms is None:
                self.first_ms = monotonic_ms()
            if self.delivered >= asked:
                return genai.StreamingStatus.STOP
            tokens = [int(token)] if isinstance(token, int) else [int(t) for t in token]
            self.delivered += len(tokens)
            engine._out.put(("tokens", tokens))
            if self.delivered < asked:
                engine._go.acquire()
            return genai.StreamingStatus.CANCEL if engine._closed else genai.StreamingStatus.RUNNING

        def end(self):
            return None

    return Lockstep()


class OpenVINOSingleEngine:
    """`LLMPipeline` one request at a time over `model` (a torch causal LM, exported on first use) or an IR
    `folder`; `weights`, `threads` and `precision` as for `OpenVINOEngine`, `attention` "SDPA" (stateful, the
    default) or "PA" (paged, the default and the only choice with a draft); `draft` or `draft_folder` with `k`
    makes it speculative (see the module's docstring).
    Call `close()` to stop a request in flight (the generation server's probes do)."""

    def __init__(self, model: Any = None, *, folder: str | os.PathLike | None = None, weights: str = "fp32",
                 threads: int = 1, precision: str = "f32", attention: str | None = None, draft: Any = None,
                 draft_folder: str | os.PathLike | None = None, k: int = 4):
        import openvino as ov  # lazy: heavy
        import openvino_genai as genai

        self.k = check_draft(draft, draft_folder, k)
        attention = check_attention(attention, speculative=self.k is not None)
        self.folder: Path = ove.resolve_folder(model, folder, weights)
        device = ove.device_properties(threads, precision)
        speculative = ove.speculative_properties(draft, draft_folder, weights, device)
        folder_ = tokenized(self.folder) if speculative else self.folder  # GenAI checks both tokenizers
        with signal_stack.kept():  # its CPU plugin swaps the thread's signal stack (models.signal_stack)
            self.pipeline = genai.LLMPipeline(str(folder_), "CPU", ATTENTION_BACKEND=attention, **device,
                                              **speculative)
        self.model, self.weights, self.attention = model, weights, attention
        self._ov, self._genai = ov, genai
        self._queue: deque[Request] = deque()
        self._known: set[str] = set()
        self._figures: dict[str, GenAIFigures] = {}
        self._out: queue.Queue = queue.Queue()  # the worker's writes: ("tokens", ids), ("end", None), ("error", e)
        self._go = threading.Semaphore(0)  # one release lets the waiting streamer return
        self._worker: threading.Thread | None = None
        self._inbox: queue.Queue = queue.Queue()  # requests for the worker; None stops it
        self._idle = threading.Event()  # set while no generate runs
        self._idle.set()
        self._current: Request | None = None
        self._emitted = 0
        self._closed = False

    def add(self, request_id: str, prompt_ids: list[int], max_new_tokens: int) -> None:
        """Queue a request; it starts once every request before it has finished."""
        if self._closed:
            raise ValueError("this engine was closed; make a new OpenVINOSingleEngine")
        self._queue.append(make_request(self.model, request_id, prompt_ids, max_new_tokens, self._known))
        self._known.add(request_id)

    def has_work(self) -> bool:
        return self._current is not None or bool(self._queue)

    def step(self) -> list[TokenEvent]:
        """Start the next request and return its first token, or let the current one produce its next write."""
        if self._current is None:
            if not self._queue:
                return []
            self._start(self._queue.popleft())
        else:
            self._go.release()
        kind, payload = self._out.get()
        request = self._current
        if kind != "tokens":  # generate returned early or failed: the request is left unanswered (not completed)
            self._current = None
            self._join()
            if kind == "error":
                raise RuntimeError(f"LLMPipeline.generate failed on request {request.request_id!r}: "
                                   f"{payload}") from payload
            return []
        tokens = payload[: request.max_new_tokens - self._emitted]
        self._emitted += len(tokens)
        finished = self._emitted >= request.max_new_tokens
        if finished:  # its streamer did not wait: generate returns (its PerfMetrics read on the worker) meanwhile
            self._current = None
        return [TokenEvent(request.request_id, token, finished and i == len(tokens) - 1)
                for i, token in enumerate(tokens)]

    def genai_figures(self, request_id: str) -> GenAIFigures | None:
        """GenAI's own TTFT and TPOT of a finished request (None while it runs or if it never finished)."""
        if self._current is None:
            self._join()  # the last request's generate may still be returning
        return self._figures.get(request_id)

    def close(self) -> None:
        """Cancel the request in flight (its streamer returns CANCEL), drop the queue, stop the worker."""
        self._closed = True
        self._queue.clear()
        self._current = None
        self._go.release()
        if self._worker is not None:
            self._inbox.put(None)
            self._worker.join()
            self._worker = None

    def _start(self, request: Request) -> None:
        """Hand `request` to the worker thread (started on the first request, kept for the next ones)."""
        self._idle.wait()  # the previous request's generate has returned
        self._current, self._emitted = request, 0
        if self._worker is None:
            self._worker = threading.Thread(target=self._serve, daemon=True, name="optlab-llmpipeline")
            self._worker.start()
        self._idle.clear()
        self._inbox.put(request)

    def _serve(self) -> None:
        """The worker: one blocking `generate` per request handed over, until `close()` hands it None."""
        while (request := self._inbox.get()) is not None:
            try:
                self._generate(request)
            finally:
                self._idle.set()

    def _generate(self, request: Request) -> None:
        """The worker: one blocking `generate`; its PerfMetrics kept, an early end or a failure reported."""
        streamer = _lockstep_streamer(self._genai, self, request.max_new_tokens)
        ids = self._ov.Tensor(np.asarray([request.prompt_ids], dtype=np.int64))
        config = ove.greedy_config(self._genai, request.max_new_tokens, self.k)
        handed_ms = monotonic_ms()  # the last moment before GenAI has the request
        try:
            result = self.pipeline.generate(ids, config, streamer)
        except Exception as error:  # noqa: BLE001 - handed to step(), which raises it on the server's thread
            if streamer.delivered < request.max_new_tokens and not self._closed:
                self._out.put(("error", error))
            return
        if streamer.delivered >= request.max_new_tokens:  # a complete answer: its figures are kept
            self._figures[request.request_id] = figures_from(result.perf_metrics, streamer.first_ms, handed_ms)
        elif not self._closed:
            self._out.put(("end", None))

    def _join(self) -> None:
        """Wait until no generate is running (the worker is idle)."""
        self._idle.wait()
