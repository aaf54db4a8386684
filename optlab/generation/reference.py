"""A reference engine from the pinned stack: transformers' own continuous batching with a paged KV cache.

`transformers` ships a continuous-batching manager (`model.init_continuous_batching`, behind
`model.generate_batch`): a background thread runs a FIFO scheduler over a `PagedAttentionCache`
(a block pool allocated once), admitting requests at token boundaries. `TransformersEngine` wraps it
in the `Engine` shape (`add`, `step`, `has_work`, `kv_bytes`) so the generation server can drive it
on the same trace as optlab's schedulers: `add` queues a request with the manager, `step` collects
the tokens its thread has streamed since the last call (waiting a little for at least one). The
server timestamps tokens when they reach it, the client's view, as for every other engine.

Two things differ from optlab's engines and are said where figures are shown: the manager runs its
own thread (it steps whether or not the server calls), and its KV pool is reserved in full up front.

On a CPU-only machine transformers 4.57's cache sizing asks the GPU how much memory is free and fails
(`total` is None); while the manager builds its cache this module answers with the host's available
memory (psutil), then restores transformers' own function.
"""
from __future__ import annotations

import copy
import queue
import threading
import time
from contextlib import contextmanager

from optlab.generation.engine import KvBytes, TokenEvent, kv_bytes_per_token, make_request

_PATCH_LOCK = threading.Lock()


@contextmanager
def _host_memory_on_cpu():
    """transformers' paged cache sizes itself from device memory; on CPU report the host's (see module doc)."""
    import psutil  # lazy: only this engine needs it
    import torch  # lazy: heavy
    from transformers.generation.continuous_batching import cache as cb_cache  # lazy: heavy

    original = cb_cache.get_device_and_memory_breakdown
    if torch.cuda.is_available():
        yield
        return
    with _PATCH_LOCK:
        cb_cache.get_device_and_memory_breakdown = lambda: (torch.device("cpu"), psutil.virtual_memory().available,
                                                            0, 0)
        try:
            yield
        finally:
            cb_cache.get_device_and_memory_breakdown = original


class TransformersEngine:
    """transformers' continuous batching (paged cache, FIFO scheduler, greedy) as an `Engine`.

    `model` is a causal LM; it is copied (the manager needs the `sdpa_paged` attention, which would
    change the caller's model). `block_size` tokens per KV block, `num_blocks` in the pool,
    `max_batch_tokens` per scheduler step.
    """

    def __init__(self, model, *, block_size: int = 16, num_blocks: int = 256, max_batch_tokens: int = 256,
                 wait_s: float = 0.002):
        from transformers import GenerationConfig  # lazy: heavy

        self.model = copy.deepcopy(model).eval()
        self.model.set_attn_implementation("sdpa_paged")
        self.config = GenerationConfig(do_sample=False, eos_token_id=-1, block_size=block_size, num_blocks=num_blocks,
                                       max_batch_tokens=max_batch_tokens, max_new_tokens=16)
        self.block_size, self.num_blocks, self.wait_s = block_size, num_blocks, wait_s
        self._bytes_per_token = kv_bytes_per_token(model)
        self._manager = None
        self._known: set[str] = set()
        self._requests: dict[str, object] = {}
        self._emitted: dict[str, int] = {}

    def _start(self) -> None:
        manager = self.model.init_continuous_batching(generation_config=self.config, streaming=True)
        with _host_memory_on_cpu():
            manager.start()
            deadline = time.monotonic() + 60
            while manager.batch_processor is None and manager.is_running() and time.monotonic() < deadline:
                time.sleep(0.001)
        if manager.batch_processor is None:
            manager.stop(block=True, timeout=5.0)
            raise RuntimeError("transformers' continuous batching did not start (see its log above)")
        self._manager = manager

    def add(self, request_id: str, prompt_ids: list[int], max_new_tokens: int) -> None:
        request = make_request(self.model, request_id, prompt_ids, max_new_tokens, self._known)
        if self._manager is None:
            self._start()
        self._known.add(request_id)
        self._requests[request_id] = request
        self._emitted[request_id] = 0
        self._manager.add_request(list(request.prompt_ids), request_id=request_id,
                                  max_new_tokens=request.max_new_tokens)

    def has_work(self) -> bool:
        return bool(self._requests)

    def step(self) -> list[TokenEvent]:
        """The tokens streamed since the last call (waits up to `wait_s` for the first of them)."""
        events: list[TokenEvent] = []
        if self._manager is None:
            return events
        timeout = self.wait_s
        while True:
            try:
                output = self._manager.output_queue.get(block=timeout > 0, timeout=timeout or None)
            except queue.Empty:
                break
            timeout = 0
            events += self._new_tokens(output)
        if not self._manager.is_running() and self._requests:
            raise RuntimeError("transformers' continuous batching thread stopped with requests in flight")
        return events

    def _new_tokens(self, output) -> list[TokenEvent]:
        request = self._requests.get(output.request_id)
        if request is None:  # a repeat of a finished request's last message
            return []
        if output.error:
            raise RuntimeError(f"transformers' continuous batching failed request {output.request_id!r}: "
                               f"{output.error}")
        tokens = list(output.generated_tokens)[: request.max_new_tokens]
        start = self._emitted[output.request_id]
        events = []
        for i in range(start, len(tokens)):
            last = i + 1 == request.max_new_tokens
            events.append(TokenEvent(output.request_id, int(tokens[i]), last))
            if last:
                del self._requests[output.request_id]
        self._emitted[output.request_id] = len(tokens)
        return events

    def kv_bytes(self) -> KvBytes:
        """The block pool is reserved whole once started; used: the tokens of requests in flight."""
        if self._manager is None:
            return KvBytes(0, 0)
        reserved = self.num_blocks * self.block_size * self._bytes_per_token
        tokens = sum(len(r.prompt_ids) + self._emitted[rid] for rid, r in self._requests.items())
        return KvBytes(reserved, min(reserved, tokens * self._bytes_per_token))

    def close(self) -> None:
        """Stop the manager's thread (the server does not own it)."""
        if self._manager is not None:
            self._manager.stop(block=True, timeout=5.0)
            self._manager = None

    def __enter__(self) -> TransformersEngine:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self):
        # the manager's thread is not a daemon: an engine dropped without close() would keep the process alive
        try:
            self.close()
        except (RuntimeError, AttributeError):  # interpreter shutdown: nothing left to stop cleanly
            pass
