"""`python -m optlab.bench llm [--smoke] [--rounds 3] [--threads 1] [--json PATH]`: the language-model
serving targets, one run, each a median of interleaved rounds with its range.

- KV cache vs recomputation: time per generated token at 256 tokens (target >= 3x);
- continuous vs static batching: goodput at the SLA (TTFT p99 and TPOT p99) on one Poisson trace (>= 1.5x);
- paged vs contiguous KV: the share of reserved KV bytes that held nothing (<= 10% vs >= 50%) and the
  concurrency each fits in one fixed budget;
- speculative decoding: outputs identical to the target's greedy; speedup at the best k idle and under load;
- optlab's continuous batcher vs transformers' own (`generate_batch`'s manager): the goodput ratio;
- a real engine: OpenVINO GenAI's continuous batching (paged attention) vs the naive server, transformers'
  `generate` one request at a time (>= 3x goodput), and vs optlab's continuous batcher (shown);
- MLPerf LoadGen's token-latency mode referees TTFT and TPOT on the continuous engine at half its goodput,
  optlab's load generator replaying LoadGen's own arrivals (optlab / LoadGen p50 within 0.85-1.15,
  LoadGen's verdict beside);
- weight-only int4 on the target (INC RTN, GPTQ, AWQ; torchao): size <= 0.35x fp32, perplexity +<= 10%;
- NNCF weight compression of the OpenVINO IR (int8, int4, int4 AWQ): the same int4 target on the IR itself,
  what the IR really stores read back from it.
- OpenVINO GenAI: speculative decoding (its draft_model) vs without, TPOT ratio at low and high load, outputs
  identical under greedy; optlab's TTFT (over the interval GenAI's stands for, the delivery TTFT and every lag
  between the clocks beside it) and TPOT vs GenAI's own PerfMetrics within 10%; its LLMPipeline one request at
  a time in the goodput rounds (shown beside its continuous batching).

Every goodput search is bounded in time (`goodput_search`): a probe stops once its p99 is missed for certain,
the search is bracketed by the engine's measured saturated rate, and each engine has `goodput_budget_s` per
round; a search that runs out reports what it found as a bound ("< x/s", "x-y/s", ">= x/s"), and a ratio
against a bound says "at least" or is not judged, never a figure that was not measured.

The models are the zoo's trained target and draft when `optlab.models.zoo` offers them, else seeded
random models of the same shape (timing figures do not depend on the weights; speculation's do: its
acceptance needs a draft trained like the target, so with random models it is shown, not judged).
An engine not available in this checkout is reported as such, never as zero.
"""
from __future__ import annotations

import argparse
import math
import time
from typing import Any, Callable

import numpy as np
import pandas as pd

from optlab.bench.intents import speed_flags
from optlab.bench.llm_nncf import NNCF_LAYOUT, nncf_int4_target, nncf_rounds
from optlab.bench.llm_openvino import OPENVINO_GOODPUT, openvino_run, show_openvino
from optlab.bench.llm_settings import BLOCK_TOKENS, COMMAND, SLA, Settings, make_engine, median_of, ranged, spread
from optlab.bench.render import Col, Layout, Renderer, missing, target, times, verdict
from optlab.bench.zoo import cpu_model
from optlab.generation.demo import ModelPair, engine_class, missing_engine, models
from optlab.generation.referee import agreement, referee_rounds
from optlab.generation.server import GenerationServer, GoodputSearch, goodput_at_sla
from optlab.generation.trace import TraceRequest, TraceSpec, at_rate, poisson_trace
from optlab.instruments.latency import torch_threads

# --- KV cache vs recomputation ------------------------------------------------------------------------------

def kv_cache_rounds(model, settings: Settings, progress: Callable[[str], None]) -> pd.DataFrame:
    """ms per generated token with and without the KV cache (transformers' generate, greedy,
    `use_cache` on/off, same prompt), interleaved rounds."""
    import torch

    prompt = torch.randint(1, model.config.vocab_size, (1, 16), generator=torch.Generator().manual_seed(0))
    rows = []
    for round_ in range(settings.rounds):
        for use_cache in (True, False):
            start = time.perf_counter()
            with torch.inference_mode():
                out = model.generate(prompt, attention_mask=torch.ones_like(prompt), do_sample=False,
                                     max_new_tokens=settings.new_tokens, min_new_tokens=settings.new_tokens,
                                     use_cache=use_cache, pad_token_id=0)
            elapsed = time.perf_counter() - start
            generated = out.shape[1] - prompt.shape[1]
            rows.append({"round": round_, "kv_cache": use_cache, "tokens": generated,
                         "ms_per_token": 1e3 * elapsed / generated})
            progress(f"  kv cache {'on ' if use_cache else 'off'} round {round_}: "
                     f"{1e3 * elapsed / generated:.2f} ms/token")
    return pd.DataFrame(rows)


def int4_rounds(pair: ModelPair, settings: Settings, progress: Callable[[str], None]) -> pd.DataFrame:
    """Every weight format of `generation.weights` on the target: size, test-topic perplexity, the
    conversion's seconds, and ms per generated token (transformers' generate with the KV cache, greedy,
    the same prompt; formats interleaved within each round)."""
    import torch

    from optlab.generation.candidates import GenerationCandidate, perplexities
    from optlab.generation.weights import WEIGHT_FORMATS, size_mb

    chosen = [GenerationCandidate("sequential", weights=name) for name in WEIGHT_FORMATS]
    converted, rows = {}, []
    for candidate in chosen:
        start = time.perf_counter()
        converted[candidate.weights] = candidate.module(pair)[0]
        rows.append({"weights": candidate.weights, "convert_s": time.perf_counter() - start,
                     "size_mb": size_mb(converted[candidate.weights])})
    quality, _ = perplexities(pair, chosen)
    prompt = torch.randint(1, pair.target.config.vocab_size, (1, 16), generator=torch.Generator().manual_seed(0))
    timings: dict[str, list[float]] = {name: [] for name in converted}
    for round_ in range(settings.rounds):
        for name, model in converted.items():
            start = time.perf_counter()
            with torch.inference_mode():
                out = model.generate(prompt, attention_mask=torch.ones_like(prompt), do_sample=False,
                                     max_new_tokens=settings.new_tokens, min_new_tokens=settings.new_tokens,
                                     pad_token_id=0)
            timings[name].append(1e3 * (time.perf_counter() - start) / (out.shape[1] - prompt.shape[1]))
        progress(f"  weights round {round_}: " + ", ".join(f"{n} {t[-1]:.2f} ms/token" for n, t in timings.items()))
    frame = pd.DataFrame(rows)
    frame["perplexity"] = [quality.get(("target", name)) for name in frame["weights"]]
    base = frame.set_index("weights").loc["fp32"]
    frame["size_ratio"] = frame["size_mb"] / base["size_mb"]
    frame["perplexity_rise"] = frame["perplexity"] / base["perplexity"] - 1
    frame["ms_per_token"] = [float(np.median(timings[name])) for name in frame["weights"]]
    frame["speed_vs_fp32"] = [spread([f / m for f, m in zip(timings["fp32"], timings[name], strict=True)])["median"]
                              for name in frame["weights"]]
    return frame


INT4_TARGET_FORMAT = "int4-rtn-g32"


def int4_target(frame: pd.DataFrame, smoke: bool) -> dict[str, Any]:
    """The int4 target on INC RTN g32 (the candidate 08 serves): size <= 0.35x fp32, perplexity +<= 10%."""
    row = frame.set_index("weights").loc[INT4_TARGET_FORMAT]
    met = None if smoke else bool(row["size_ratio"] <= 0.35 and row["perplexity_rise"] <= 0.10)
    sentence = (f"int4 weight-only (INC RTN, group 32): size {row['size_mb']:.2f} MB = {row['size_ratio']:.2f}x fp32 "
                f"(target <= 0.35x), perplexity {row['perplexity']:.2f} ({row['perplexity_rise']:+.2%}; target "
                f"<= +10%), decode {times(row['speed_vs_fp32'])} fp32's tokens/s on this CPU: {verdict(met)}")
    return target("int4 weight-only: size <= 0.35x fp32 and perplexity +<= 10%", row["size_ratio"], met, COMMAND,
                  sentence)


def kv_cache_target(frame: pd.DataFrame, settings: Settings, smoke: bool) -> dict[str, Any]:
    per_round = frame.pivot(index="round", columns="kv_cache", values="ms_per_token")
    ratio = spread(list(per_round[False] / per_round[True]))
    met = None if smoke or ratio["median"] is None else ratio["median"] >= 3.0
    sentence = (f"KV cache vs recomputation at {settings.new_tokens} generated tokens: "
                f"{ranged(ratio, '.2f', 'x')} faster per token (cache {np.median(per_round[True]):.2f} ms, recompute "
                f"{np.median(per_round[False]):.2f} ms; target >= 3x): {verdict(met)}")
    return target("kv cache vs recompute per token", ratio["median"], met, COMMAND, sentence)


# --- goodput at the SLA per engine --------------------------------------------------------------------------

def service_rate(factory: Callable[[], Any], trace, settings: Settings) -> float | None:
    """Requests/s the engine completes with the trace's first `max_batch` requests offered at once (its
    saturated rate on this mix; a one-at-a-time engine serves them in turn): no rate above it can be
    sustained, so it brackets the goodput search (None when nothing completed)."""
    at_once = [TraceRequest(r.request_id, 0.0, r.prompt_ids, r.max_new_tokens) for r in trace[: settings.max_batch]]
    engine = factory()
    try:
        summary = GenerationServer(engine, saturation_s=60.0).run(at_once, n_boot=10).summary
    finally:
        getattr(engine, "close", lambda: None)()
    return summary.get("request_throughput_per_s") or None


def goodput_search(settings: Settings, smoke: bool, requests: int, capacity: float | None,
                   first: dict[str, Any] | None) -> GoodputSearch:
    """The serving layer's rate search for one engine in one round, kept cheap without changing what it
    measures: failing probes stop as soon as the SLA is missed for certain (`fail_fast`); the search starts
    at half the engine's measured saturated rate (`service_rate`) and goes no higher than twice it (a finite
    trace offered faster than the engine serves is a burst, not a sustainable rate); no probe starts that
    cannot end within the engine's time budget for the round (`settings.goodput_budget_s`: a slow engine's
    probes each last the trace's span, 64 requests at 0.5/s is two minutes); a round after the first starts
    at the first round's figure (where that was a lower bound, the search stops there). No first probe is
    slower than the budget allows."""
    start, ceiling = (4.0 if smoke else 2.0), 1000.0
    if capacity:
        start, ceiling = max(0.1, capacity / 2), min(ceiling, max(0.2, 2 * capacity))
    if first is not None and first.get("goodput_per_s"):
        start = min(ceiling, float(first["goodput_per_s"]))
        ceiling = start if first.get("bound") == "lower" else ceiling
    start = min(ceiling, max(start, requests / settings.goodput_budget_s))  # even the first probe fits the budget
    return GoodputSearch(sla=SLA, min_requests=requests, start_per_s=start, rel_tol=0.15, max_per_s=ceiling,
                         max_probes=settings.max_probes, min_per_s=0.1, driver="process",
                         budget_s=settings.goodput_budget_s)


def goodput_rounds(model, draft, trace, names: list[str], settings: Settings, smoke: bool,
                   progress: Callable[[str], None]) -> pd.DataFrame:
    """Goodput at the SLA (the serving layer's rate search, each probe driven by the load generator's
    process; `goodput_search` says how it is kept cheap) per engine, engines interleaved within each round.
    A round whose time budget ran out keeps what it found as a bound (`bound`: "upper", goodput below
    `goodput_upper_per_s`; "bracket"), never a figure it did not measure."""
    rows: list[dict[str, Any]] = []
    first: dict[str, dict[str, Any]] = {}
    factories = {name: make_engine(name, model, draft, settings) for name in names}
    capacity = {name: service_rate(factory, trace, settings) for name, factory in factories.items() if factory}
    for name, rate in capacity.items():
        progress(f"  saturated rate {name}: {rate or 0:.3g} requests/s ({settings.max_batch} offered at once)")
    for round_ in range(settings.rounds):
        for name in names:
            factory = factories[name]
            if factory is None:
                rows.append({"round": round_, "engine": name, "goodput_per_s": None,
                             "note": missing_engine(name)})
                continue
            engines: list[Any] = []

            def make_server(factory=factory, engines=engines):
                engines.append(factory())
                return GenerationServer(engines[-1], saturation_s=5.0)
            start = time.perf_counter()
            search = goodput_search(settings, smoke, len(trace), capacity.get(name), first.get(name))
            try:
                result = goodput_at_sla(make_server, trace, search, seed=round_)
            finally:
                for e in engines:
                    getattr(e, "close", lambda: None)()
            row = {"round": round_, "engine": name, **result.row(), "saturated_per_s": capacity.get(name),
                   "seconds": time.perf_counter() - start}
            rows.append(row)
            first.setdefault(name, row)
            progress(f"  goodput {name} round {round_}: {_goodput_text(row)} ({row['probes']} probes, "
                     f"{row['seconds']:.0f}s)")
    return pd.DataFrame(rows)


def _goodput_text(row: dict[str, Any]) -> str:
    """One round's or one summary's goodput as a reader should take it: a figure, >= a lower bound, < an upper."""
    bound, value = row.get("bound") or "", row.get("goodput_per_s")
    if bound == "upper":
        return f"< {row['goodput_upper_per_s']:.3g}/s"
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if bound == "mixed":
        return (f"{value:.3g}/s in {int(row['rounds_found'])} of {int(row['rounds'])} rounds, < "
                f"{row['goodput_upper_per_s']:.3g}/s in the others")
    if bound == "lower" or "lower bound" in str(row.get("note", "")):
        return f">= {value:.3g}/s"
    if bound == "bracket" and not missing(row.get("goodput_upper_per_s")):
        return f"{value:.3g}-{row['goodput_upper_per_s']:.3g}/s"
    return f"{value:.3g}/s"


def goodput_summary(frame: pd.DataFrame) -> pd.DataFrame:
    """Per engine: the median and range of the rounds' figures. Where every round's budget ran out before any
    rate passed (bound "upper"), the row is an upper bound: below the highest of the rounds' failing rates,
    its figure None. Where only some did ("mixed": a busy machine passes a rate in one round and fails it in
    the next), the figure is the median of the rounds that found one and the row says so; no ratio is judged
    on it."""
    rows = []
    for name, group in frame.groupby("engine", sort=False):
        notes = group["note"].dropna() if "note" in group else []
        bounds = set(group["bound"].fillna("")) if "bound" in group else set()
        row = {"engine": name, **{k: median_of(group, k) for k in MEDIANS},
               "note": "; ".join(sorted({n for n in notes if n}))}
        upper = group["bound"].eq("upper") if "bound" in group else pd.Series(False, index=group.index)
        uppers = [u for u in group.loc[upper, "goodput_upper_per_s"] if not missing(u)] if upper.any() else []
        if upper.all():
            rows.append({**row, "goodput_per_s": None, "goodput_low": None, "goodput_high": None, "bound": "upper",
                         "goodput_upper_per_s": max(uppers)})
            continue
        s = spread(list(group.loc[~upper, "goodput_per_s"]))  # the rounds that found a rate within the SLA
        bound = "lower" if "lower" in bounds or any("lower bound" in n for n in notes) else ""
        rows.append({**row, "goodput_per_s": s["median"], "goodput_low": s["low"], "goodput_high": s["high"],
                     "bound": "mixed" if upper.any() else bound, "goodput_upper_per_s": max(uppers, default=None),
                     "rounds_found": int((~upper).sum()), "rounds": len(group)})
    summary = pd.DataFrame(rows)
    summary["goodput"] = [_goodput_text(r) for r in summary.to_dict(orient="records")]
    return summary


MEDIANS = ("ttft_p99_ms", "tpot_p99_ms", "output_tokens_per_s")



def ratio_target(summary: pd.DataFrame, faster: str, slower: str, label: str, goal: float | None,
                 smoke: bool, rounds: pd.DataFrame | None = None) -> dict[str, Any]:
    """faster / slower goodput. A lower bound on the faster engine or an upper bound on the slower one (its
    search's time budget ran out before any rate passed: goodput < its failing rate) makes the ratio a lower
    bound: enough to pass a goal, never to miss one; an upper bound on the faster engine or a lower bound on
    the slower one leaves no comparison (not judged)."""
    by = summary.set_index("engine")
    if faster not in by.index or slower not in by.index:
        return target(label, None, None, COMMAND, f"{label}: not available ({faster} or {slower} not measured)")
    fast, slow = by.loc[faster].to_dict(), by.loc[slower].to_dict()
    fast_bound, slow_bound = _bound(fast), _bound(slow)
    a = fast.get("goodput_per_s")
    b = slow.get("goodput_upper_per_s") if slow_bound == "upper" else slow.get("goodput_per_s")
    if fast_bound == "upper" or missing(a) or missing(b):
        why = f"{faster} is only bounded from above" if fast_bound == "upper" else f"{faster} or {slower} not measured"
        return target(label, None, None, COMMAND, f"{label}: not available ({why})")
    if not b:
        return target(label, None, None, COMMAND, f"{label}: not available ({slower} met the SLA at no rate tried; "
                                                  f"{faster}: {a:.3g}/s)")
    ratio = a / b
    if "mixed" in (fast_bound, slow_bound):
        return _mixed_ratio(rounds, faster, slower, label, goal, smoke, fast, slow, fast_bound, slow_bound)
    at_least = fast_bound in ("", "lower") and slow_bound in ("", "upper") and (fast_bound or slow_bound) != ""
    judged = not smoke and goal is not None and (slow_bound != "lower") and (not at_least or ratio >= goal)
    met = bool(ratio >= goal) if judged else None
    goal_text = f"; target >= {goal:g}x" if goal else ""
    if fast_bound == "lower":
        goal_text += f"; at least: {faster} still met the SLA at the highest rate probed"
    if slow_bound == "upper":
        goal_text += (f"; at least: {slower}'s search ran out of time before any rate passed, so its goodput is "
                      f"below {slow['goodput_upper_per_s']:.3g}/s, the lowest rate it failed")
    if slow_bound == "lower":  # the search stopped below the engine's limit: the ratio is not a comparison of goodputs
        goal_text += f"; not judged: {slower} still met the SLA at the highest rate probed"
    return target(label, ratio, met, COMMAND,
                  f"{label}: {'at least ' if at_least else ''}{times(ratio)} ({faster} {_goodput_text(fast)} vs "
                  f"{slower} {_goodput_text(slow)} at {SLA.describe()}{goal_text}): {verdict(met)}")


def round_ratio_floors(rounds: pd.DataFrame, faster: str, slower: str) -> list[float | None]:
    """Per round, what faster / slower goodput is at least (None where that round bounds nothing: the faster
    engine found no rate within its budget, or the slower one was still passing at its highest probe). A
    figure or lower bound over a figure or upper bound (a bracket's failing end) is a floor on the ratio."""
    floors = []
    for _, group in rounds[rounds["engine"].isin([faster, slower])].groupby("round", sort=True):
        by = {r["engine"]: r for r in group.to_dict(orient="records")}
        fast, slow = by.get(faster, {}), by.get(slower, {})
        a = None if _bound(fast) == "upper" else fast.get("goodput_per_s")
        b = slow.get("goodput_upper_per_s") if _bound(slow) in ("upper", "bracket") else slow.get("goodput_per_s")
        floors.append(a / b if not missing(a) and not missing(b) and a > 0 and b > 0 and _bound(slow) != "lower"
                      else None)
    return floors


def _mixed_ratio(rounds, faster, slower, label, goal, smoke, fast, slow, fast_bound, slow_bound) -> dict[str, Any]:
    """A ratio where an engine's rounds disagree: judged on the rounds, as their median. With n rounds the
    median is at least the value that n // 2 + 1 of them are at least, whatever the others are, so the k-th
    largest per-round floor (k = n // 2 + 1) is a floor on the median, when that many rounds bound it."""
    mixed = " and ".join(e for e, b_ in ((faster, fast_bound), (slower, slow_bound)) if b_ == "mixed")
    floors = [] if rounds is None else round_ratio_floors(rounds, faster, slower)
    known = sorted((f for f in floors if f is not None), reverse=True)
    k = len(floors) // 2 + 1
    shown = ", ".join("-" if f is None else f">= {f:.3g}x" for f in floors) or "not given"
    words = (f"({faster} {_goodput_text(fast)} vs {slower} {_goodput_text(slow)} at {SLA.describe()}; {mixed}'s "
             f"rounds disagree; per round: {shown}")
    if len(known) < k:
        return target(label, None, None, COMMAND, f"{label}: not judged {words}: too few rounds bound the ratio): "
                                                  f"{verdict(None)}")
    floor = known[k - 1]
    met = None if smoke or goal is None or floor < goal else True
    goal_text = f"; target >= {goal:g}x" if goal else ""
    return target(label, floor, met, COMMAND,
                  f"{label}: at least {times(floor)}, the median of {len(floors)} rounds {words}; {k} of them are at "
                  f"least that{goal_text}): {verdict(met)}")


def _bound(row: dict[str, Any]) -> str:
    """A summary row's bound: "upper", "lower" (its column, or a lower-bound note) or ""."""
    bound = row.get("bound")
    bound = "" if missing(bound) else str(bound)
    return bound or ("lower" if "lower bound" in str(row.get("note", "")) else "")


# --- paged vs contiguous KV ----------------------------------------------------------------------------------

WASTE_RATE_PER_S = 2.0  # below the continuous engines' goodput: the share does not depend on the rate, the time does


def kv_waste(model, trace, settings: Settings, progress) -> pd.DataFrame:
    """The share of reserved KV bytes that held nothing, per engine, serving the trace at one moderate
    rate (WASTE_RATE_PER_S; contiguous reserves the model's context per sequence, as a cache without
    per-request limits must; paged allocates blocks on demand), and the concurrency a fixed budget fits,
    from the trace's lengths."""
    context = model.config.max_position_embeddings
    lengths = np.array([len(r.prompt_ids) + r.max_new_tokens for r in trace])
    budget_tokens = settings.max_batch * context  # the budget: max_batch contiguous sequences
    rows = [{"layout": "contiguous (context per sequence)", "fits_sequences": budget_tokens // context},
            {"layout": f"paged ({BLOCK_TOKENS}-token blocks)",
             "fits_sequences": int(budget_tokens // np.mean(np.ceil(lengths / BLOCK_TOKENS) * BLOCK_TOKENS))}]
    for row, (name, extra) in zip(rows, (("continuous", {"reserve_tokens": context}), ("paged", {})), strict=True):
        factory = make_engine(name, model, None, settings, **extra)
        if factory is None:
            row.update(unused_share=None, note=missing_engine(name))
            continue
        result = GenerationServer(factory(), saturation_s=30.0).run(at_rate(list(trace), WASTE_RATE_PER_S), n_boot=100)
        row.update(unused_share=result.summary.get("kv_cache_unused_share"),
                   reserved_mb=result.summary.get("kv_cache_reserved_mb"),
                   used_mb=result.summary.get("kv_cache_used_mb"), note="")
        progress(f"  kv waste {name}: {row['unused_share']}")
    return pd.DataFrame(rows)


def waste_target(frame: pd.DataFrame, smoke: bool) -> dict[str, Any]:
    contiguous, paged = frame["unused_share"].iloc[0], frame["unused_share"].iloc[1]
    fits = (f"a budget of {int(frame['fits_sequences'].iloc[0])} contiguous sequences fits "
            f"{int(frame['fits_sequences'].iloc[1])} paged ones")
    if contiguous is None or paged is None or pd.isna(contiguous) or pd.isna(paged):
        return target("paged vs contiguous unused KV", None, None, COMMAND,
                      f"paged vs contiguous reserved-but-unused KV: not available (an engine is missing); {fits}")
    met = None if smoke else bool(paged <= 0.10 and contiguous >= 0.50)
    return target("paged vs contiguous unused KV", paged, met, COMMAND,
                  f"reserved-but-unused KV: paged {paged:.1%} vs contiguous {contiguous:.1%} (targets <= 10% vs "
                  f">= 50%); {fits}: {verdict(met)}")


# --- speculative decoding ----------------------------------------------------------------------------------

def same_tokens(tokens: dict[str, list[int]], reference: dict[str, list[int]]) -> bool:
    """Whether every request's tokens agree with the reference's over what both runs produced: a run
    the server stopped early (over-saturated: some requests cut short or never started) is compared on
    its requests' common prefixes, so a cut is not mistaken for a different output, while one token
    that differs still is."""
    return all(got[:len(want)] == want[:len(got)] for rid, got in tokens.items()
               if (want := reference.get(rid)) is not None)


def _serve_tokens(factory, trace) -> tuple[dict[str, Any], dict[str, list[int]]]:
    tokens: dict[str, list[int]] = {}
    result = GenerationServer(factory(), saturation_s=60.0).run(
        trace, n_boot=100, on_token=lambda rid, tok, t: tokens.setdefault(rid, []).append(tok))
    return result.summary, tokens


def speculative_rounds(model, draft, trace, settings: Settings, progress) -> pd.DataFrame:
    """Output tokens/s of the target alone vs speculative at each k: idle (the first requests, all at
    once, served one at a time by both) and under load (the whole trace at the rate where the target alone
    is at about twice its capacity); outputs compared token for token. Interleaved rounds."""
    if engine_class("speculative") is None:
        return pd.DataFrame([{"setting": "idle", "engine": "speculative", "note": missing_engine("speculative")}])
    idle = [TraceRequest(r.request_id, 0.0, r.prompt_ids, r.max_new_tokens) for r in trace[: settings.spec_requests]]
    engines = [("target alone", make_engine("sequential", model, draft, settings))] + [
        (f"speculative k={k}", make_engine("speculative", model, draft, settings, k=k)) for k in settings.spec_ks]
    rows, reference = [], {}
    for round_ in range(settings.rounds):
        for label, factory in engines:
            summary, tokens = _serve_tokens(factory, idle)
            reference.setdefault("idle", tokens)
            rows.append({"round": round_, "setting": "idle", "engine": label,
                         "output_tokens_per_s": summary["output_tokens_per_s"],
                         "identical": same_tokens(tokens, reference["idle"])})
            progress(f"  speculative idle {label} round {round_}: {summary['output_tokens_per_s']:.4g} tokens/s")
    frame = pd.DataFrame(rows)
    alone = frame[frame["engine"] == "target alone"]["output_tokens_per_s"].median()
    capacity = alone / float(np.mean([r.max_new_tokens for r in trace]))  # requests/s the target alone serves
    loaded = at_rate(list(trace), 2 * capacity)
    best = frame[frame["engine"] != "target alone"].groupby("engine")["output_tokens_per_s"].median().idxmax()
    for round_ in range(settings.rounds):
        for label, factory in [e for e in engines if e[0] in ("target alone", best)]:
            summary, tokens = _serve_tokens(factory, loaded)
            reference.setdefault("load", tokens)
            rows.append({"round": round_, "setting": f"load {2 * capacity:.3g}/s", "engine": label,
                         "output_tokens_per_s": summary["output_tokens_per_s"],
                         "identical": same_tokens(tokens, reference["load"])})
            progress(f"  speculative under load {label} round {round_}: {summary['output_tokens_per_s']:.4g} tokens/s")
    return pd.DataFrame(rows)


def speculative_targets(frame: pd.DataFrame, origin: str) -> list[dict[str, Any]]:
    if "round" not in frame:
        return [target("speculative speedup idle", None, None, COMMAND,
                       f"speculative decoding: {frame['note'].iloc[0]}")]
    rows = []
    identical = bool(frame["identical"].all())
    for setting, group in frame.groupby("setting", sort=False):
        by = group.pivot_table(index="round", columns="engine", values="output_tokens_per_s")
        candidates = [c for c in by.columns if c != "target alone"]
        best = max(candidates, key=lambda c: float((by[c] / by["target alone"]).median()))
        ratio = spread(list(by[best] / by["target alone"]))
        rows.append(target(f"speculative speedup {setting.split()[0]}", ratio["median"], None, COMMAND,
                           f"speculative decoding ({setting}): best {best}: {ranged(ratio, '.2f', 'x')} output "
                           f"tokens/s of the target alone; outputs identical: {identical} (a figure, no target: "
                           f"speculation can slow serving down; models: {origin})"))
    return rows


# --- the command ---------------------------------------------------------------------------------------------

def run(settings: Settings, smoke: bool, threads: int, progress: Callable[[str], None]) -> dict[str, Any]:
    pair = models(smoke=smoke)  # imports torch, so torch_threads below takes effect
    target_model, draft, origin = pair.target, pair.draft, pair.origin
    with torch_threads(threads):
        kv = kv_cache_rounds(target_model, settings, progress)
        spec = TraceSpec(rate_per_s=1.0, requests=settings.requests, prompt_tokens=settings.prompt_tokens,
                         output_tokens=settings.output_tokens, vocab_size=target_model.config.vocab_size, seed=0)
        trace = poisson_trace(spec, pair.prompts())
        engines = ["generate", "static", "continuous", "paged", "transformers", "openvino"] + OPENVINO_GOODPUT
        goodput = goodput_rounds(target_model, draft, trace, engines, settings, smoke, progress)
        waste = kv_waste(target_model, trace, settings, progress)
        speculative = speculative_rounds(target_model, draft, trace, settings, progress)
        referee = referee_run(target_model, draft, trace, goodput, settings, progress)
        int4 = int4_rounds(pair, settings, progress)
        nncf = nncf_rounds(pair, settings, threads, progress)
        openvino = openvino_run(target_model, draft, trace, settings, progress)
    return {"origin": origin, "kv": kv, "goodput": goodput, "waste": waste, "speculative": speculative,
            "referee": referee, "int4": int4, "nncf": nncf, "settings": settings, "openvino": openvino}


def referee_run(model, draft, trace, goodput: pd.DataFrame, settings: Settings,
                progress: Callable[[str], None]) -> pd.DataFrame:
    """LoadGen (token latencies), then optlab's load generator process replaying LoadGen's own arrivals,
    each round, on the continuous engine at half its median goodput (a rate it sustains, so neither
    figure is a queue running away)."""
    factory = make_engine("continuous", model, draft, settings)
    found = goodput[(goodput["engine"] == "continuous")]["goodput_per_s"].dropna()
    if factory is None or found.empty or not float(found.median()) > 0:
        return pd.DataFrame()
    rate = float(found.median()) / 2
    rows = referee_rounds(factory, trace, rate_per_s=rate, sla=SLA, rounds=settings.rounds)
    for r in rows:
        progress(f"  referee round {r['round']} at {rate:.3g}/s, {r['arrivals']} arrivals replayed: optlab/LoadGen "
                 f"TTFT p50 {r['ttft_p50_ms_ratio'] or float('nan'):.2f}, TPOT p50 "
                 f"{r['tpot_p50_ms_ratio'] or float('nan'):.2f}, LoadGen {r['loadgen_result']}")
    return pd.DataFrame(rows)


def referee_target(frame: pd.DataFrame, smoke: bool) -> dict[str, Any]:
    """optlab / LoadGen TTFT p50 and TPOT p50, medians over the rounds, both within 0.85-1.15."""
    label = "optlab vs LoadGen (token latencies): TTFT and TPOT p50 within 0.85-1.15"
    if frame.empty:
        return target(label, None, None, COMMAND, "not available: no continuous goodput to referee at")
    ttft = float(pd.to_numeric(frame["ttft_p50_ms_ratio"], errors="coerce").median())
    tpot = float(pd.to_numeric(frame["tpot_p50_ms_ratio"], errors="coerce").median())
    met = None if smoke else bool(0.85 <= ttft <= 1.15 and 0.85 <= tpot <= 1.15)
    return target(label, ttft, met, COMMAND, agreement(frame.to_dict(orient="records")))


GOODPUT_LAYOUT = Layout((
    Col("engine", "engine", 16, "<"), Col("goodput", "goodput", 14),
    Col("goodput_low", "low", 9, spec=".3g"), Col("goodput_high", "high", 9, spec=".3g"),
    Col("ttft_p99_ms", "TTFT p99 ms", 13, spec=".4g"), Col("tpot_p99_ms", "TPOT p99 ms", 13, spec=".3g"),
    Col("output_tokens_per_s", "out tok/s", 11, spec=".4g"), Col("note", "note", 40, "<", before="  ")))
INT4_LAYOUT = Layout((
    Col("weights", "weights", 16, "<"), Col("size_mb", "size MB", 9, spec=".2f"),
    Col("size_ratio", "x fp32", 8, spec=".2f"), Col("perplexity", "perplexity", 12, spec=".2f"),
    Col("perplexity_rise", "rise", 8, spec="+.2%"), Col("ms_per_token", "ms/token", 10, spec=".2f"),
    Col("speed_vs_fp32", "speed x fp32", 13, spec=".2f"), Col("convert_s", "convert s", 10, spec=".1f")))
WASTE_LAYOUT = Layout((
    Col("layout", "KV layout", 34, "<"), Col("unused_share", "unused share", 14, spec=".1%"),
    Col("fits_sequences", "fits in budget", 16, spec="d"), Col("note", "note", 40, "<", before="  ")))


def show(out: Renderer, results: dict[str, Any], smoke: bool) -> None:
    settings = results["settings"]
    rounds = results["goodput"]
    out.say(f"models: {results['origin']}")
    out.keep("kv_cache_rounds", results["kv"])
    out.blank()
    summary = goodput_summary(results["goodput"])
    out.keep("goodput_rounds", results["goodput"])
    out.say(f"goodput at {SLA.describe()} on a {settings.requests}-request Poisson trace "
            f"(median of {settings.rounds} interleaved round(s), range low-high):")
    out.table("goodput", GOODPUT_LAYOUT, summary.to_dict(orient="records"))
    out.blank()
    out.table("kv_waste", WASTE_LAYOUT, results["waste"].to_dict(orient="records"))
    out.keep("speculative_rounds", results["speculative"])
    out.say("weight-only int4 on the target (INC; the embedding and output head stay fp32):")
    out.table("int4", INT4_LAYOUT, results["int4"].to_dict(orient="records"))
    out.say("NNCF weight compression of the OpenVINO IR on the target (perplexity on the IR, same windows as above):")
    out.table("nncf", NNCF_LAYOUT, results["nncf"].to_dict(orient="records"))
    if not results["referee"].empty:
        out.keep("referee_rounds", results["referee"])
        out.say(agreement(results["referee"].to_dict(orient="records")))
    openvino_targets = show_openvino(out, results["openvino"], results["origin"], smoke)
    out.blank()
    out.targets([
        kv_cache_target(results["kv"], settings, smoke),
        ratio_target(summary, "continuous", "static", "continuous vs static batching goodput", 1.5, smoke, rounds),
        waste_target(results["waste"], smoke),
        *speculative_targets(results["speculative"], results["origin"]),
        ratio_target(summary, "continuous", "transformers", "optlab continuous vs transformers generate_batch goodput",
                     None, smoke, rounds),
        ratio_target(summary, "openvino", "generate", "OpenVINO GenAI continuous batching vs naive generate "
                     "one at a time, goodput", 3.0, smoke, rounds),
        ratio_target(summary, "continuous", "openvino", "optlab continuous vs OpenVINO GenAI goodput", None, smoke,
                     rounds),
        referee_target(results["referee"], smoke),
        int4_target(results["int4"], smoke),
        nncf_int4_target(results["nncf"], smoke),
        ratio_target(summary, "openvino", "openvino-single", "OpenVINO GenAI continuous batching vs its LLMPipeline "
                     "one at a time, goodput", None, smoke, rounds),
        *openvino_targets,
    ])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=COMMAND, description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="small sizes, one round (CI); targets not judged")
    parser.add_argument("--rounds", type=int, default=None, help="interleaved rounds (default: 3 full, 1 smoke)")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads, every engine alike")
    parser.add_argument("--json", default=None, help="write the tables and targets to this file")
    parser.add_argument("--requests", type=int, default=None, help="requests in the trace (default: 64 full, 12 smoke)")
    parser.add_argument("--max-output", type=int, default=None, help="the longest output a request asks for")
    parser.add_argument("--max-probes", type=int, default=None, help="probes per goodput search")
    parser.add_argument("--goodput-budget-s", type=float, default=None,
                        help="seconds per engine per round for its goodput search (default 40 full, 30 smoke); "
                             "a search that runs out reports a bound")
    args = parser.parse_args(argv or [])
    settings = Settings.smoke() if args.smoke else Settings()
    if args.goodput_budget_s is not None and not args.goodput_budget_s > 0:
        parser.error(f"--goodput-budget-s must be > 0 seconds, got {args.goodput_budget_s:g}")
    changes = {"rounds": args.rounds, "requests": args.requests, "max_probes": args.max_probes,
               "goodput_budget_s": args.goodput_budget_s,
               "output_tokens": (min(settings.output_tokens[0], args.max_output), args.max_output)
               if args.max_output else None}
    settings = Settings(**{**settings.__dict__, **{k: v for k, v in changes.items() if v}})
    out = Renderer("llm", " ".join([COMMAND, *(argv or [])]))
    flags = ",".join(speed_flags()) or "no avx2"
    out.say(f"CPU: {cpu_model()} | flags: {flags} | threads: {args.threads} (torch) | "
            f"setting: {'smoke' if args.smoke else 'full'}")
    show(out, run(settings, args.smoke, args.threads, out.progress), args.smoke)
    out.write_json(args.json)
    return 0
