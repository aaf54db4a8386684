"""Step 3 of `python -m optlab.bench rtb`: the deployments over HTTP, each in its own service.

Per round, every HTTP deployment (naive, reasonable, optimized on its configured server, and the
optimized one on the other server, so uvicorn and granian are measured in one run) is started in
its own processes and measured:
- where a request's time goes (one connection, sequential, wrk cycling through the bodies): the
  app's own stages from its `/stats` clock, and the client's latency beyond them (HTTP parsing,
  sockets);
- throughput at p99 <= 10 ms with wrk (closed loop, varied bodies, connections doubled until p99
  passes 10 ms): the HTTP ratio targets;
- for naive and optimized, optlab's client (open loop, latency from the schedule) at the SLA, and
  hey paced at that rate with varied bodies: the two clients compared at the same offered rate.
The clients' headroom (the constant service, no model) is measured first and printed before any
figure it qualifies; a rate above half a client's headroom is flagged.
"""
from __future__ import annotations

import time
from dataclasses import replace

import pandas as pd

from optlab.bench.render import Renderer, target
from optlab.cases.rtb import service as http
from optlab.cases.rtb.deployments import Deployment
from optlab.serving.constant_service import start_constant
from optlab.serving.external_load import ExternalLoad, closed_loop_at_sla, external_load
from optlab.serving.lean_app import breakdown
from optlab.serving.rounds import Spread, headroom_flag, median_rounds, round_ratio
from optlab.serving.sla import SlaSearch, server_probe, throughput_at_sla

SLA_MS = 10.0
COMMAND = "python -m optlab.bench rtb"
OPTLAB_CLIENT = ("naive", "optimized")  # the two ends, where optlab's client is compared with hey


def http_deployments(case) -> dict[str, Deployment]:
    """naive, reasonable, optimized (its configured server) and optimized on the other server."""
    optimized = case.deployments["optimized"]
    other = "granian" if optimized.config.http_server == "uvicorn" else "uvicorn"
    variant = Deployment(replace(optimized.config, name=f"optimized-{other}", http_server=other),
                         optimized.candidate, optimized.schema)
    return {**{n: case.deployments[n] for n in ("naive", "reasonable", "optimized")}, variant.name: variant}


def _search(smoke: bool) -> SlaSearch:
    if smoke:
        return SlaSearch(max_p99_ms=SLA_MS, probe_s=0.3, start_per_s=500.0, max_probes=1)
    return SlaSearch(max_p99_ms=SLA_MS, probe_s=1.0, rel_tol=0.15, start_per_s=400.0, max_probes=8)


def optlab_at_sla(port: int, path: str, bodies: list[bytes], content_type: str, smoke: bool) -> dict:
    """optlab's client (open loop, 8 connections) at p99 <= 10 ms against `path`."""
    search = _search(smoke)
    make = lambda: http.HttpTarget(port, path, connections=8, content_type=content_type)  # noqa: E731
    result = throughput_at_sla(server_probe(make, bodies, search), search)
    return result.row()


def client_headroom(smoke: bool) -> dict[str, float]:
    """wrk and hey (flat out, 8 connections) and optlab's client (p99 <= 10 ms) against the constant service."""
    with start_constant() as service:
        tools = {tool: external_load(ExternalLoad(url=service.url(), body=b"{}", tool=tool, connections=8,
                                                  duration_s=1 if smoke else 2)).summary for tool in ("wrk", "hey")}
        optlab = optlab_at_sla(service.port, "/constant", [b"{}"], "application/json", smoke)
    return {**{tool: float(s["achieved_per_s"]) for tool, s in tools.items()},
            "optlab": float(optlab["throughput_at_sla_per_s"])}


def _breakdown_row(service, url: str, bodies: tuple, content_type: str, smoke: bool) -> dict:
    before = service.get("/stats")["stages"]  # every process's clock, summed
    run = external_load(ExternalLoad(url=url, bodies=bodies, connections=1, duration_s=1 if smoke else 2,
                                     content_type=content_type)).summary
    return breakdown(before, service.get("/stats")["stages"], run["mean_ms"])


def _measure(case, name: str, deployment: Deployment, r: int, smoke: bool) -> tuple[list[dict], dict]:
    """One deployment in one round: its rows (wrk; optlab and hey for the two ends) and its breakdown."""
    spec = http.deployment_spec(deployment)
    started = time.monotonic()
    rows = []
    with http.start(spec=spec, mode="process", startup_s=180) as service:
        cold = time.monotonic() - started
        path = http.ROUTES[deployment.config.payload]
        url, content_type = f"http://{http.HOST}:{service.port}{path}", deployment.payload.content_type
        bodies = tuple(deployment.bodies(case.data.test, 64, seed=2))
        base = {"deployment": name, "server": deployment.config.http_server, "app": deployment.config.http_app,
                "processes": spec["processes"], "round": r, "cold_start_s": cold}
        split = {**base, **_breakdown_row(service, url, bodies, content_type, smoke)}
        best, _ = closed_loop_at_sla(url, bodies, connections=(2, 8) if smoke else (1, 2, 4, 8, 16, 32, 64),
                                     duration_s=1, content_type=content_type)
        rows.append({**base, "client": "wrk", "throughput_at_sla_per_s": float(best["achieved_per_s"]),
                     "p99_at_sla_load_ms": best["p99_ms"], "connections": best["connections"], "note": "closed loop"})
        if name in OPTLAB_CLIENT:
            mine = optlab_at_sla(service.port, path, list(deployment.bodies(case.data.test, 2000, seed=2)),
                                 content_type, smoke)
            rows.append({**base, "client": "optlab", **mine, "note": mine.get("note", "") or "open loop"})
            rows.append(paced_row(rows[-1], url, bodies, content_type, smoke))
    return rows, split


def paced_row(optlab: dict, url: str, bodies: tuple, content_type: str, smoke: bool) -> dict:
    """hey paced at the rate optlab's client found at the SLA (4 bodies: 4 hey processes at once, 2
    connections each), to compare the two clients at the same offered rate."""
    rate = float(optlab["throughput_at_sla_per_s"])
    row = {k: optlab[k] for k in ("deployment", "server", "app", "processes", "round")}
    row.update(client="hey", offered_per_s=rate, optlab_p99_ms=optlab["p99_at_sla_load_ms"],
               throughput_at_sla_per_s=float("nan"), p99_at_sla_load_ms=float("nan"), note="")
    if rate <= 0:
        return {**row, "note": "optlab's client found no rate at the SLA: nothing to compare"}
    paced = external_load(ExternalLoad(url=url, bodies=bodies[:4], tool="hey", connections=8,
                                       duration_s=1 if smoke else 2, rate_per_s=rate,
                                       content_type=content_type)).summary
    return {**row, "throughput_at_sla_per_s": paced["achieved_per_s"], "p99_at_sla_load_ms": paced["p99_ms"],
            "note": "closed loop, paced per connection"}


def http_runs(case, rounds: int, smoke: bool) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Every round's rows (interleaved: each round measures every deployment) and breakdowns."""
    deployments = http_deployments(case)
    rows, splits = [], []
    for r in range(rounds):
        for name, deployment in deployments.items():
            measured, split = _measure(case, name, deployment, r, smoke)
            rows += measured
            splits.append(split)
    return pd.DataFrame(rows), pd.DataFrame(splits)


BREAKDOWN_COLUMNS = {"http_and_socket_us": "HTTP+sockets", "framework_us": "framework", "decode_us": "decode",
                     "preprocess_us": "preprocess", "model_us": "model", "respond_us": "respond",
                     "client_mean_us": "total"}


def breakdown_table(splits: pd.DataFrame) -> pd.DataFrame:
    """Median over rounds of each stage's mean us per request, per deployment: HTTP parsing and
    sockets (client latency beyond the app), framework (routing, request object, body read,
    response sending), decode, preprocess, model (with any wait for the batch), respond (answer +
    encode), and the client's total."""
    frame = splits.assign(framework_us=splits.framework_in_us + splits.read_body_us + splits.framework_out_us)
    table = frame.groupby(["deployment", "server", "app"], sort=False)[list(BREAKDOWN_COLUMNS)].median()
    return table.rename(columns=BREAKDOWN_COLUMNS).round(1).reset_index()


def show_breakdown(out: Renderer, splits: pd.DataFrame) -> None:
    out.keep("http_breakdown_rounds", splits)
    out.say("   where one request's time goes over HTTP (us, one connection, sequential, varied bodies; median of "
            "rounds): the app's stages from its own clock, HTTP+sockets = the client's latency beyond them")
    out.frame("http_breakdown_us", breakdown_table(splits))


def _figure(row) -> str:
    return (f"{row.throughput_at_sla_per_s:8.0f}/s (range {row.throughput_at_sla_per_s_low:.0f}-"
            f"{row.throughput_at_sla_per_s_high:.0f}; {row.rounds_values}) p99 {row.p99_at_sla_load_ms:.2f} ms in "
            "the median round")


def ratio_targets(runs: pd.DataFrame, pairs, what: str) -> list[dict]:
    """One targets row per (top, bottom, aim) ratio of throughput at the SLA; an aim of None is shown, not judged."""
    rows = []
    for top, bottom, aim in pairs:
        if not {top, bottom} <= set(runs["deployment"]):
            continue
        spread = round_ratio(runs, top, bottom)
        met = None if aim is None or not spread.available else bool(spread.median >= aim)
        verdict = "" if aim is None else f" [target >= {aim:g}x: {_verdict(met)}]"
        rows.append(target(f"{top} / {bottom}, throughput at the SLA, {what}",
                           spread.median if spread.available else None, met, COMMAND,
                           f"{top} / {bottom} = {spread.text()}{verdict}"))
    return rows


def show_client(out: Renderer, client: str, runs: pd.DataFrame, headroom: float, inproc: pd.DataFrame) -> pd.DataFrame:
    """One client's median figures per deployment (share of in process, cold start) and its ratios."""
    mine = runs[runs.client == client]
    table = median_rounds(mine).set_index("deployment")
    out.keep(f"http_{client}", table.reset_index())
    how = ("wrk, closed loop, varied bodies: latency from the send, the best connection count with p99 <= 10 ms"
           if client == "wrk" else "optlab's client, open loop: latency from the schedule")
    out.say(f"   {how}:")
    inp = inproc.set_index("deployment")["throughput_at_sla_per_s"]
    for name, row in table.iterrows():
        base = name.split("-")[0]
        keeps = f", keeps {row.throughput_at_sla_per_s / inp[base]:.0%} of in process" if inp.get(base) else ""
        out.say(f"     {name:<18} {row.server:<8} {_figure(row)}{keeps}, cold start {row.cold_start_s:.1f} s"
                f"{headroom_flag(row.throughput_at_sla_per_s_high, headroom, client)}")
    others = [n for n in table.index if n.startswith("optimized-")]
    pairs = [("optimized", "naive", 4 if client == "wrk" else None), ("optimized", "reasonable", None),
             ("reasonable", "naive", None)] + [("optimized", other, None) for other in others]
    out.targets(ratio_targets(mine, pairs, f"over HTTP, {client}"), indent="     ")
    return table.reset_index()


def same_rate(runs: pd.DataFrame) -> pd.DataFrame:
    """optlab's client vs hey at the same offered rate, per deployment: hey's achieved / offered and
    optlab's p99 / hey's p99 over the rounds (empty when optlab's client found no rate)."""
    paced = runs[(runs.client == "hey") & runs.throughput_at_sla_per_s.notna()]
    rows = []
    for name, group in paced.groupby("deployment", sort=False):
        achieved = Spread.of(group.throughput_at_sla_per_s / group.offered_per_s)
        p99 = Spread.of(group.optlab_p99_ms / group.p99_at_sla_load_ms)
        rows.append({"deployment": name, "offered_per_s": float(group.offered_per_s.median()),
                     "achieved_over_offered": achieved.median, "achieved_text": achieved.text(),
                     "within_20pct": (0.8 <= achieved.median <= 1.2) if achieved.available else None,
                     "optlab_p99_over_hey_p99": p99.median, "p99_text": p99.text()})
    return pd.DataFrame(rows)


def _verdict(met: bool | None) -> str:
    return "not available" if met is None else ("ok" if met else "MISSED")


def same_rate_targets(compared: pd.DataFrame, hey_headroom: float | None = None) -> list[dict]:
    return [target(f"{row.deployment}: hey achieved / optlab's rate at the SLA, same offered rate",
                   row.achieved_over_offered if row.within_20pct is not None else None, row.within_20pct, COMMAND,
                   f"{row.deployment:<10} at {row.offered_per_s:.0f}/s: hey achieved / offered {row.achieved_text} "
                   f"[within 20%: {_verdict(row.within_20pct)}]; optlab p99 / hey p99 {row.p99_text}"
                   f"{headroom_flag(row.offered_per_s, hey_headroom, 'hey')}")
            for row in compared.itertuples()]


def show_over_http(out: Renderer, runs: pd.DataFrame, splits: pd.DataFrame, headroom: dict[str, float],
                   inproc: pd.DataFrame) -> pd.DataFrame:
    """Headroom first, then the breakdown, each client's figures and the same-rate comparison;
    returns wrk's median rows of naive, reasonable and optimized (the plan's and the costs' input)."""
    out.keep("http_rounds", runs)
    out.say(f"3. over HTTP (each deployment in its own service processes), {runs['round'].nunique()} interleaved "
            "round(s)")
    hey = f"; hey (closed loop, 8 connections, flat out) {headroom['hey']:.0f}/s" if "hey" in headroom else ""
    out.say(f"   client headroom (constant service: no model, raw ASGI on uvicorn): wrk (closed loop, 8 connections, "
            f"flat out) {headroom['wrk']:.0f}/s{hey}; optlab's client (open loop, 8 connections, p99 <= 10 ms) "
            f"{headroom['optlab']:.0f}/s")
    show_breakdown(out, splits)
    table = show_client(out, "wrk", runs, headroom["wrk"], inproc)
    show_client(out, "optlab", runs, headroom["optlab"], inproc)
    compared = same_rate(runs)
    out.keep("same_rate", compared)
    if compared.empty:
        out.say("   hey at optlab's rate: not available (optlab's client found no rate at the SLA)")
    else:
        out.say("   hey paced at optlab's rate at the SLA (4 bodies, 4 hey processes; latency from the send), median "
                "of rounds:")
        out.targets(same_rate_targets(compared, headroom.get("hey")), indent="     ")
    return table[table.deployment.isin(["naive", "reasonable", "optimized"])].assign(transport="http")
