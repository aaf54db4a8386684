"""bench llm's OpenVINO GenAI section: speculative decoding (GenAI's draft_model) vs without at low and
high load, outputs identical under greedy; optlab's TTFT/TPOT vs GenAI's own PerfMetrics per engine."""
from __future__ import annotations

import math
from typing import Any

import pandas as pd

from optlab.bench.llm_settings import COMMAND, Settings, make_engine, median_of, ranged, spread
from optlab.bench.render import Col, Layout, Renderer, missing, target, times, verdict
from optlab.generation.demo import engine_class, missing_engine
from optlab.generation.openvino_metrics import LAGS, compare, serve_alone
from optlab.generation.server import GenerationServer
from optlab.generation.trace import TraceRequest

# --- OpenVINO GenAI: speculative decoding, LLMPipeline one at a time, its own PerfMetrics (issue 28) ----------

OPENVINO_K = 4  # GenAI's num_assistant_tokens: drafted tokens per round
OPENVINO_GOODPUT = ["openvino-single"]  # LLMPipeline one request at a time joins the goodput rounds


def _openvino_tpot(factory, requests: list[TraceRequest], load: str) -> tuple[float | None, dict[str, list[int]]]:
    """TPOT p50 (ms) over `requests` and each one's tokens, from a fresh engine: at "low" load each request
    served alone, one after another; at "high" load all offered at once (the batch full)."""
    engine = factory()
    try:
        if load == "low":
            frame, alone = serve_alone(engine, requests)
            return median_of(frame, "tpot_ms"), alone
        tokens: dict[str, list[int]] = {}
        at_once = [TraceRequest(r.request_id, 0.0, r.prompt_ids, r.max_new_tokens) for r in requests]
        result = GenerationServer(engine, saturation_s=600.0).run(
            at_once, n_boot=10, on_token=lambda rid, token, _now: tokens.setdefault(rid, []).append(int(token)))
        return result.summary.get("tpot_p50_ms"), tokens
    finally:
        getattr(engine, "close", lambda: None)()


def openvino_speculative_rounds(model, draft, trace, settings: Settings, progress) -> pd.DataFrame:
    """GenAI's continuous batching without and with the draft (k = OPENVINO_K), both prefilling prompts whole
    (`OpenVINOEngine`'s docstring says why speculation does): TPOT p50 at low load (the first `spec_requests`
    requests, each alone) and at high load (the whole trace at once), and whether the outputs are the same
    token for token. Engines interleaved within each round."""
    if engine_class("openvino-speculative") is None:
        return pd.DataFrame([{"note": missing_engine("openvino-speculative")}])
    engines = [("without", make_engine("openvino", model, draft, settings, split_prefill=False)),  # as with a draft
               (f"speculative k={OPENVINO_K}", make_engine("openvino-speculative", model, draft, settings,
                                                           k=OPENVINO_K))]
    loads = {"low": list(trace[: settings.spec_requests]), "high": list(trace)}
    rows = []
    for round_ in range(settings.rounds):
        for load, requests in loads.items():
            reference = None
            for label, factory in engines:
                tpot, tokens = _openvino_tpot(factory, requests, load)
                reference = tokens if reference is None else reference
                rows.append({"round": round_, "load": load, "engine": label, "tpot_p50_ms": tpot,
                             "identical": tokens == reference, "requests": len(requests)})
                progress(f"  openvino {label} {load} load round {round_}: TPOT p50 {_ms_text(tpot)}")
    return pd.DataFrame(rows)


def _ms_text(value: float | None) -> str:
    return "n/a" if value is None or not math.isfinite(value) else f"{value:.3g} ms"


def openvino_speculative_targets(frame: pd.DataFrame, origin: str) -> list[dict[str, Any]]:
    """Speculative / without TPOT p50 at each load (a figure: acceptance depends on how well the draft
    predicts the target), and the outputs identical token for token (judged, smoke or not: greedy
    speculation must not change a token)."""
    if "round" not in frame:
        return [target("OpenVINO GenAI speculative decoding", None, None, COMMAND,
                       f"OpenVINO GenAI speculative decoding: {frame['note'].iloc[0]}")]
    rows = []
    for load, group in frame.groupby("load", sort=False):
        by = group.pivot_table(index="round", columns="engine", values="tpot_p50_ms")
        spec = [c for c in by.columns if c != "without"]
        ratio = spread(list(by[spec[0]] / by["without"])) if spec and "without" in by else spread([])
        rows.append(target(f"OpenVINO GenAI speculative vs without: TPOT ratio at {load} load", ratio["median"],
                           None, COMMAND,
                           f"OpenVINO GenAI continuous batching, speculative (k={OPENVINO_K}) vs without, {load} load "
                           f"({_load_words(load, int(group['requests'].iloc[0]))}): TPOT p50 "
                           f"{ranged(ratio, '.2f', 'x')} (below 1: faster per token; a figure, no target: the "
                           f"speed-up depends on the draft's acceptance; models: {origin})"))
    identical = bool(frame["identical"].all())
    rows.append(target("OpenVINO GenAI speculative: outputs identical under greedy", float(identical), identical,
                       COMMAND, f"OpenVINO GenAI speculative decoding, greedy: outputs identical to the engine "
                                f"without the draft, token for token, at both loads: {verdict(identical)}"))
    return rows


def _load_words(load: str, requests: int) -> str:
    return f"{requests} requests, each alone" if load == "low" else f"{requests} requests offered at once"


def openvino_metrics_rounds(model, trace, settings: Settings, progress) -> pd.DataFrame:
    """optlab's TTFT/TPOT vs GenAI's PerfMetrics (`generation.openvino_metrics.compare`: each request served
    alone, nothing queued) for LLMPipeline one at a time and continuous batching, interleaved rounds."""
    requests = list(trace[: 2 * settings.spec_requests])
    rows = []
    for round_ in range(settings.rounds):
        for name in ("openvino-single", "openvino"):
            factory = make_engine(name, model, None, settings)
            if factory is None:
                rows.append({"round": round_, "engine": name, "note": missing_engine(name)})
                continue
            engine = factory()
            try:
                row = {"round": round_, "engine": name, **compare(engine, requests).row()}
            finally:
                getattr(engine, "close", lambda: None)()
            rows.append(row)
            progress(f"  PerfMetrics {name} round {round_}: optlab/GenAI TTFT same interval "
                     f"{times(row['engine_ratio'])} (delivery {times(row['ttft_ratio'])}), "
                     f"TPOT {times(row['tpot_ratio'])}")
    return pd.DataFrame(rows)


def openvino_metrics_summary(frame: pd.DataFrame) -> pd.DataFrame:
    """Per engine: the medians over rounds of both sides' means, optlab's engine-interval TTFT and the lags
    between the clocks (`openvino_metrics.LAGS`), and the ratios with their ranges."""
    rows = []
    for name, group in frame.groupby("engine", sort=False):
        row = {"engine": name, "note": "; ".join(sorted(set(group["note"].dropna()))) if "note" in group else ""}
        for column in ("optlab_ttft_ms", "engine_ttft_ms", "genai_ttft_ms", "optlab_tpot_ms", "genai_tpot_ms",
                       *LAGS):
            row[column] = median_of(group, column)
        for column in ("ttft_ratio", "engine_ratio", "tpot_ratio"):
            s = spread(list(pd.to_numeric(group[column], errors="coerce"))) if column in group else spread([])
            row.update({column: s["median"], f"{column}_text": ranged(s, ".2f", "x")})
        rows.append(row)
    return pd.DataFrame(rows)


def openvino_metrics_targets(summary: pd.DataFrame, smoke: bool) -> list[dict[str, Any]]:
    """optlab / GenAI PerfMetrics within 0.9-1.1, one target per engine, judged on the interval both time:
    TTFT from just before GenAI's call to the token reaching optlab's engine (`engine_ratio`) and TPOT; the
    delivery TTFT (from the scheduled arrival to the server's stamp) and every lag between the clocks are in
    the sentence, so what separates the client's figure from GenAI's is said, not hidden."""
    rows = []
    for row in summary.to_dict(orient="records"):
        label = (f"optlab instruments vs GenAI PerfMetrics ({row['engine']}): TTFT (same interval) and TPOT "
                 "within 10%")
        engine, tpot = row.get("engine_ratio"), row.get("tpot_ratio")
        if missing(engine) or missing(tpot):
            rows.append(target(label, None, None, COMMAND, f"{label}: not available {row.get('note') or ''}"))
            continue
        met = None if smoke else bool(0.9 <= engine <= 1.1 and 0.9 <= tpot <= 1.1)
        lags = ", ".join(f"{words} {_ms_text(row.get(column))}" for column, words in LAG_WORDS.items())
        rows.append(target(label, engine, met, COMMAND,
                           f"{label}: optlab / GenAI TTFT over the same interval {row['engine_ratio_text']} "
                           f"({row['engine_ttft_ms']:.3g} vs {row['genai_ttft_ms']:.3g} ms), TPOT "
                           f"{row['tpot_ratio_text']} ({row['optlab_tpot_ms']:.3g} vs {row['genai_tpot_ms']:.3g} ms); "
                           f"delivery TTFT (scheduled arrival to the server's stamp) {row['optlab_ttft_ms']:.3g} ms = "
                           f"{row['ttft_ratio_text']} GenAI's; between them: {lags} (each request alone): "
                           f"{verdict(met)}"))
    return rows


LAG_WORDS = {"before_ms": "schedule to hand-over", "submit_ms": "hand-over to GenAI's clock start",
             "lag_ms": "GenAI's first-token stamp to optlab's engine", "after_ms": "engine to server stamp"}


def openvino_run(model, draft, trace, settings: Settings, progress) -> dict[str, pd.DataFrame]:
    """The OpenVINO section's measurements (speculative decoding, PerfMetrics), run after the others."""
    return {"speculative": openvino_speculative_rounds(model, draft, trace, settings, progress),
            "metrics": openvino_metrics_rounds(model, trace, settings, progress)}


OPENVINO_METRICS_LAYOUT = Layout((
    Col("engine", "engine", 16, "<"), Col("optlab_ttft_ms", "delivery", 10, spec=".3g"),
    Col("before_ms", "before", 8, spec=".2g"), Col("engine_ttft_ms", "engine", 8, spec=".3g"),
    Col("submit_ms", "submit", 8, spec=".2g"), Col("genai_ttft_ms", "GenAI", 8, spec=".3g"),
    Col("lag_ms", "hand-off", 9, spec=".2g"), Col("after_ms", "after", 7, spec=".2g"),
    Col("engine_ratio", "ratio", 7, spec=".2f"), Col("ttft_ratio", "delivery ratio", 15, spec=".2f"),
    Col("optlab_tpot_ms", "TPOT optlab", 12, spec=".3g"), Col("genai_tpot_ms", "GenAI", 8, spec=".3g"),
    Col("tpot_ratio", "ratio", 7, spec=".2f"), Col("note", "note", 30, "<", before="  ")))


def show_openvino(out: Renderer, results: dict[str, pd.DataFrame], origin: str, smoke: bool) -> list[dict[str, Any]]:
    """Prints the OpenVINO section's table and returns its targets."""
    out.keep("openvino_speculative_rounds", results["speculative"])
    out.keep("openvino_metrics_rounds", results["metrics"])
    summary = openvino_metrics_summary(results["metrics"])
    out.say("optlab's instruments vs OpenVINO GenAI's PerfMetrics, each request alone (ms, medians over rounds). "
            "TTFT: delivery = before (schedule to hand-over) + engine (optlab's stamps around GenAI's call) + after "
            "(engine to the server's stamp); engine = submit (to GenAI's clock start) + GenAI + hand-off (GenAI's "
            "first-token stamp to optlab's engine); ratio = engine / GenAI (judged), delivery ratio = delivery / "
            "GenAI:")
    out.table("openvino_metrics", OPENVINO_METRICS_LAYOUT, summary.to_dict(orient="records"))
    return [*openvino_speculative_targets(results["speculative"], origin), *openvino_metrics_targets(summary, smoke)]


