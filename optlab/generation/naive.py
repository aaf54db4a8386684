"""The naive server every LLM-serving comparison starts from: transformers' `generate`, one request at a
time, fp32, greedy, no batching, its tokens streamed to the client as `generate` makes them.

`GenerateEngine` runs `model.generate(..., streamer=...)` for the request at the head of the queue in a
worker thread (as a naive HTTP handler with a `TextIteratorStreamer` would); `step()` hands over the
tokens streamed since the last call, waiting for at least one. Requests behind the current one wait
for it to finish entirely. `generate` stops at `max_new_tokens` with eos ignored, as optlab's engines
decode, so every engine answers the same trace with the same number of tokens.
"""
from __future__ import annotations

import contextlib
import logging
import queue
import threading
from collections import deque
from typing import Any, Iterator

from optlab.generation.engine import Request, TokenEvent, make_request

_END = object()
_GENERATE_LOGGER = "transformers.generation.utils"


@contextlib.contextmanager
def _quiet(name: str) -> Iterator[None]:
    logger = logging.getLogger(name)
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


class _QueueStreamer:
    """transformers' streamer protocol (`put` the prompt, then each new token; `end`) into a queue."""

    def __init__(self, out: queue.Queue):
        self.out, self.prompt_seen = out, False

    def put(self, value) -> None:
        if not self.prompt_seen:  # generate's first put is the prompt itself
            self.prompt_seen = True
            return
        for token in value.reshape(-1).tolist():
            self.out.put(int(token))

    def end(self) -> None:
        self.out.put(_END)


class GenerateEngine:
    """transformers' `generate` one request at a time (see the module's docstring); `wait_s` bounds how
    long `step()` waits for a token before returning none."""

    def __init__(self, model: Any, *, wait_s: float = 1.0):
        self.model, self.wait_s = model, wait_s
        self._queue: deque[Request] = deque()
        self._known: set[str] = set()
        self._current: Request | None = None
        self._emitted = 0
        self._tokens: queue.Queue = queue.Queue()
        self._thread: threading.Thread | None = None
        self._failure: list[BaseException] = []

    def add(self, request_id: str, prompt_ids: list[int], max_new_tokens: int) -> None:
        self._queue.append(make_request(self.model, request_id, prompt_ids, max_new_tokens, self._known))
        self._known.add(request_id)

    def has_work(self) -> bool:
        return self._current is not None or bool(self._queue)

    def _start(self, request: Request) -> None:
        import torch  # lazy: heavy

        prompt = torch.tensor([request.prompt_ids])

        def run() -> None:
            try:
                # eos_token_id=-1 matches no token (None falls back to the model's own eos); transformers
                # warns that it is not a positive id, which is the point: that line is kept quiet
                with torch.inference_mode(), _quiet(_GENERATE_LOGGER):
                    self.model.generate(prompt, attention_mask=torch.ones_like(prompt), do_sample=False,
                                        max_new_tokens=request.max_new_tokens, eos_token_id=-1, pad_token_id=0,
                                        streamer=_QueueStreamer(self._tokens))
            except BaseException as error:  # noqa: BLE001 - re-raised by step() on the server's thread
                self._failure.append(error)
                self._tokens.put(_END)

        self._current, self._emitted = request, 0
        self._thread = threading.Thread(target=run, name="optlab-generate", daemon=True)
        self._thread.start()

    def step(self) -> list[TokenEvent]:
        if self._current is None:
            if not self._queue:
                return []
            self._start(self._queue.popleft())
        request, events, timeout = self._current, [], self.wait_s
        while True:
            try:
                item = self._tokens.get(timeout=timeout) if timeout else self._tokens.get_nowait()
            except queue.Empty:
                break
            timeout = 0
            if item is _END:
                self._thread.join()
                self._current = None
                if self._failure:
                    raise RuntimeError(f"generate failed on request {request.request_id!r}: {self._failure.pop()}")
                if self._emitted < request.max_new_tokens:  # ended early: its last token was not marked
                    raise RuntimeError(f"generate stopped request {request.request_id!r} after {self._emitted} of "
                                       f"{request.max_new_tokens} tokens")
                break
            self._emitted += 1
            events.append(TokenEvent(request.request_id, item, self._emitted == request.max_new_tokens))
        return events
