"""optlab.views.plots on hand-made results frames (plots never compute, so no model is needed)."""
import functools
import math

import altair as alt
import numpy as np
import pandas as pd
import pytest

from optlab.testing import latency_samples, results_frame
from optlab.views import plots


def batch_frame() -> pd.DataFrame:
    return pd.DataFrame({"candidate": np.repeat(["baseline", "ort-int8", "trt-fp16 [H100]"], 4),
                         "status": np.repeat(["ok", "ok", "reference"], 4),
                         "batch_size": [1, 8, 32, 128] * 3,
                         "throughput_per_s": [500, 3000, 6000, 7000, 900, 5000, 9000, 12000, 4e3, 3e4, 8e4, 1e5],
                         "p99_ms": [2, 3, 6, 20, 1, 2, 4, 12, .3, .4, .6, 1.5]})


@functools.lru_cache(maxsize=1)
def all_charts():
    df = results_frame()
    return {
        "pareto": plots.pareto_chart(df, max_p99_ms=2.6, max_quality_drop=0.03, recommended="ort-int8"),
        "pareto_throughput": plots.pareto_chart(df, x="throughput_per_s", max_p99_ms=2.6, max_quality_drop=0.03),
        "pareto_drop_axis": plots.pareto_chart(df, y="quality_drop", max_quality_drop=0.03),
        "pareto_plain": plots.pareto_chart(df),
        "latency_box": plots.latency_chart(latency_samples()),
        "latency_ecdf": plots.latency_chart(latency_samples(), kind="ecdf"),
        "throughput": plots.throughput_chart(batch_frame()),
        "p99_vs_batch": plots.throughput_chart(batch_frame(), y="p99_ms"),
        "sweep": plots.sweep_chart(df, "sparsity"),
        "sweep_two": plots.sweep_chart(df, "sparsity", y=["quality", "p99_ms"]),
        "size": plots.size_chart(df),
    }


def datasets(spec: dict) -> list[list[dict]]:
    return list(spec.get("datasets", {}).values())


def all_candidates(spec: dict) -> set:
    return {r.get("candidate") for rows in datasets(spec) for r in rows} - {None}


@pytest.mark.parametrize("name", list(all_charts()))
def test_every_chart_validates_and_drops_error_rows(name):
    spec = all_charts()[name].to_dict(validate=True)
    names = all_candidates(spec)
    assert "broken-int4" not in names
    assert spec["config"]["font"].startswith("DejaVu Sans")  # one theme everywhere


def test_reference_rows_are_a_mark_style_in_the_legend_and_off_the_frontier():
    spec = plots.pareto_chart(results_frame()).to_dict(validate=True)
    points = next(layer for layer in spec["layer"] if layer["mark"]["type"] == "point")
    shape = points["encoding"]["shape"]
    assert shape["scale"]["range"] == ["circle", "diamond"] and shape["legend"] is not None
    assert not [layer for layer in spec["layer"] if layer["mark"]["type"] == "text"]  # no labels over points
    rows = spec["datasets"][points["data"]["name"]]
    assert {r["measured"] for r in rows if r["status"] == "reference"} == {plots.MEASURED[1]}
    line = next(layer for layer in spec["layer"] if layer["mark"]["type"] == "line")
    frontier = {r["candidate"] for r in spec["datasets"][line["data"]["name"]]}
    assert frontier == {"baseline", "ort-int8"}  # prune-0.5 is dominated; reference excluded
    without = plots.pareto_chart(results_frame().iloc[:4]).to_dict(validate=True)
    points = next(layer for layer in without["layer"] if layer["mark"]["type"] == "point")
    assert points["encoding"]["shape"]["legend"] is None  # no reference rows: no legend entry for them


def test_latency_axis_is_log_by_default_with_a_toggle():
    spec = plots.pareto_chart(results_frame()).to_dict(validate=True)
    points = next(layer for layer in spec["layer"] if layer["mark"]["type"] == "point")
    assert points["encoding"]["x"]["scale"]["type"] == "log"
    spec = plots.pareto_chart(results_frame(), log_x=False).to_dict(validate=True)
    points = next(layer for layer in spec["layer"] if layer["mark"]["type"] == "point")
    assert points["encoding"]["x"]["scale"].get("type") != "log"
    spec = plots.pareto_chart(results_frame(), x="throughput_per_s").to_dict(validate=True)
    points = next(layer for layer in spec["layer"] if layer["mark"]["type"] == "point")
    assert points["encoding"]["x"]["scale"].get("type") != "log"  # not a latency


def test_overlapping_points_are_spread_and_the_pick_is_nearest():
    df = results_frame()
    df.loc[df["candidate"] == "prune-0.5", ["p99_ms", "quality"]] = (2.8, 0.95)  # on top of the baseline
    spec = plots.pareto_chart(df).to_dict(validate=True)
    points = next(layer for layer in spec["layer"] if layer["mark"]["type"] == "point")
    rows = {r["candidate"]: r for r in spec["datasets"][points["data"]["name"]]}
    a, b = rows["baseline"], rows["prune-0.5"]
    assert (a["x_drawn"], a["y_drawn"]) != (b["x_drawn"], b["y_drawn"])
    assert a["p99_ms"] == b["p99_ms"] == 2.8  # the tooltip keeps the measured figure
    assert rows["ort-int8"]["x_drawn"] == rows["ort-int8"]["p99_ms"]  # a lone point stays put
    pick = next(p for p in spec["params"] if p["name"] == plots.SELECTION)
    assert pick["select"]["nearest"] is True


def test_one_point_charts_get_a_domain_around_the_point():
    spec = plots.pareto_chart(results_frame().iloc[:1]).to_dict(validate=True)
    points = next(layer for layer in spec["layer"] if layer["mark"]["type"] == "point")
    low, high = points["encoding"]["x"]["scale"]["domain"]
    assert low < 2.8 < high and low > 0
    low, high = points["encoding"]["y"]["scale"]["domain"]
    assert low < 0.95 < high and high - low < 0.2


def test_a_lone_zero_gets_no_negative_ticks():
    frame = results_frame().iloc[:2].assign(throughput_at_sla_per_s=0.0)  # nothing served within the SLA
    spec = plots.pareto_chart(frame, x="throughput_at_sla_per_s").to_dict(validate=True)
    points = next(layer for layer in spec["layer"] if layer["mark"]["type"] == "point")
    assert points["encoding"]["x"]["scale"]["domain"] == [0.0, 1.0]


def test_legends_use_short_distinct_labels():
    names = ["quantize(scheme=static-int8, runtime=onnxruntime, calibration=minmax, calibration_samples=64)",
             "quantize(scheme=static-int8, runtime=onnxruntime, calibration=entropy, calibration_samples=64)",
             "prune(sparsity=0.5, structured=True)", "baseline [recorded on an H200]", "baseline"]
    short = plots.short_labels(names + names[:1])
    assert short[2] == "prune(0.5, structured)" and short[3] == "baseline [H200]"
    assert len(set(short[:5])) == 5 and short[5] == short[0]  # distinct, and stable for a repeated name
    assert all(len(s) <= plots.SHORT_LABEL_CHARS + 3 for s in short)


def test_batch_axis_is_integer_and_no_empty_columns_leak():
    frame = batch_frame().assign(throughput_x=np.nan)
    spec = plots.throughput_chart(frame).to_dict(validate=True)
    assert spec["encoding"]["x"]["axis"]["values"] == [1, 8, 32, 128]
    assert spec["encoding"]["x"]["axis"]["format"] == "d"
    assert spec["encoding"]["color"]["field"] == "short_label"
    assert all("throughput_x" not in r for rows in datasets(spec) for r in rows)


def test_frontier_follows_throughput_direction():
    spec = plots.pareto_chart(results_frame(), x="throughput_per_s").to_dict(validate=True)
    line = next(layer for layer in spec["layer"] if layer["mark"]["type"] == "line")
    assert {r["candidate"] for r in spec["datasets"][line["data"]["name"]]} == {"baseline", "ort-int8"}


def test_sla_and_recommendation_are_params_the_widget_can_move():
    spec = plots.pareto_chart(results_frame(), max_p99_ms=2.6, max_quality_drop=0.03,
                              recommended="ort-int8").to_dict(validate=True)
    params = {p["name"]: p for p in spec["params"]}
    assert params["max_p99_ms"]["value"] == 2.6
    assert params["max_quality_drop"]["value"] == 0.03
    assert params["recommended"]["value"] == "ort-int8"
    assert params[plots.SELECTION]["select"]["type"] == "point"
    region = spec["layer"][0]
    assert region["mark"]["type"] == "rect"
    assert region["encoding"]["x"]["datum"] == {"expr": "max_p99_ms"}
    # quality floor = baseline quality - allowed drop
    assert region["encoding"]["y"]["datum"]["expr"].startswith("0.95 - max_quality_drop")
    assert any(layer.get("transform", [{}])[0] == {"filter": "datum.candidate == recommended"}
               for layer in spec["layer"])


def test_a_chart_without_limits_still_carries_their_params():
    """A live explorer sets max_p99_ms as someone types one; a chart drawn without that param
    made the browser answer "Unrecognized signal name: max_p99_ms"."""
    from optlab.views.rendering import to_svg

    rows = results_frame().drop(columns=["p99_ms"])
    spec = plots.pareto_chart(rows, x="size_mb").to_dict(validate=True)
    params = {p["name"]: p for p in spec["params"]}
    assert params["max_p99_ms"].get("value") is None and params["max_quality_drop"].get("value") is None
    assert "<svg" in to_svg(spec)  # null limits draw (every point inside, no shaded region)


def test_tooltips_carry_every_figure():
    spec = plots.pareto_chart(results_frame()).to_dict(validate=True)
    points = next(layer for layer in spec["layer"] if layer["mark"]["type"] == "point")
    fields = {t["field"] for t in points["encoding"]["tooltip"]}
    assert {"p50_ms", "p99_ms", "throughput_per_s", "size_mb", "quality", "quality_drop", "agreement",
            "cost_per_1m_usd", "runtime", "status"} <= fields


def test_exports_png_and_svg(tmp_path):
    chart = all_charts()["pareto"]
    png = plots.save(chart, tmp_path / "pareto.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000
    svg = plots.save(chart, tmp_path / "pareto.svg").read_text()
    assert "<svg" in svg and "recommended" in svg and plots.MEASURED[1] in svg
    assert plots.save(chart, tmp_path / "pareto.json").stat().st_size > 100
    with pytest.raises(ValueError, match=r"\.svg, \.png"):
        plots.save(chart, tmp_path / "pareto.pdf")


def test_missing_columns_name_the_problem_and_the_fix():
    with pytest.raises(ValueError, match=r"needs the column\(s\) \['p99_ms'\].*Study's `.results`"):
        plots.pareto_chart(pd.DataFrame({"candidate": ["a"], "quality": [0.9]}))
    with pytest.raises(ValueError, match="kind='box' or kind='ecdf'"):
        plots.latency_chart(latency_samples(), kind="violin")


def test_empty_and_statusless_frames_still_validate():
    from optlab.study.table import empty_table as _empty_frame

    plots.pareto_chart(_empty_frame(), max_p99_ms=1.0, max_quality_drop=0.01, recommended="").to_dict(validate=True)
    bare = results_frame().drop(columns=["status"]).iloc[:4]
    spec = plots.pareto_chart(bare).to_dict(validate=True)
    assert all_candidates(spec) == {"baseline", "ort-int8", "prune-0.5", "prune-0.8"}


def test_missing_sizes_do_not_hide_points():
    df = results_frame()
    df.loc[1, "size_mb"] = math.nan
    spec = plots.pareto_chart(df).to_dict(validate=True)
    points = next(layer for layer in spec["layer"] if layer["mark"]["type"] == "point")
    rows = spec["datasets"][points["data"]["name"]] if "data" in points else datasets(spec)[0]
    assert all(r["mark_size_mb"] is not None for r in rows)


def test_theme_is_registered_and_bare_strips_it_for_composition():
    assert "optlab" in alt.theme.names()
    chart = alt.hconcat(plots.bare(plots.size_chart(results_frame())), plots.bare(all_charts()["throughput"]))
    chart.to_dict(validate=True)


def test_rows_without_figures_are_not_drawn():
    late = pd.DataFrame([{"candidate": "late", "status": "skipped", "family": "pruning"}])
    frame = pd.concat([results_frame(), late], ignore_index=True)
    kept = plots.drawable(frame)
    assert "late" not in set(kept["candidate"]) and "broken-int4" not in set(kept["candidate"])
    assert {"baseline", "trt-fp16 [H100]"} <= set(kept["candidate"])
