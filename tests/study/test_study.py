"""Study: baseline + recipes -> tidy rows, isolated failures, crash-safe resume, reference rows.

Runs real recipes on the zoo's tiny digits student (trained once, cached on disk)."""
import inspect
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pandas as pd
import pytest

from optlab.data import datasets
from optlab.instruments.latency import Workload
from optlab.models import zoo
from optlab.recipes.recipe import Compile, Quantize
from optlab.study.executor import InProcessExecutor
from optlab.study.store import MANIFEST, IncompatibleStore, OtherStudyFolder, Store
from optlab.study.study import COLUMNS, Pricing, RunOptions, Study, StudyEvent

ROOT = Path(__file__).resolve().parents[2]
# The sweep budget is the test's choice, not a promise of the code: the sweep skips a batch size whose
# call takes over SWEEP_MAX_CALL_SHARE of it (25 ms of smoke's 0.1 s), which a busy machine's time slices
# reach, leaving throughput and cost empty; 1 s gives 250 ms, and the loop still stops at max_samples.
FAST = Workload.smoke(threads=1, throughput_batch_sizes=(8,), memory=False, cold_start=False, sweep_budget_s=1.0)
FIVE = [Quantize("dynamic-int8"), Quantize("bf16"), Compile(graph_level="basic"), Compile(graph_level="all"),
        Compile(provider="cuda")]  # no CUDA here: UnsupportedRecipe


class LoggingExecutor(InProcessExecutor):
    """The executor seam, used to record which tasks really ran."""

    def __init__(self):
        self.ran = []

    def run(self, fn, tasks):
        for task in tasks:
            self.ran.append(task.name)
            yield fn(task)


@pytest.fixture(scope="module")
def digits():
    return datasets.load("digits", smoke=True)


@pytest.fixture(scope="module")
def model(digits):
    return zoo.get("digits", "student", smoke=True, data=digits)


@pytest.fixture(scope="module")
def five(tmp_path_factory, digits, model):
    """One study of five recipes (one fails), run once for the tests below."""
    results_dir = tmp_path_factory.mktemp("five")
    executor = LoggingExecutor()
    study = Study(model, digits, FIVE, workload=FAST, results_dir=results_dir,
                  options=RunOptions(executor=executor, progress=False))
    events = []
    study.subscribe(events.append)
    study.subscribe(lambda event: 1 / 0)  # a broken widget must not stop the study
    with pytest.warns(RuntimeWarning, match="subscriber raised"):
        df = study.run()
    return study, df, events, executor


def test_five_recipes_one_failing(five):
    study, df, events, executor = five
    assert len(df) == 6 and list(df.columns[:len(COLUMNS)]) == list(COLUMNS)
    assert df["candidate"].iloc[0] == "baseline" and df["family"].iloc[0] == "baseline"
    assert df["status"].tolist() == ["ok"] * 5 + ["error"]
    error = df.iloc[5]
    assert error["recipe"] == "compile(runtime=onnxruntime, provider=cuda)" and error["error"].startswith(
        "UnsupportedRecipe: "
    )
    assert error["error_type"] == "UnsupportedRecipe" and error["error_stage"] == "apply"
    ok = df[df["status"] == "ok"]
    for column in ("p50_ms", "p99_ms", "throughput_per_s", "quality", "quality_drop", "quality_drop_ci_low",
                   "agreement", "size_bytes", "cost_per_1m_usd"):
        assert ok[column].notna().all(), column
    assert ok["quality_drop"].iloc[0] == 0 and ok["agreement"].iloc[0] == 1
    assert {json.loads(r)["kind"] for r in df["recipe_json"]} == {"baseline", "quantize", "compile"}
    assert set(df["family"]) == {"baseline", "quantization", "compilation"}
    # one event per finished row, in order, with the results so far
    assert [e.candidate for e in events] == df["candidate"].tolist()
    assert all(isinstance(e, StudyEvent) and not e.cached for e in events)
    assert [len(e.results) for e in events] == [1, 2, 3, 4, 5, 6] and events[-1].done == events[-1].total == 6
    assert len(study.callback_errors) == 6
    assert len(list((study.results_dir / "rows").glob("*.json"))) == 6
    assert executor.ran == ["baseline"] + [r.name for r in FIVE]


def test_rerun_skips_stored_rows_and_retries_errors_on_request(five, digits, model):
    study, df, _, _ = five
    again = LoggingExecutor()
    rerun = Study(model, digits, FIVE, workload=FAST, results_dir=study.results_dir,
                  options=RunOptions(executor=again, progress=False))
    events = []
    rerun.subscribe(events.append)
    df2 = rerun.run()
    assert again.ran == [] and df2["cached"].all() and len(events) == 6 and all(e.cached for e in events)
    assert df2["fingerprint"].tolist() == df["fingerprint"].tolist()
    assert df2["p99_ms"].fillna(-1).tolist() == df["p99_ms"].fillna(-1).tolist()
    rerun.run(retry_errors=True)
    assert again.ran == ["compile(runtime=onnxruntime, provider=cuda)"]
    # another workload is another measurement: everything would run again
    other = Study(model, digits, FIVE, workload=Workload.smoke(threads=1, batch_size=4, memory=False,
                                                                  cold_start=False), results_dir=study.results_dir)
    assert not {t.fingerprint for t, _ in other._tasks()} & set(df["fingerprint"])


def test_recommend_and_frontier_on_real_rows(five):
    study, df, _, _ = five
    # From the stored measurements alone (no side-by-side re-timing) the fastest row wins.
    rec = study.recommend(max_p99_ms=1e4, max_quality_drop=0.05, objective="latency", retime=False)
    assert rec.met and rec.row["p99_ms"] == df[df["status"] == "ok"]["p99_ms"].min()
    # Re-timed interleaved, a runner-up that is clearly faster side by side may take the lead: the
    # winner is still one of the measured candidates, and the claim names how it was compared.
    retimed = study.recommend(max_p99_ms=1e4, max_quality_drop=0.05, objective="latency")
    assert retimed.met and retimed.candidate in set(df[df["status"] == "ok"]["candidate"])
    assert "side by side" in retimed.explanation or "too close to call" in retimed.explanation
    assert "compile(runtime=onnxruntime, provider=cuda)" in {r.candidate for r in rec.rejected}
    front = study.frontier()
    assert len(front) >= 1 and (front["status"] == "ok").all()
    with pytest.raises(ValueError, match="unknown objective"):
        study.recommend(objective="fastest")
    with pytest.raises(ValueError, match="use 0.01 for 1 percentage point"):
        study.recommend(max_quality_drop=2)
    costly = study.set_price("gpu-h100").results
    assert (costly["cost_per_1m_usd"].dropna() > df["cost_per_1m_usd"].dropna()).all()
    study.set_price(None)


def test_reference_rows_are_labelled_and_never_cache_hits(five, digits, model, tmp_path):
    study, _, _, _ = five
    executor = LoggingExecutor()
    local = Study(model, digits, [], workload=FAST, results_dir=tmp_path / "local",
                  options=RunOptions(executor=executor, progress=False))
    reference = local.load_reference(study.results_dir, label="H100", price_per_hour_usd="gpu-h100")
    assert len(reference) == 5 and (reference["status"] == "reference").all() and (reference["source"] == "H100").all()
    assert reference["candidate"].str.endswith("[H100]").all()
    assert (reference["price_per_hour_usd"] == 4.0).all()
    df = local.run()  # the reference folder holds this very fingerprint, yet the baseline is measured here
    assert executor.ran == ["baseline"]
    assert df["status"].tolist() == ["ok"] + ["reference"] * 5
    assert local.recommend().row["source"] == "local"
    assert len(list((tmp_path / "local" / "rows").glob("*.json"))) == 1


def test_incompatible_results_folder(digits, model, tmp_path):
    (tmp_path / MANIFEST).write_text(json.dumps({"format": "optlab-store", "format_version": 99}))
    with pytest.raises(IncompatibleStore, match="format version 99.*upgrade optlab"):
        Study(model, digits, [], workload=FAST, results_dir=tmp_path)


def test_bad_input(digits, model, tmp_path):
    empty = Study(model, digits, [], workload=FAST, results_dir=tmp_path, options=RunOptions(progress=False))
    with pytest.raises(ValueError, match="no results yet"):
        empty.recommend()
    with pytest.raises(TypeError, match="takes recipes"):
        empty.add(["quantize"])
    with pytest.raises(TypeError, match="Candidate or a torch.nn.Module"):
        Study("model.pt", digits, results_dir=tmp_path)
    with pytest.raises(ValueError, match="positive number of US dollars"):
        Study(model, digits, results_dir=tmp_path, pricing=Pricing(0))
    assert len(empty.add([Compile(), Compile()]).recipes) == 1  # duplicates ignored
    with pytest.raises(TypeError, match="unexpected keyword argument 'time_limit'.*RunOptions"):
        Study(model, digits, results_dir=tmp_path, time_limit=5)
    with pytest.raises(TypeError, match="options must be an optlab.study.options.RunOptions"):
        Study(model, digits, results_dir=tmp_path, options={"progress": False})


def test_the_constructor_takes_few_values_and_the_old_keywords_still_work_with_a_warning(digits, model, tmp_path):
    parameters = inspect.signature(Study.__init__).parameters
    assert len(parameters) - 1 <= 8, list(parameters)
    executor = LoggingExecutor()
    with pytest.warns(DeprecationWarning, match=r"pass options=RunOptions\(executor=\.\.\., progress=\.\.\., "
                                                 r"time_limit_s=\.\.\.\) and pricing=Pricing\(price_per_hour_usd"):
        old = Study(model, digits, [], results_dir=tmp_path, executor=executor, progress=False, time_limit_s=30,
                    price_per_hour_usd=0.3, utilisation=0.25)
    assert old.options == RunOptions(executor=executor, progress=False, time_limit_s=30)
    assert old.executor is executor and old.time_limit_s == 30 and old.progress is False
    assert old.price.price_per_hour_usd == 0.3 and old.utilisation == 0.25 and old.requests_per_s is None
    # named last, the keyword wins over the value it is folded into
    with pytest.warns(DeprecationWarning):
        both = Study(model, digits, [], results_dir=tmp_path, options=RunOptions(progress=False, verbose=True),
                     pricing=Pricing("cpu-large", requests_per_s=10), verbose=False, utilisation=0.9)
    assert both.options == RunOptions(progress=False) and both.pricing.requests_per_s == 10
    assert both.utilisation == 0.9 and both.price.price_per_hour_usd == 1.60
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        both.nope  # noqa: B018 - the attribute lookup is the test


def test_events_carry_the_rows_they_announce_priced_as_in_results(five):
    study, df, events, _ = five
    assert [len(e.rows) for e in events] == [1] * 6 and all(e.row is e.rows[-1] for e in events)
    for event, (_, line) in zip(events, df.iterrows(), strict=True):
        assert event.row["candidate"] == line["candidate"] and event.row["fingerprint"] == line["fingerprint"]
        for column in ("price_per_hour_usd", "cost_per_1m_usd", "p99_ms"):
            assert event.row[column] == line[column] or (pd.isna(event.row[column]) and pd.isna(line[column]))
    assert events[2].results["candidate"].tolist() == df["candidate"].tolist()[:3]  # as it was, read later


def test_memory_and_cold_start_are_measured(digits, model, tmp_path):
    workload = Workload.smoke(threads=1, memory=True, cold_start=True, cold_start_repeats=1)
    df = Study(model, digits, [], workload=workload, results_dir=tmp_path, options=RunOptions(progress=False)).run()
    assert df["status"].tolist() == ["ok"]
    assert df["peak_rss_mb"].iloc[0] > 0 and df["cold_start_ms"].iloc[0] > 0


KILL_SCRIPT = textwrap.dedent('''
    import os, sys, time
    from optlab.data import datasets as data
    from optlab.models import zoo
    from optlab.study.executor import InProcessExecutor
    from optlab.instruments.latency import Workload
    from optlab.recipes.recipe import Compile, Quantize
    from optlab.study.study import RunOptions, Study

    results_dir, log, delay = sys.argv[1], sys.argv[2], float(sys.argv[3])

    class Logged(InProcessExecutor):
        def run(self, fn, tasks):
            for task in tasks:
                with open(log, "a") as handle:
                    handle.write(task.name + "\\n"); handle.flush(); os.fsync(handle.fileno())
                row = fn(task)
                time.sleep(delay)  # the candidate stays "in flight" a while
                yield row

    d = data.load("digits", smoke=True)
    model = zoo.get("digits", "student", smoke=True, data=d)
    recipes = [Compile(graph_level=level) for level in ("disabled", "basic", "extended", "all")]
    recipes.append(Quantize("bf16"))
    Study(model, d, recipes, workload=Workload.smoke(threads=1, memory=False, cold_start=False),
          results_dir=results_dir, options=RunOptions(executor=Logged(), progress=False)).run()
''')


def test_sigkill_mid_study_then_resume_runs_only_the_missing(tmp_path, model):
    script, log, results = tmp_path / "kill.py", tmp_path / "ran.log", tmp_path / "results"
    script.write_text(KILL_SCRIPT)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    process = subprocess.Popen([sys.executable, str(script), str(results), str(log), "0.6"], env=env, cwd=ROOT)
    rows = results / "rows"
    deadline = time.time() + 120
    while time.time() < deadline and process.poll() is None and len(list(rows.glob("*.json"))) < 2:
        time.sleep(0.05)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL, "the study finished before it could be killed"
    stored = {json.loads(p.read_text())["row"]["recipe"] for p in rows.glob("*.json")}
    first_run = log.read_text().splitlines()
    assert 2 <= len(stored) < 6

    log.unlink()
    subprocess.run([sys.executable, str(script), str(results), str(log), "0"], env=env, cwd=ROOT, check=True,
                   timeout=300)
    second_run = log.read_text().splitlines()
    everything = [
        "baseline",
        "compile(runtime=onnxruntime, graph_level=disabled)",
        "compile(runtime=onnxruntime, graph_level=basic)",
        "compile(runtime=onnxruntime, graph_level=extended)",
        "compile(runtime=onnxruntime)",
        "quantize(scheme=bf16, runtime=torch)",
    ]
    assert sorted(second_run) == sorted(set(everything) - stored)  # only what was missing ran again
    assert set(first_run) - stored <= set(second_run)  # the candidate in flight was lost, and only it
    final = {json.loads(p.read_text())["row"]["recipe"] for p in rows.glob("*.json")}
    assert final == set(everything)
    assert not list(rows.glob(".*.tmp"))


def test_ctrl_c_propagates_and_the_study_can_run_again(digits, model, tmp_path):
    class Interrupted(InProcessExecutor):
        def run(self, fn, tasks):
            raise KeyboardInterrupt
            yield  # a generator, like a real executor

    study = Study(model, digits, [], workload=FAST, results_dir=tmp_path,
                  options=RunOptions(executor=Interrupted(), progress=False))
    with pytest.raises(KeyboardInterrupt):
        study.run()
    assert not list((tmp_path / "rows").glob("*.json"))  # nothing stored: nothing was measured
    assert study.results["status"].tolist() == ["skipped"] and study.stop_reason == "interrupted"
    assert study.skipped == ["baseline"] and "interrupted" in study.results["error"].iloc[0]
    study.executor = InProcessExecutor()
    assert study.run()["status"].tolist() == ["ok"]  # not stuck in "already running"


def test_another_studys_folder_is_refused_before_any_work(five, digits, digits_model):
    study = five[0]
    stored = set(Store(study.results_dir).fingerprints())
    other = Study(digits_model, digits, [Quantize("bf16")], workload=FAST, results_dir=study.results_dir,
                  options=RunOptions(progress=False))
    with pytest.raises(OtherStudyFolder, match=r"holds another study's results \('baseline'\): baseline "):
        other.run()
    assert set(Store(study.results_dir).fingerprints()) == stored


def test_time_limit_names_what_was_not_run_and_the_next_run_completes(digits, model, tmp_path):
    study = Study(model, digits, FIVE[:3], workload=FAST, results_dir=tmp_path,
                  options=RunOptions(progress=False, time_limit_s=1.0))
    df = study.run()
    assert study.stop_reason == "time limit" and len(df) == 4
    assert set(df["status"]) <= {"ok", "skipped"} and (df["status"] == "skipped").sum() >= 1
    skipped = df[df["status"] == "skipped"]
    assert skipped["error"].str.contains("time limit \\(1 s\\)").all() and skipped["p99_ms"].isna().all()
    assert study.skipped == skipped["candidate"].tolist()
    assert len(Store(tmp_path)) == (df["status"] == "ok").sum()  # skipped rows are never stored
    again = Study(model, digits, FIVE[:3], workload=FAST, results_dir=tmp_path,
                  options=RunOptions(progress=False)).run()
    assert again["status"].tolist() == ["ok"] * 4 and again["cached"].tolist()[:1] == [df["status"].iloc[0] == "ok"]


def test_bad_time_limit_is_refused(digits, model, tmp_path):
    for bad in (0, -1, float("nan"), "20", True):
        with pytest.raises(ValueError, match="time_limit_s=.* must be a positive number"):
            Study(model, digits, [], results_dir=tmp_path, options=RunOptions(time_limit_s=bad))


def test_a_candidate_still_running_at_the_time_limit_is_stopped(digits, model, tmp_path):
    import dataclasses

    base = zoo.baseline(model, name="hangs-on-big-batches")
    state = {"finished": False}

    def predict(batch):
        if len(next(iter(batch.values()))) > 8:  # the evaluation pass: hangs far past the limit
            time.sleep(60)
            state["finished"] = True
        return base.predict_fn(batch)

    study = Study(dataclasses.replace(base, predict_fn=predict), digits, [Quantize("bf16")], workload=FAST,
                  results_dir=tmp_path, options=RunOptions(progress=False, time_limit_s=0.5))
    df = study.run()  # returns (no KeyboardInterrupt escapes) ...
    assert not state["finished"]  # ... because the sleeping call was stopped, not waited for
    assert study.stop_reason == "time limit" and df["status"].tolist() == ["skipped", "skipped"]
    assert len(Store(tmp_path)) == 0
    assert signal.getsignal(signal.SIGALRM) is signal.SIG_DFL and signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)


def test_ctrl_c_swallowed_inside_a_candidate_still_stops_the_study(digits, model, tmp_path):
    """A KeyboardInterrupt that lands in a library's destructor or callback is lost there; the
    study remembers the Ctrl-C and stops after the candidate in flight (stored), naming the rest."""
    import signal as signals

    class SwallowsCtrlC(InProcessExecutor):
        def run(self, fn, tasks):
            for i, task in enumerate(tasks):
                if i == 1:
                    try:
                        signals.raise_signal(signals.SIGINT)
                    except KeyboardInterrupt:
                        pass  # what "Exception ignored in ..." amounts to
                yield fn(task)

    # as in a terminal, whatever started the test run: SIGINT raises KeyboardInterrupt and is not blocked
    found, mask = signals.signal(signals.SIGINT, signals.default_int_handler), signals.pthread_sigmask(
        signals.SIG_UNBLOCK, [signals.SIGINT])
    try:
        study = Study(model, digits, FIVE[:3], workload=FAST, results_dir=tmp_path,
                      options=RunOptions(executor=SwallowsCtrlC(), progress=False))
        with pytest.raises(KeyboardInterrupt):
            study.run()
        assert signals.getsignal(signals.SIGINT) is signals.default_int_handler  # the handler is put back
    finally:
        signals.signal(signals.SIGINT, found)
        signals.pthread_sigmask(signals.SIG_SETMASK, mask)
    statuses = study.results["status"].tolist()
    assert statuses[:2] != ["skipped", "skipped"] and statuses.count("skipped") == 2, statuses
    assert study.stop_reason == "interrupted" and len(list((tmp_path / "rows").glob("*.json"))) == 2
