"""Generation: language models served token by token (engines, schedulers, KV-cache mechanisms).

Every engine implements `engine.Engine` (`add`, `step`, `has_work`, `kv_bytes`) and is proven, in
tests/generation, to return for every request exactly the tokens greedy decoding of it alone returns:

- `engine.SequentialEngine(model, eos_token_id=None)`: one request at a time, KV cache (the baseline);
- `batching.StaticBatchEngine(model, max_batch=8, kv_budget_bytes=None, eos_token_id=None)`;
- `batching.ContinuousBatchEngine(model, max_batch=8, prefill_chunk=None, kv_budget_bytes=None,
  reserve_tokens=None, eos_token_id=None)`: contiguous KV reserved at each request's maximum length;
- `paged.PagedEngine(model, kv_budget_bytes, block_size=16, max_batch=8, prefill_chunk=None,
  eos_token_id=None)`: continuous batching over a block pool, preemption by recompute;
- `speculative.SpeculativeEngine(target, draft, k=4, eos_token_id=None)`: one request at a time.

`label_scoring.LabelScorer` classifies with a language model (each label's words scored after the text),
and `mixed` builds the agency's mixed trace (classification + generation) and its two deployments, one LM
for everything or a router (`serving.routing`) to a small classifier and the LM.

`decode.forward_rows` is the batched incremental step they share; `kv_cache` measures cache vs
recomputation; `paged.reservation_report` compares KV memory on a trace. Nothing is imported here
eagerly: torch and transformers load only when an engine module is used.
"""
