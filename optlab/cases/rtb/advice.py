"""The advice, in an agency's words: which deployment, how many machines, which capacity plan, and
what the bids it would miss are worth. Every figure comes from the tables the case study measured
(`campaign.costs`, a capacity plan's summary, `casestudy.quality_table`); a figure that could not be
measured is said to be not available, with the reason, never printed as inf or nan."""
from __future__ import annotations

import math

import pandas as pd

from optlab.cases.rtb.campaign import LOWER_BOUND, SLA_MS, TARGET_UTILISATION

# Stated assumption: what a thousand answered bid requests bring on average (wins x margin). Use your own.
VALUE_PER_1000_BIDS_USD = 0.05
# Two plans whose bids at risk differ by less than this share are ranked by seconds over the SLA, then cost.
SAME_RISK = 0.001


def rank_plans(plan_summary: pd.DataFrame) -> pd.DataFrame:
    """Plans, best first, by bids at risk (the shed share plus the share of requests that arrived in
    a second whose p99 was over the SLA) together, then seconds over the SLA, then cost."""
    frame = plan_summary.copy()
    frame["at_risk_share"] = frame["shed_rate"] + frame["requests_in_seconds_over_sla"]
    frame["risk_band"] = (frame["at_risk_share"] / SAME_RISK).round()
    frame = frame.sort_values(["risk_band", "seconds_over_sla", "cost_per_month_usd"], kind="stable")
    return frame.drop(columns="risk_band").reset_index(drop=True)


def plan_advice(plan_summary: pd.DataFrame, bids_per_month: float,
                value_per_1000_bids_usd: float = VALUE_PER_1000_BIDS_USD) -> str:
    """The plan to launch with, what it misses (bids shed, and their value at the stated price) and,
    where another plan stays over the SLA for less of the day, that it does and why it is not chosen."""
    ranked = rank_plans(plan_summary)
    chosen = ranked.iloc[0]
    missed = chosen["shed_rate"] * bids_per_month
    text = (f"For the launch, run it with {chosen['policy']}: in our simulated campaign day it sheds "
            f"{chosen['shed_rate']:.2%} of bid requests (about {missed:,.0f} missed bids a month, worth "
            f"${missed * value_per_1000_bids_usd / 1e3:,.0f} at ${value_per_1000_bids_usd:g} per thousand bids, a "
            f"stated assumption) and its p99 is over {SLA_MS:g} ms for {int(chosen['seconds_over_sla'])} s of the "
            f"day, at about ${chosen['cost_per_month_usd']:,.0f} a month of machines.")
    late = chosen["requests_in_seconds_over_sla"] * bids_per_month
    if late >= 1:
        text += (f" Another {late:,.0f} bids a month arrive in seconds whose p99 is over {SLA_MS:g} ms: at least 1% "
                 f"of those are answered too late to count (worth at least "
                 f"${0.01 * late * value_per_1000_bids_usd / 1e3:,.0f} a month).")
    shorter = ranked[ranked["seconds_over_sla"] < chosen["seconds_over_sla"]]
    if len(shorter):
        other = shorter.iloc[0]
        text += (f" {other['policy']} is over the SLA for less of the day ({int(other['seconds_over_sla'])} s) but "
                 f"puts more bids at risk ({other['at_risk_share']:.2%} against {chosen['at_risk_share']:.2%}).")
    others = [f"{r['policy']} about ${r['cost_per_month_usd']:,.0f} a month with {r['at_risk_share']:.2%} of bids at "
              f"risk and {int(r['seconds_over_sla'])} s over the SLA" for _, r in ranked.iloc[1:].iterrows()]
    if others:
        text += " The alternatives: " + "; ".join(others) + "."
    if (ranked.iloc[1:]["kind"] == "scale_to_zero").any():
        text += " Scale-to-zero also drops the first requests after every quiet spell (a cold start)."
    return text


def _available(row) -> bool:
    return bool(row["throughput_at_sla_per_s"] > 0 and math.isfinite(row["cost_per_month_usd"]))


def _lower_bound(row) -> bool:
    return str(row.get("note", "") or "") == LOWER_BOUND


def serving_advice(cost_table: pd.DataFrame) -> tuple[str, bool]:
    """The deployment sentence (HTTP figures where both ends were measured over HTTP) and whether the
    optimized deployment's cost is available."""
    over_http = set(cost_table.loc[(cost_table["transport"] == "http") & (cost_table["throughput_at_sla_per_s"] > 0),
                                   "deployment"])
    transport = "http" if {"naive", "optimized"} <= over_http else "in_process"
    rows = cost_table[cost_table["transport"] == transport].set_index("deployment")
    naive, best = rows.loc["naive"], rows.loc["optimized"]
    where = "over HTTP" if transport == "http" else "in process"
    if not _available(best):
        return (f"No deployment can be sized on this run: the optimized bidder's throughput at the SLA {where} is "
                f"not available ({best['note'].removeprefix('not available: ')}). Machines, cost and saving are not "
                "available either; re-run on a quieter machine before sizing the campaign.", False)
    bound = _lower_bound(best)  # its machines and cost are then at most what is said
    text = (f"Serve the optimized bidder. It answers 99% of bid requests within {SLA_MS:g} ms (p99) "
            f"{'at least' if bound else 'at up to'} {best['throughput_at_sla_per_s']:,.0f} requests per second per "
            f"machine {where}; sized to carry {TARGET_UTILISATION:.0%} of that, the campaign needs "
            f"{'at most ' if bound else ''}{int(best['machines_for_spike'])} machine(s) at "
            f"its launch peak, about ${best['cost_per_month_usd']:,.0f} a month "
            f"(${best['cost_per_million_bids_usd']:.3f} per million bids).")
    if _available(naive) and _lower_bound(naive):  # the first version may do better: no saving follows
        text += (f" The first version reaches at least {naive['throughput_at_sla_per_s']:,.0f} per second (its search "
                 "was still within the SLA at its highest probe), so the saving against it is not known from this "
                 "run; measure with a higher search ceiling.")
    elif _available(naive):
        saving = 1 - best["cost_per_month_usd"] / naive["cost_per_month_usd"]
        text += (f" The first version reaches {naive['throughput_at_sla_per_s']:,.0f} per second and needs "
                 f"{int(naive['machines_for_spike'])} machine(s), about ${naive['cost_per_month_usd']:,.0f} a month: "
                 f"{'at least ' if bound else ''}{saving:.0%} less with the optimized one.")
    else:
        text += (f" The first version's figures are not available ({naive['note'].removeprefix('not available: ')}),"
                 " so the saving against it is not available either.")
    return text, True


def recommendation(cost_table: pd.DataFrame, plan_summary: pd.DataFrame | None, quality: pd.DataFrame, *,
                   value_per_1000_bids_usd: float = VALUE_PER_1000_BIDS_USD) -> str:
    """The advice, as an agency would put it to its client."""
    serving, sized = serving_advice(cost_table)
    q = quality.set_index("deployment").loc["optimized"]
    text = (f"{serving} Click predictions are as good as before (AUC {q['auc']:.3f}, {q['auc_drop']:+.4f} against "
            f"the original model, predicted click rate {q['mean_pctr']:.2%} vs {q['observed_ctr']:.2%} observed).")
    if not sized or plan_summary is None or not len(plan_summary):
        return text + " A capacity plan is not available: it is sized from the throughput at the SLA."
    bids = float(cost_table["bids_per_month"].iloc[0])
    return text + " " + plan_advice(plan_summary, bids, value_per_1000_bids_usd)
