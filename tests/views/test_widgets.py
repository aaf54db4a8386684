"""optlab.views.widgets: views re-rank without measuring; Run measures in this thread; headless fallback."""
import base64
import os

import pandas as pd
import pytest

pytest.importorskip("ipywidgets")
pytest.importorskip("anywidget")

from optlab.recipes.recipe import Distill, Prune  # noqa: E402
from optlab.testing import results_frame
from optlab.views import rendering, widgets
from optlab.views.plots import SELECTION  # noqa: E402
from optlab.views.rendering import CellEndDisplay

os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture
def explorer():
    return widgets.TradeoffExplorer(results_frame(), max_p99_ms=3.0, max_quality_drop=0.01)


def test_builds_its_widget_tree_without_a_kernel(explorer):
    import ipywidgets as w

    assert isinstance(explorer.widget, w.VBox)
    assert isinstance(explorer.max_p99_ms, w.FloatText)
    assert isinstance(explorer.max_quality_drop, w.FloatText)
    assert explorer.jchart in explorer.widget.children[-1].children
    assert explorer.run_button.disabled  # a DataFrame has nothing to run
    assert set(explorer.families.value) == {"baseline", "quantization", "pruning", "compilation"}


def test_sla_views_rerank_and_move_chart_params(explorer):
    assert explorer.recommendation.candidate == "ort-int8"
    assert explorer.jchart.params.recommended == "ort-int8"
    assert explorer.chart_data.set_index("candidate")["recommended"]["ort-int8"]
    spec_before = explorer.jchart.spec

    explorer.max_p99_ms.value = 1.0  # what the browser does: assign the trait
    assert explorer.recommendation.candidate is None and not explorer.recommendation.met
    assert explorer.jchart.params.max_p99_ms == 1.0
    assert explorer.jchart.params.recommended == ""
    meets = explorer.chart_data[explorer.chart_data["meets_sla"]]
    assert list(meets["candidate"]) == ["trt-fp16 [H100]"]  # fast enough, but another machine's figure
    assert explorer.jchart.spec == spec_before  # only params moved: no re-embed
    assert "No candidate meets" in explorer.recommendation_html.value

    explorer.max_p99_ms.value = 3.0
    explorer.max_quality_drop.value = 0.05
    assert explorer.recommendation.candidate == "ort-int8"
    explorer.objective.value = "latency"
    assert explorer.recommendation.candidate == "ort-int8"
    explorer.max_quality_drop.value = 0.0  # 0 = no limit
    assert explorer.jchart.params.recommended == explorer.recommendation.candidate


def test_family_and_price_views_change_the_chart_data(explorer):
    explorer.families.value = ("baseline", "pruning")
    assert set(explorer.chart_data["candidate"]) == {"baseline", "prune-0.5", "prune-0.8"}
    assert explorer.recommendation.candidate == "baseline"
    names = {r.get("candidate") for rows in explorer.jchart.spec["datasets"].values() for r in rows}
    assert "ort-int8" not in names

    cost = explorer.chart_data.set_index("candidate")["cost_per_1m_usd"]["baseline"]
    explorer.price_per_hour.value = explorer.price_per_hour.value * 2
    assert explorer.chart_data.set_index("candidate")["cost_per_1m_usd"]["baseline"] == pytest.approx(2 * cost)


def test_clicking_a_point_shows_its_details(explorer):
    # The browser reports a click through the JupyterChart's selection state.
    explorer.jchart._vl_selections = {SELECTION: {"value": {"vlPoint": {"or": [{"candidate": "prune-0.5"}]}},
                                                  "store": []}}
    details = explorer.details.value
    assert "<b>prune-0.5</b>" in details and "p99 (ms)" in details and "quality drop [95% CI]" in details
    assert details.count("<tr>") <= 14  # a handful of figures, not every column
    assert "max-height:" in details  # a bounded box: a click never makes the explorer grow without limit
    assert "fingerprint" not in details and "recipe_json" not in details
    explorer.families.value = ("baseline", "pruning")  # a new spec: the watch must survive it
    explorer.jchart._vl_selections = {SELECTION: {"value": {"vlPoint": {"or": [{"candidate": "baseline"}]}},
                                                  "store": []}}
    assert "<b>baseline</b>" in explorer.details.value


def test_headless_gives_static_chart_and_table(explorer, monkeypatch):
    monkeypatch.setenv("OPTLAB_HEADLESS", "1")
    assert widgets.is_headless()
    bundle = explorer._repr_mimebundle_()
    assert "application/vnd.jupyter.widget-view+json" not in bundle
    assert "data:image/svg+xml;base64," in bundle["text/html"] and "<table" in bundle["text/html"]
    assert "ort-int8" in bundle["text/plain"]
    # a picture for kernel-less viewers, and the spec under the Vega-Lite version altair wrote (never "v5")
    assert base64.b64decode(bundle["image/png"]).startswith(b"\x89PNG")
    assert bundle[rendering.SPEC_MIMETYPE]["params"] and "v6" in bundle[rendering.SPEC_MIMETYPE]["$schema"]
    assert not any("vegalite.v5" in key for key in bundle)

    monkeypatch.setenv("OPTLAB_HEADLESS", "0")  # a live frontend: the widget, with the static fallback
    bundle = explorer._repr_mimebundle_()
    assert "application/vnd.jupyter.widget-view+json" in bundle and "text/html" in bundle


def test_no_kernel_counts_as_headless(monkeypatch):
    monkeypatch.delenv("OPTLAB_HEADLESS", raising=False)
    assert widgets.is_headless()  # pytest has no IPython kernel


# --- a real tiny study -------------------------------------------------------------------

@pytest.fixture(scope="module")
def study(tmp_path_factory):
    from optlab.data import datasets as data
    from optlab.instruments.latency import Workload
    from optlab.models import zoo
    from optlab.study.study import RunOptions, Study

    ds = data.load("digits", smoke=True)
    model = zoo.get("digits", size="student", smoke=True, data=ds)
    workload = Workload.smoke(memory=False, cold_start=False, threads=1)
    study = Study(model, ds, workload=workload, results_dir=tmp_path_factory.mktemp("study"),
                  options=RunOptions(progress=False))
    study.run()
    return study


def test_run_button_measures_chosen_recipes_with_controls_disabled(study):
    explorer = widgets.TradeoffExplorer(study, max_quality_drop=0.05)
    assert not explorer.run_button.disabled
    explorer.techniques.value = ("prune",)
    explorer.sparsity.value = 0.3
    assert explorer.chosen_recipes() == [Prune(sparsity=0.3)]
    # plus one recipe that fails (a "student" teacher cannot distil into the larger "teacher")
    explorer.chosen_recipes = lambda: [Prune(sparsity=0.3, finetune_epochs=0), Distill(student="teacher")]
    during = []
    study.subscribe(lambda event: during.append((explorer.run_button.disabled, explorer.max_p99_ms.disabled,
                                                 explorer.sparsity.disabled, len(explorer.chart_data))))
    explorer.run_button.click()  # the click handler, in this thread

    assert during and all(d[0] and d[1] and d[2] for d in during)
    assert [d[3] for d in during] == sorted(d[3] for d in during)  # points appear as they finish
    assert not explorer.run_button.disabled and not explorer.max_p99_ms.disabled and not explorer.sparsity.disabled
    assert explorer.progress.value == explorer.progress.max
    results = study.results.set_index("candidate")
    assert results.loc[Prune(sparsity=0.3, finetune_epochs=0).name, "status"] == "ok"
    assert (results["status"] == "error").sum() == 1
    assert Prune(sparsity=0.3, finetune_epochs=0).name in set(explorer.chart_data["candidate"])
    assert explorer.recommendation is not None
    assert "done" in explorer.status.value


def test_controls_come_back_when_the_run_raises(study):
    explorer = widgets.TradeoffExplorer(study)
    explorer.techniques.value = ("prune",)
    study._running = True  # run() refuses a second concurrent run
    try:
        explorer._on_run(explorer.run_button)
    finally:
        study._running = False
    assert "run failed" in explorer.status.value and "already running" in explorer.status.value
    assert not explorer.run_button.disabled and not explorer.max_quality_drop.disabled


def test_live_chart_follows_study_events(study):
    live = widgets.LiveChart(study, max_quality_drop=0.05)
    before = len(live.chart.to_dict()["datasets"])
    assert before
    study.run(recipes=[Prune(sparsity=0.2, finetune_epochs=0)])
    names = {r.get("candidate") for rows in live.jchart.spec["datasets"].values() for r in rows}
    assert Prune(sparsity=0.2, finetune_epochs=0).name in names
    live.close()
    assert live.update not in study._subscribers


def test_sla_membership_is_the_frontiers_not_evaluated_quality_fails():
    frame = results_frame()
    frame.loc[frame["candidate"] == "prune-0.5", "quality_drop"] = None  # quality not evaluated
    explorer = widgets.TradeoffExplorer(frame, max_quality_drop=0.05)
    meets = explorer.chart_data.set_index("candidate")["meets_sla"]
    assert not meets["prune-0.5"]  # frontier: "quality not evaluated" breaks a quality limit
    assert meets["baseline"] and meets["ort-int8"]
    rejected = {r.candidate: r.reasons for r in explorer.recommendation.rejected}
    assert "quality not evaluated" in rejected["prune-0.5"]


def test_explorer_follows_runs_it_did_not_start(study):
    """Built before the study runs, the explorer gains each point from study.run() and study.add()."""
    explorer = widgets.TradeoffExplorer(study, max_quality_drop=0.05)
    before = set(explorer.chart_data["candidate"])
    assert before == set(study.results.query("status != 'error'")["candidate"])
    seen = []
    study.subscribe(lambda event: seen.append(len(explorer.chart_data)))
    recipe = Prune(sparsity=0.4, finetune_epochs=0)
    study.add(recipe)
    study.run()  # not the Run button: another cell
    assert recipe.name in set(explorer.chart_data["candidate"])
    assert seen and max(seen) == len(explorer.chart_data)
    names = {r.get("candidate") for rows in explorer.jchart.spec["datasets"].values() for r in rows}
    assert recipe.name in names
    assert explorer.progress.value == explorer.progress.max
    assert "no results yet" not in explorer.recommendation_html.value
    explorer.close()
    assert explorer._on_event not in study._subscribers


def test_price_box_prices_a_copy_never_the_study(study):
    from optlab.study.costs import with_costs

    before = study.price.price_per_hour_usd
    explorer = widgets.TradeoffExplorer(study, max_quality_drop=0.05)
    explorer.price_per_hour.value = 0.40
    assert study.price.price_per_hour_usd == before  # the study is not changed by a view
    ours = explorer.chart_data.set_index("candidate")["cost_per_1m_usd"]
    expected = with_costs(study.results, 0.40, utilisation=study.utilisation).set_index("candidate")
    assert ours["baseline"] == pytest.approx(expected.loc["baseline", "cost_per_1m_usd"])
    explorer.close()


def test_explore_is_a_pure_function_of_rows_and_state():
    frame = results_frame()
    before = frame.copy()
    state = widgets.ExplorerState(max_p99_ms=3.0, max_quality_drop=0.01, price_per_hour_usd=0.2,
                                  families=("baseline", "quantization"))
    data, recommendation = widgets.explore(frame, state)
    assert recommendation.candidate == "ort-int8"
    assert set(data["candidate"]) == {"baseline", "ort-int8"}  # families kept, error row out
    assert data.set_index("candidate")["meets_sla"].all() and data["recommended"].sum() == 1
    pd.testing.assert_frame_equal(frame, before)  # priced on a copy
    again, _ = widgets.explore(frame, state)
    pd.testing.assert_frame_equal(data, again)
    with pytest.raises(ValueError, match="objective"):
        widgets.ExplorerState(objective="fastest")


def test_run_is_a_callback_and_event_rows_are_drawn():
    frame = results_frame().iloc[:4]
    calls = []

    def run(recipes):
        calls.append(recipes)
        extra = results_frame().iloc[[5]].assign(candidate="new-one", status="ok")
        return extra

    explorer = widgets.TradeoffExplorer(frame, run=run)
    assert not explorer.run_button.disabled
    explorer.run_button.click()
    assert calls and "new-one" in set(explorer.chart_data["candidate"])

    class Event:  # what a study sends: the row it announces
        row = dict(results_frame().iloc[1].to_dict(), candidate="from-event")
        done, total = 1, 1

    explorer._on_event(Event())
    assert "from-event" in set(explorer.chart_data["candidate"])


def test_headless_display_updates_in_place_as_rows_arrive(study, monkeypatch):
    """papermill/nbconvert keep the last update of a display: the saved notebook shows every point."""
    monkeypatch.setenv("OPTLAB_HEADLESS", "1")

    class Handle:  # what IPython's display(..., display_id=True) returns, recording updates
        bundles: list = []

        def update(self, bundle, raw=False):
            self.bundles.append(bundle)

    explorer = widgets.TradeoffExplorer(study, max_quality_drop=0.05)
    explorer._display = CellEndDisplay(Handle(), explorer.static_bundle)  # no IPython here: redraws at once
    recipe = Prune(sparsity=0.15, finetune_epochs=0)
    study.run(recipes=[recipe])
    assert Handle.bundles and recipe.name in Handle.bundles[-1]["text/plain"]
    assert "image/png" in Handle.bundles[-1] and "<img" in Handle.bundles[-1]["text/html"]
    explorer.close()


def test_headless_output_is_redrawn_once_when_the_cell_ends(monkeypatch):
    """Each redraw renders a PNG and an SVG: rows arriving within one cell cost one redraw, made
    when IPython's post_run_cell fires (a failed cell's too), and the hook is removed after."""
    from IPython.core.events import EventManager, available_events

    events = EventManager(shell=None, available_events=available_events)
    monkeypatch.setattr(rendering, "_shell_events", lambda: events)
    drawn = []

    class Handle:
        def update(self, bundle, raw=False):
            drawn.append(bundle)

    output = CellEndDisplay(Handle(), lambda: {"text/plain": f"rows so far: {len(drawn)}"})
    for _ in range(5):  # five rows arrive while a cell runs
        output.refresh()
    assert drawn == []
    events.trigger("post_run_cell", None)
    assert len(drawn) == 1 and events.callbacks["post_run_cell"] == []
    events.trigger("post_run_cell", None)  # a later cell with no new rows draws nothing
    output.refresh()
    events.trigger("post_run_cell", None)
    assert len(drawn) == 2


def test_controls_leave_room_for_their_words_and_rows_wrap(explorer):
    """No clipped description ("max quality drop" read "0." and "temperat..." at 1440x900): each
    description fits its fixed width at ~7 px a character, inputs keep >= 100 px, rows wrap."""
    controls = [*explorer.views, *explorer.experiments, explorer.progress]
    for control in controls:
        words = getattr(control, "description", "")
        label = str(getattr(control.style, "description_width", ""))
        if not words or not label.endswith("px"):  # buttons and checkboxes size to their words
            continue
        label_px = int(label.removesuffix("px"))
        assert len(words) * 7 <= label_px, f"{words!r} needs more than {label_px}px"
        width = str(control.layout.width or "")
        if width.endswith("px"):
            assert int(width.removesuffix("px")) - label_px >= 100, f"{words!r}: the input is too narrow"
    rows = [explorer.widget.children[0], explorer.widget.children[-1]]
    assert all(row.layout.flex_flow == "row wrap" for row in rows)
