"""What the load clients could drive, next to what they measured over HTTP.

optlab's own generator is Python: on a small machine it sends a few thousand requests a second at
most, so a service figure near what it reaches against the constant endpoint is the *client's*
limit, not the service's or the HTTP stack's. A compiled client (`wrk`, driven and parsed by
`serving.external_load`) reaches far more against the same kind of endpoint: its headroom is the
bound that says whether a figure is the service's own. `external_at_sla` measures the
deployments with it (a closed loop: latency from the send, not from a schedule, said in the
rows), `client_headroom` both clients' ceilings, `headroom_note` the sentence a person reads.
"""
from __future__ import annotations

import math
from typing import Any

import pandas as pd

from optlab.cases.rtb import service as http
from optlab.cases.rtb.campaign import SLA_MS
from optlab.serving import external_load

TOOL = "wrk"


def _missing(tool: str) -> str:
    return f"not available: {tool} is not installed ({external_load.INSTALL})"


def client_headroom(over_http: pd.DataFrame, tool: str = TOOL) -> pd.DataFrame:
    """Each client's ceiling against a constant endpoint (no model): optlab's generator (the
    `constant` row `goodput_over_http` measured) and `tool` against the constant service."""
    rows = []
    constant = over_http[over_http["deployment"] == "constant"]
    if len(constant):
        row = constant.iloc[0]
        reached = float(row["throughput_at_sla_per_s"])
        rows.append({"client": "optlab generator (Python, open loop)", "headroom_per_s": reached,
                     "note": "" if reached > 0 else f"not available: {row.get('note', '')}"})
    if external_load.missing_tools((tool,)):
        rows.append({"client": f"{tool} (compiled, closed loop)", "headroom_per_s": math.nan, "note": _missing(tool)})
    else:
        summary = external_load.client_headroom(tool).summary
        rows.append({"client": f"{tool} (compiled, closed loop)", "headroom_per_s": float(summary["achieved_per_s"]),
                     "note": ""})
    return pd.DataFrame(rows)


def external_at_sla(case, names=("optimized",), tool: str = TOOL) -> pd.DataFrame:
    """Each deployment in its own service process, driven by `tool` on more and more connections:
    the highest rate answered with p99 <= the SLA (from the send: a closed loop) and no errors."""
    rows: list[dict[str, Any]] = []
    for name in names:
        if external_load.missing_tools((tool,)):
            rows.append({"deployment": name, "client": tool, "rate_at_sla_per_s": math.nan, "p99_ms": math.nan,
                         "connections": math.nan, "note": _missing(tool)})
            continue
        deployment = case.deployments[name]
        bodies = tuple(deployment.bodies(case.data.test, 200, seed=6))
        with http.start(spec=http.deployment_spec(deployment), mode="process", startup_s=120) as service:
            url = f"http://{http.HOST}:{service.port}{http.ROUTES[deployment.config.payload]}"
            best, _ = external_load.closed_loop_at_sla(url, bodies, max_p99_ms=SLA_MS,
                                                       content_type=deployment.payload.content_type)
        met = bool(best["sla_met"])
        rows.append({"deployment": name, "client": f"{tool} (closed loop, latency from the send)",
                     "rate_at_sla_per_s": float(best["achieved_per_s"]) if met else 0.0,
                     "p99_ms": float(best["p99_ms"]), "connections": int(best["connections"]),
                     "note": "" if met else f"not available: p99 {best['p99_ms']:.1f} ms on one connection is over "
                                            f"{SLA_MS:g} ms (the machine is busy or the SLA too tight)"})
    return pd.DataFrame(rows)


def headroom_note(headroom: pd.DataFrame, over_http: pd.DataFrame, external: pd.DataFrame | None = None) -> str:
    """What each client could drive and which figures that bounds, in words."""
    ceiling = headroom.set_index("client")["headroom_per_s"]
    how = {True: f" (its rate at p99 <= {SLA_MS:g} ms)", False: " (flat out)"}
    parts = [f"{client} reached {value:,.0f}/s against a constant endpoint{how[client.startswith('optlab')]}"
             if value > 0 else
             f"{client}'s headroom is {headroom.set_index('client').loc[client, 'note'] or 'not available'}"
             for client, value in ceiling.items()]
    text = "Client headroom: " + "; ".join(parts) + "."
    generator = next((v for c, v in ceiling.items() if c.startswith("optlab") and v > 0), None)
    if generator:
        served = over_http[(over_http["deployment"] != "constant") & (over_http["throughput_at_sla_per_s"] > 0)]
        near = served[served["throughput_at_sla_per_s"] > 0.5 * generator]["deployment"].tolist()
        text += (f" optlab's figures above half its headroom ({0.5 * generator:,.0f}/s) carry the client's own limit"
                 + (f": {', '.join(near)} {'is one' if len(near) == 1 else 'are'}, so the service may do better"
                    " than it shows." if near else
                    "; none is, so they are the services' own."))
    if external is not None and len(external) and (external["rate_at_sla_per_s"] > 0).any():
        text += (f" Measured with {TOOL} instead: "
                 + ", ".join(f"{r.deployment} {r.rate_at_sla_per_s:,.0f}/s at p99 {r.p99_ms:.1f} ms from the send"
                             for r in external.itertuples() if r.rate_at_sla_per_s > 0) + ".")
    return text
