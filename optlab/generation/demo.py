"""The language-model notebook's and bench's measurements that are not a server run: the models to use,
why decode is memory-bound (a decode step's time barely grows with the batch) and what the KV cache
saves (time per token against position, cached vs recomputed).

`models` returns the zoo's trained target and draft when `optlab.models.zoo` offers them, else seeded
random models of the same shapes: timings do not depend on the weights (speculation's acceptance does,
and says so where it is shown).
"""
from __future__ import annotations

import importlib
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from optlab.generation.trace import PromptSource, random_prompts

SHAPES = {"target": (4, 256, 4, 688), "draft": (1, 128, 2, 344)}  # layers, hidden, heads, intermediate
SMOKE_SHAPES = {"target": (2, 32, 4, 64), "draft": (1, 32, 4, 64)}
ENGINES = {  # name -> (module, class): resolved on use, so an engine missing from a checkout says so
    "sequential": ("optlab.generation.engine", "SequentialEngine"),
    "static": ("optlab.generation.batching", "StaticBatchEngine"),
    "continuous": ("optlab.generation.batching", "ContinuousBatchEngine"),
    "paged": ("optlab.generation.paged", "PagedEngine"),
    "speculative": ("optlab.generation.speculative", "SpeculativeEngine"),
    "transformers": ("optlab.generation.reference", "TransformersEngine"),
    "openvino": ("optlab.generation.openvino_engine", "OpenVINOEngine"),
    "openvino-speculative": ("optlab.generation.openvino_engine", "OpenVINOSpeculativeEngine"),
    "openvino-single": ("optlab.generation.openvino_pipeline", "OpenVINOSingleEngine"),
    "generate": ("optlab.generation.naive", "GenerateEngine"),
}


@dataclass(frozen=True)
class ModelPair:
    target: Any
    draft: Any
    origin: str  # where they came from, in words
    tokenizer: Any = None  # the trained pair's tokenizer (None for stand-ins)

    def prompts(self) -> PromptSource:
        """The trace's prompt source: windows of the test topics through the tokenizer for the trained
        pair, seeded random token ids for stand-ins."""
        if self.tokenizer is None:
            return random_prompts
        from optlab.models import language  # lazy: imports the tokenizer library

        return language.trace_prompts(self.tokenizer)


def engine_class(name: str) -> type | None:
    """The engine class registered as `name`, or None when this checkout does not have it."""
    if name not in ENGINES:
        raise ValueError(f"unknown engine {name!r}; choose one of {', '.join(ENGINES)}")
    module, cls = ENGINES[name]
    try:
        return getattr(importlib.import_module(module), cls)
    except (ImportError, AttributeError):
        return None


def make_engine(name: str, pair: ModelPair, **options: Any):
    """A fresh engine `name` over the pair's target with the defaults a comparison needs: batching
    engines hold up to 8 sequences; paged gets the KV budget of 8 sequences at the model's full
    context (what contiguous reservation at the context needs); the speculative ones (optlab's and
    OpenVINO GenAI's) get the draft. None when this checkout lacks the engine."""
    cls = engine_class(name)
    if cls is None:
        return None
    if name == "paged" and "kv_budget_bytes" not in options:
        from optlab.generation.engine import kv_bytes_per_token  # lazy: imports torch

        context = pair.target.config.max_position_embeddings
        options["kv_budget_bytes"] = 8 * context * kv_bytes_per_token(pair.target)
    if name in ("speculative", "openvino-speculative"):
        return cls(pair.target, pair.draft, **options)
    return cls(pair.target, **options)


def missing_engine(name: str) -> str:
    return f"not available: {'.'.join(ENGINES[name])} is not in this checkout"


def models(smoke: bool = False, vocab_size: int = 2048) -> ModelPair:
    """The target and draft: the zoo's trained pair when it has one, else seeded random models of their
    shapes. Smoke always uses tiny seeded models of the test shape: training even the smoke pair takes
    a minute on a busy 2-core machine, more than a smoke run's whole budget."""
    zoo = importlib.import_module("optlab.models.zoo")
    loader = getattr(zoo, "language_models", None)
    if callable(loader) and not smoke:
        pair = loader(smoke=False)
        return ModelPair(pair.target.eval(), pair.draft.eval(), "the zoo's trained target and draft",
                         pair.tokenizer)
    import torch  # lazy: heavy

    from optlab.models.runtimes import quiet_torch_logs

    with quiet_torch_logs():  # transformers' first import loads torchao, which logs what it cannot load
        from transformers import LlamaConfig, LlamaForCausalLM  # lazy: heavy

    built = []
    for seed, (layers, hidden, heads, inter) in enumerate((SMOKE_SHAPES if smoke else SHAPES).values()):
        torch.manual_seed(seed)
        config = LlamaConfig(vocab_size=96 if smoke else vocab_size, hidden_size=hidden, intermediate_size=inter,
                             num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=heads,
                             max_position_embeddings=1024, tie_word_embeddings=True, attn_implementation="sdpa")
        built.append(LlamaForCausalLM(config).eval())
    return ModelPair(built[0], built[1], "seeded random models of the target's and draft's shapes")


def _median_ms(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1e3 * float(np.median(times))


def decode_step_ms(model, batch_sizes=(1, 2, 4, 8, 16), context: int = 64, repeats: int = 5) -> pd.DataFrame:
    """One decode step (one new token per row over a cache of `context` tokens) per batch size: its time
    and the time per row. Flat time as the batch grows means the step is bound by reading the weights
    and cache (memory), not by arithmetic: batching is nearly free."""
    import torch  # lazy: heavy
    from transformers import DynamicCache  # lazy: heavy

    rows = []
    vocab = model.config.vocab_size
    for batch in batch_sizes:
        gen = torch.Generator().manual_seed(batch)
        with torch.inference_mode():
            cache = DynamicCache()
            model(input_ids=torch.randint(1, vocab, (batch, context), generator=gen), past_key_values=cache,
                  use_cache=True)
            token = torch.randint(1, vocab, (batch, 1), generator=gen)

            def step(cache=cache, token=token):
                model(input_ids=token, past_key_values=cache, use_cache=True)
                cache.crop(context)  # the same cache length every repeat
            step()
            ms = _median_ms(step, repeats)
        rows.append({"batch": batch, "step_ms": ms, "ms_per_row": ms / batch})
    return pd.DataFrame(rows)


def per_position_ms(model, new_tokens: int = 256, prompt_tokens: int = 16, every: int = 16) -> pd.DataFrame:
    """Time to produce the token at each position, greedy, with the KV cache (one new token per step) and
    without (the whole sequence recomputed every step), measured every `every` positions."""
    import torch  # lazy: heavy
    from transformers import DynamicCache  # lazy: heavy

    ids = torch.randint(1, model.config.vocab_size, (1, prompt_tokens), generator=torch.Generator().manual_seed(0))
    rows = []
    with torch.inference_mode():
        cache = DynamicCache()
        out = model(input_ids=ids, past_key_values=cache, use_cache=True)
        for i in range(new_tokens):
            token = out.logits[:, -1:].argmax(-1)
            measure = i % every == 0 or i == new_tokens - 1
            if measure:
                start = time.perf_counter()
                model(input_ids=torch.cat([ids, token], dim=1), use_cache=False)
                recompute = time.perf_counter() - start
                start = time.perf_counter()
            out = model(input_ids=token, past_key_values=cache, use_cache=True)
            if measure:
                cached = time.perf_counter() - start
                rows.append({"position": ids.shape[1], "cached_ms": 1e3 * cached, "recompute_ms": 1e3 * recompute})
            ids = torch.cat([ids, token], dim=1)
    frame = pd.DataFrame(rows)
    frame["speedup"] = frame["recompute_ms"] / frame["cached_ms"]
    return frame
