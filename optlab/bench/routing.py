"""The routing section of `python -m optlab.bench cascade`: the agency's case on a mixed trace.

A mixed trace of short classification requests (the intents test split's ads) and generation requests
(prompts from the language model's test topics) is offered, open loop from the load generator's own
process, at one rate to two deployments in interleaved rounds:

- one LM for everything: classification by the language model (each intent's words scored after the
  ad, `generation.label_scoring`), generation by its continuous-batching engine;
- router: classification to the zoo's small intents classifier (the distilled-size student, torch eager),
  generation to the same language model and engine.

Both give classification one worker thread and generation one loop thread. Per route: requests, p50/p99
latency from each request's scheduled send (TTFT too for generation), the model's busy time per request
(the time inside its calls, on one thread) and cost per 1M requests from it: a 2-vCPU machine's price per
core-second x busy time, at the 70% utilisation every sizing in optlab uses. Classification accuracy on
the test labels is printed beside it: the language model was trained on Python's help topics, never on
these intents, so its accuracy is near chance; the cost and latency of asking it are the point.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from optlab.bench.render import Col, Layout, Renderer, target
from optlab.cases.rtb.campaign import PRICE_PER_HOUR_USD
from optlab.data.datasets import load
from optlab.generation.label_scoring import LabelScorer
from optlab.generation.mixed import CLASSIFY, GENERATE, MixSpec, mixed_trace, one_model, routed
from optlab.models import language, zoo
from optlab.serving import loadgen
from optlab.serving.capacity import TARGET_UTILISATION
from optlab.serving.rounds import Spread
from optlab.serving.schedules import Poisson

COMMAND = "python -m optlab.bench cascade"
CORES_PER_MACHINE = 2  # the price is a 2-vCPU machine's
NOISY_SPREAD = 0.2
SETTINGS = {True: dict(requests=60, rounds=1), False: dict(requests=240, rounds=3)}
ONE_LM, ROUTER = "one LM for everything", "router: small classifier + LM"


def build(smoke: bool) -> dict[str, Any]:
    """The intents data, its small classifier, the language model with its label scorer, and the trace."""
    data = load("intents", smoke=smoke)
    student = zoo.get("intents", "student", smoke=smoke, data=data)
    lm = zoo.language_models(smoke=smoke)
    labels = [name.replace("_", " ") for name in data.meta["classes"]]
    scorer = LabelScorer(lm.target, lm.tokenizer, labels, prompt_tokens=32)
    spec = MixSpec(requests=SETTINGS[smoke]["requests"], classify_share=0.8, prompt_tokens=(16, 32),
                   output_tokens=(8, 16))
    trace = mixed_trace(data, scorer, spec, prompts=language.trace_prompts(lm.tokenizer))
    return {"data": data, "classifier": zoo.baseline(student, name="intents student"), "lm": lm, "scorer": scorer,
            "trace": trace, "spec": spec}


def deployment(name: str, parts: dict[str, Any]):
    if name == ONE_LM:
        return one_model(parts["lm"].target, parts["scorer"])
    return routed(parts["lm"].target, parts["classifier"])


def run_rounds(parts: dict[str, Any], rate_per_s: float, rounds: int) -> pd.DataFrame:
    """One row per round x deployment x route: requests, ok, p50/p99 ms, TTFT p99, busy ms per request."""
    trace, rows = parts["trace"], []
    kinds = np.array([r.kind for r in trace])
    for r in range(rounds):
        for name in (ONE_LM, ROUTER):
            built = deployment(name, parts)
            load = Poisson(rate_per_s, duration_s=len(trace) / rate_per_s)
            result = loadgen.run(built.router, trace, load, seed=r, keys=np.arange(len(trace) * 2), drain_s=30.0)
            frame = result.requests
            frame["kind"] = kinds[frame["key"].to_numpy() % len(trace)]
            for kind in (CLASSIFY, GENERATE):
                part = frame[frame["kind"] == kind]
                ok = part[part["status"] == "ok"]
                latency = ok["latency_ms"].to_numpy()
                busy_ms = built.clocks[kind].busy_ns / 1e6
                rows.append({
                    "round": r, "deployment": name, "route": kind, "requests": len(part), "ok": len(ok),
                    "answered_by_own_route": bool((part.get("stage", pd.Series(dtype=object)) == kind).all()),
                    "p50_ms": _quantile(latency, 0.5), "p99_ms": _quantile(latency, 0.99),
                    "ttft_p99_ms": _quantile(ok["ttft_ms"].to_numpy(), 0.99) if "ttft_ms" in ok else None,
                    "busy_ms_per_request": busy_ms / len(ok) if len(ok) else None,
                    "stopped_early": bool(result.summary["stopped_early"]),
                    "offered_per_s": rate_per_s})
    return pd.DataFrame(rows)


def _positive(value: Any) -> bool:
    """A measured figure: a finite number > 0 (not None, not NaN: a frame turns a None into NaN)."""
    return value is not None and isinstance(value, (int, float)) and math.isfinite(value) and value > 0


def _quantile(values: np.ndarray, q: float) -> float | None:
    values = values[np.isfinite(values)] if len(values) else values
    return float(np.quantile(values, q)) if len(values) else None


def cost_per_1m(busy_ms: float | None) -> float | None:
    """Cost per 1M requests of a route whose model is busy `busy_ms` per request on one core."""
    if busy_ms is None or not busy_ms > 0:
        return None
    per_core_s = PRICE_PER_HOUR_USD / CORES_PER_MACHINE / 3600
    return busy_ms / 1e3 * per_core_s / TARGET_UTILISATION * 1e6


def accuracy(parts: dict[str, Any]) -> dict[str, float]:
    """Test-label accuracy of both classification routes on the trace's classification requests."""
    requests = [r for r in parts["trace"] if r.kind == CLASSIFY]
    labels = np.array([r.label for r in requests])
    small = np.array([int(np.argmax(parts["classifier"].predict(r.payloads["classifier"]))) for r in requests])
    big = np.array([int(np.argmax(parts["scorer"].predict(r.payloads["lm"]))) for r in requests])
    return {ROUTER: float((small == labels).mean()), ONE_LM: float((big == labels).mean()), "n": len(requests),
            "chance": 1 / len(parts["scorer"].labels)}


def summarize(runs: pd.DataFrame) -> pd.DataFrame:
    """Median over rounds per deployment and route, with the p99's range and a noisy flag."""
    rows = []
    for (name, route), group in runs.groupby(["deployment", "route"], sort=False):
        p99 = Spread.of(group["p99_ms"].dropna())
        busy = Spread.of(group["busy_ms_per_request"].dropna())
        why = []
        if p99.rounds < 2:
            why.append("1 round: no range")
        elif p99.low > 0 and p99.high / p99.low - 1 > NOISY_SPREAD:
            why.append(f"p99 rounds differ by {p99.high / p99.low - 1:.0%}")
        if group["stopped_early"].any():
            why.append("a run stopped early (over-saturated)")
        if (group["ok"] < group["requests"]).any():
            why.append(f"{int((group['requests'] - group['ok']).sum())} not answered ok")
        rows.append({"deployment": name, "route": route, "requests": int(group["requests"].median()),
                     "p50_ms": group["p50_ms"].median(), "p99_ms": p99.median if p99.available else None,
                     "p99_low_ms": p99.low, "p99_high_ms": p99.high,
                     "ttft_p99_ms": group["ttft_p99_ms"].median() if route == GENERATE else None,
                     "busy_ms_per_request": busy.median if busy.available else None,
                     "cost_per_1m_usd": cost_per_1m(busy.median if busy.available else None),
                     "once_by_own_route": bool(group["answered_by_own_route"].all()),
                     "noisy": "noisy: " + ", ".join(why) if why else ""})
    return pd.DataFrame(rows)


LAYOUT = Layout((
    Col("deployment", "deployment", 31, "<"),
    Col("route", "route", 9, "<"),
    Col("requests", "requests", 9, spec="d"),
    Col("p50_ms", "p50 ms", 9, spec=",.1f"),
    Col("p99_ms", "p99 ms (range)", 24, text=lambda r: "-" if r["p99_ms"] is None or math.isnan(r["p99_ms"]) else (
        f"{r['p99_ms']:,.1f} ({r['p99_low_ms']:,.0f}-{r['p99_high_ms']:,.0f})")),
    Col("ttft_p99_ms", "TTFT p99", 9, spec=",.1f"),
    Col("busy_ms_per_request", "busy ms/req", 12, spec=".2f"),
    Col("cost_per_1m_usd", "$ per 1M", 9, spec=".3f"),
    Col("noisy", "", 40, "<", before="  "),
), indent="  ")


def section(out: Renderer, smoke: bool, rate_per_s: float) -> None:
    """Measure and print the routing section."""
    parts = build(smoke)
    spec, rounds = parts["spec"], SETTINGS[smoke]["rounds"]
    out.say(f"\nrouting by request kind (the agency's case): {spec.requests} requests, {spec.classify_share:.0%} "
            f"classification (intents ads) and the rest generation ({spec.prompt_tokens[0]}-{spec.prompt_tokens[1]} "
            f"prompt tokens from the LM's test topics, {spec.output_tokens[0]}-{spec.output_tokens[1]} output "
            f"tokens), Poisson at {rate_per_s:g}/s from the generator's process, {rounds} interleaved round(s); "
            f"each route on one thread (classification: one worker, dynamic batching; generation: continuous "
            f"batching, max 8); LM: {language.TARGET.layers} layers x {language.TARGET.hidden} "
            f"({'smoke' if smoke else 'full'} training)")
    runs = run_rounds(parts, rate_per_s, rounds)
    out.keep("routing_rounds", runs)
    table = summarize(runs)
    out.table("routing", LAYOUT, table.to_dict("records"))
    acc = accuracy(parts)
    out.say(f"  classification accuracy on the trace's {acc['n']} classification requests (test labels): "
            f"small classifier "
            f"{acc[ROUTER]:.3f}, LM by label words {acc[ONE_LM]:.3f} (chance {acc['chance']:.3f}: the LM never "
            f"saw these intents; a fine-tuned LM would cost the same per call)")
    out.say(f"  cost: a 2-vCPU machine at ${PRICE_PER_HOUR_USD}/h (stated assumption) per core-second of model "
            f"time (wall time inside the route's calls, on one thread: the other route's work on the shared cores "
            f"inflates it, which is part of what routing saves), at {TARGET_UTILISATION:.0%} utilisation; the "
            f"server's own overhead is not in it. Every request answered once, by the route its kind names: "
            f"{bool(table['once_by_own_route'].all())}")
    out.targets(targets(table), indent="  ")


def targets(table: pd.DataFrame) -> list[dict[str, Any]]:
    """Router vs one LM per route: cost per 1M and p99, both ways (figures, no target set)."""
    rows = []
    for route in (CLASSIFY, GENERATE):
        at = {r["deployment"]: r for r in table[table["route"] == route].to_dict("records")}
        one, two = at.get(ONE_LM), at.get(ROUTER)
        if one is None or two is None or not all(_positive(r[k]) for r in (one, two) for k in ("cost_per_1m_usd",
                                                                                                "p99_ms")):
            rows.append(target(f"routing [{route}]: one LM / router", None, None, COMMAND,
                               f"routing [{route}]: not available (a deployment answered none of these requests)"))
            continue
        cost, p99 = one["cost_per_1m_usd"] / two["cost_per_1m_usd"], one["p99_ms"] / two["p99_ms"]
        flag = " (noisy)" if one["noisy"] or two["noisy"] else ""
        rows.append(target(f"routing [{route}]: cost per 1M, one LM / router", cost, None, COMMAND,
                           f"routing [{route}]: cost per 1M ${one['cost_per_1m_usd']:.3f} (one LM) vs "
                           f"${two['cost_per_1m_usd']:.3f} (router) = {cost:.2f}x; p99 {one['p99_ms']:,.1f} vs "
                           f"{two['p99_ms']:,.1f} ms = {p99:.2f}x{flag}"))
    return rows
