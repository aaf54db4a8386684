"""A mixed trace and the two deployments of the agency's case: one language model for every request,
or a router that sends classification to a small classifier and generation to the language model.

    requests = mixed_trace(intents, scorer, MixSpec(requests=200, classify_share=0.8))
    one_lm = one_model(lm, scorer)              # classification by the LM (label words scored) + generation
    routed = routed(lm, classifier)              # classification by the small classifier + generation

Each request is a `serving.routing.MixedRequest` carrying every form a route may read: a classification
request has the classifier's token ids ("classifier": the intents split's own `input_ids` and
`attention_mask`, cut to the text's length), the language model's ("lm": `LabelScorer.encode` of the
same text) and its label; a generation request has a `TraceRequest` ("generation"). Both deployments
give the classification route one worker thread and the generation route one loop thread (two cores);
each route's model calls are timed by a `BusyClock` (`clocks`), for cost per request by route.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from optlab.data.datasets import trim_padding
from optlab.generation.label_scoring import LabelScorer
from optlab.generation.service import GenerationService
from optlab.generation.trace import PromptSource, TraceRequest, TraceSpec, random_prompts
from optlab.serving.policies import DynamicBatching, Policy
from optlab.serving.routing import BusyClock, KindRouter, MixedRequest, Route
from optlab.serving.server import Server

CLASSIFY, GENERATE = "classify", "generate"
POLICY = DynamicBatching(max_batch=8, max_wait_ms=2.0)  # the classification route's batching, both ways


@dataclass(frozen=True)
class MixSpec:
    """The trace: how many requests, the share that are classification, generation prompt and output
    lengths (token ranges, inclusive) and the seed."""

    requests: int = 200
    classify_share: float = 0.8
    prompt_tokens: tuple[int, int] = (16, 32)
    output_tokens: tuple[int, int] = (8, 16)
    seed: int = 0

    def __post_init__(self):
        if self.requests < 1 or not 0 <= self.classify_share <= 1:
            raise ValueError(f"MixSpec needs requests >= 1 and classify_share in [0, 1], got {self.requests} and "
                             f"{self.classify_share}")


def mixed_trace(data: Any, scorer: LabelScorer, spec: MixSpec = MixSpec(),
                prompts: PromptSource = random_prompts) -> list[MixedRequest]:
    """`spec.requests` requests in a seeded random order: classification ones from `data`'s test split
    (the intents dataset: its texts in `meta['texts']`), generation ones from `prompts`."""
    texts = data.meta.get("texts", {}).get("test") if isinstance(data.meta, dict) else None
    if texts is None:
        raise ValueError(f"mixed_trace needs a text dataset whose meta holds its texts (intents); got {data.name!r}")
    rng = np.random.default_rng(spec.seed)
    kinds = rng.random(spec.requests) < spec.classify_share
    rows = rng.choice(len(data.test), size=int(kinds.sum()), replace=int(kinds.sum()) > len(data.test))
    vocab = int(getattr(scorer.tokenizer, "vocab_size", 2048))
    trace_spec = TraceSpec(rate_per_s=1.0, requests=max(1, int((~kinds).sum())), prompt_tokens=spec.prompt_tokens,
                           output_tokens=spec.output_tokens, vocab_size=vocab, seed=spec.seed)
    drawn = prompts(np.random.default_rng(spec.seed + 1), trace_spec.requests, trace_spec)
    inputs, labels = data.test.inputs, np.asarray(data.test.labels)
    out, c, g = [], 0, 0
    for i, is_classify in enumerate(kinds):
        if is_classify:
            row = int(rows[c])
            c += 1
            classifier = trim_padding({name: np.ascontiguousarray(v[row:row + 1]) for name, v in inputs.items()})
            out.append(MixedRequest(CLASSIFY, {"classifier": classifier, "lm": scorer.encode(str(texts[row]))},
                                    int(labels[row])))
        else:
            ids, tokens = drawn[g]
            g += 1
            out.append(MixedRequest(GENERATE, {"generation": TraceRequest(f"g{i}", 0.0, tuple(ids), int(tokens))}))
    return out


@dataclass
class Deployment:
    """A router over the two routes, and each route's busy clock."""

    name: str
    router: KindRouter
    clocks: dict[str, BusyClock] = field(default_factory=dict)


def _generation(lm_model: Any, clock: BusyClock, max_batch: int) -> GenerationService:
    from optlab.generation.batching import ContinuousBatchEngine  # lazy: torch and transformers

    engine = ContinuousBatchEngine(lm_model, max_batch=max_batch)
    return GenerationService(clock.engine(engine), label=f"continuous(max_batch={max_batch})")


def one_model(lm_model: Any, scorer: LabelScorer, *, policy: Policy = POLICY,
              max_batch: int = 8) -> Deployment:
    """Every request to the language model: classification by its label words, generation by its engine."""
    clocks = {CLASSIFY: BusyClock(), GENERATE: BusyClock()}
    classify = Server(clocks[CLASSIFY].model(scorer.predict), policy, cores=2)
    routes = {CLASSIFY: Route(classify, "lm"), GENERATE: Route(_generation(lm_model, clocks[GENERATE], max_batch),
                                                                "generation")}
    return Deployment("one LM for everything", KindRouter(routes, label="one LM"), clocks)


def routed(lm_model: Any, classifier: Any, *, policy: Policy = POLICY,
           max_batch: int = 8) -> Deployment:
    """Classification to the small `classifier` (a Candidate or predict callable), generation to the LM."""
    clocks = {CLASSIFY: BusyClock(), GENERATE: BusyClock()}
    predict = getattr(classifier, "predict", classifier)
    classify = Server(clocks[CLASSIFY].model(predict), policy, cores=2)
    routes = {CLASSIFY: Route(classify, "classifier"),
              GENERATE: Route(_generation(lm_model, clocks[GENERATE], max_batch), "generation")}
    return Deployment("router: small classifier + LM", KindRouter(routes, label="router"), clocks)
