"""RayExecutor: the same study on a local Ray cluster of two nodes (127.0.0.1, one CPU and one
measurement slot each, Ray's test-cluster utility).

One cluster for the module (starting Ray takes most of this file's time); the zoo's tiny digits
student and three real recipes (one fails here: no CUDA), as tests/study/test_study.py runs them."""
import functools
import os
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

ray = pytest.importorskip("ray", reason="optlab[distributed] (ray) is not installed")

from optlab.data import datasets  # noqa: E402 - after the skip: without ray nothing here runs
from optlab.instruments.environment import environment  # noqa: E402
from optlab.instruments.latency import Workload  # noqa: E402
from optlab.models import zoo  # noqa: E402
from optlab.models.candidate import Candidate  # noqa: E402
from optlab.recipes.recipe import Compile, Quantize  # noqa: E402
from optlab.study import ray_executor  # noqa: E402
from optlab.study.executor import Task, TaskContext  # noqa: E402
from optlab.study.ray_executor import MEASURE, RayExecutor, RayExecutorError, _remote_run  # noqa: E402
from optlab.study.study import RunOptions, Study  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
FAST = Workload.smoke(threads=1, throughput_batch_sizes=(8,), memory=False, cold_start=False, sweep_budget_s=1.0)
RECIPES = [Quantize("dynamic-int8"), Compile(graph_level="basic"), Compile(provider="cuda")]  # the last: no CUDA


@pytest.fixture(scope="module")
def cluster():
    usage, sigterm = os.environ.get("RAY_USAGE_STATS_ENABLED"), signal.getsignal(signal.SIGTERM)
    executor = RayExecutor(nodes=2, num_cpus=1).start()
    assert executor.slots() == 2
    yield executor
    executor.shutdown()
    assert os.environ.get("RAY_USAGE_STATS_ENABLED") == usage  # put back
    assert signal.getsignal(signal.SIGTERM) is sigterm  # ray.init installs its own
    assert not ray.is_initialized()
    assert not executor._local_nodes  # both nodes stopped


@pytest.fixture(scope="module")
def digits():
    return datasets.load("digits", smoke=True)


@pytest.fixture(scope="module")
def model(digits):
    return zoo.get("digits", "student", smoke=True, data=digits)


@pytest.fixture(scope="module")
def both(cluster, digits, model, tmp_path_factory):
    """The study in process, and on Ray in two runs: the baseline alone first (a driver that stopped
    after one task), then the full study in the same folder, its artifacts sent to a storage folder
    (a second executor on the same running cluster)."""
    here = Study(model, digits, RECIPES, workload=FAST, results_dir=tmp_path_factory.mktemp("here"),
                 options=RunOptions(progress=False)).run()
    folder = tmp_path_factory.mktemp("ray")
    first = Study(model, digits, [], workload=FAST, results_dir=folder,
                  options=RunOptions(executor=cluster, progress=False)).run()
    stored = RayExecutor(storage=folder / "elsewhere")
    on_ray = Study(model, digits, RECIPES, workload=FAST, results_dir=folder,
                   options=RunOptions(executor=stored, progress=False)).run()
    return here, first, on_ray, folder


def test_the_same_rows_as_in_process(both):
    here, _, on_ray, folder = both
    for column in ("candidate", "recipe", "status", "error_type"):
        assert on_ray[column].fillna("-").tolist() == here[column].fillna("-").tolist(), column
    assert on_ray["status"].tolist() == ["ok", "ok", "ok", "error"]
    assert on_ray["quality"].iloc[:3].tolist() == pytest.approx(here["quality"].iloc[:3].tolist(), abs=1e-9)
    assert on_ray["agreement"].iloc[:3].tolist() == pytest.approx(here["agreement"].iloc[:3].tolist(), abs=1e-9)
    assert on_ray["p50_ms"].iloc[:3].notna().all()
    assert len(list((folder / "rows").glob("*.json"))) == 4  # the driver stored each row once


def test_each_row_names_the_node_that_measured_it(both, cluster):
    _, _, on_ray, _ = both
    nodes = {node["NodeID"] for node in ray.nodes() if node["Alive"]}
    assert (on_ray["node"] == socket.gethostname()).all() and on_ray["node_id"].isin(nodes).all()
    assert on_ray["pinned_cores"].str.split().str.len().eq(FAST.threads).all()  # pinned to `threads` cores
    assert on_ray.groupby("node_id")["pinned_cores"].nunique().eq(1).all()  # inside its node's core slice
    if len(os.sched_getaffinity(0)) >= 2:  # each local node on its own core
        assert on_ray.groupby("pinned_cores")["node_id"].nunique().eq(1).all()
    assert (on_ray["cpu_model"].iloc[:3] == environment().cpu_model).all()


def test_no_two_measurements_overlap_on_a_node_and_both_nodes_measured(both):
    _, _, on_ray, _ = both
    # two slots: the first two recipes were sent at once, so each node measured at least one
    assert on_ray["node_id"].nunique() == 2, on_ray[["candidate", "node_id"]]
    for _, rows in on_ray.groupby("node_id"):
        spans = sorted(zip(rows["slot_started_at"], rows["slot_ended_at"], strict=True))
        assert all(start < end for start, end in spans)
        assert all(later[0] >= earlier[1] for earlier, later in zip(spans, spans[1:], strict=False)), spans


def test_artifacts_go_to_the_storage_folder_and_rows_say_where(both):
    _, _, on_ray, folder = both
    built = on_ray[on_ray["recipe"].ne("baseline") & on_ray["status"].eq("ok")]
    assert len(built) == 2
    for path in built["artifact_path"]:
        assert Path(path).is_relative_to(folder / "elsewhere") and Path(path).exists(), path
    assert not list((folder / "artifacts").glob("*/*.onnx"))  # none in the results folder's own


def test_a_storage_folder_a_node_cannot_write_is_refused_before_work(cluster, model, digits, tmp_path):
    (tmp_path / "a-file").write_text("not a folder")
    executor = RayExecutor(storage=tmp_path / "a-file" / "artifacts")
    study = Study(model, digits, RECIPES[:1], workload=FAST, results_dir=tmp_path / "results",
                  options=RunOptions(executor=executor, progress=False))
    with pytest.raises(RayExecutorError, match=r"storage=.*a-file/artifacts' cannot be written on Ray node "
                                               r"\w+ \((NotADirectoryError|FileExistsError).*a shared mount") as raised:
        study.run()
    assert "\n" not in str(raised.value)
    assert not list((tmp_path / "results" / "rows").glob("*.json"))


def test_resume_runs_only_the_missing_tasks(both):
    _, first, on_ray, _ = both
    assert first["candidate"].tolist() == ["baseline"] and not first["cached"].any()
    assert on_ray["cached"].tolist() == [True, False, False, False]
    assert on_ray["fingerprint"].iloc[0] == first["fingerprint"].iloc[0]
    assert on_ray["slot_started_at"].iloc[0] == first["slot_started_at"].iloc[0]  # not measured again


def test_an_unserialisable_baseline_is_refused_before_any_work(cluster, model, digits, tmp_path):
    base = zoo.baseline(model, name="digits-student")
    lock = threading.Lock()

    def predict(batch):
        with lock:  # a lock (like an ONNX Runtime session) does not pickle
            return base.predict_fn(batch)

    closure = Candidate(name="closure", predict_fn=predict, model=model)
    study = Study(closure, digits, RECIPES[:1], workload=FAST, results_dir=tmp_path,
                  options=RunOptions(executor=cluster, progress=False))
    with pytest.raises(RayExecutorError, match=r"the baseline cannot be sent to Ray workers \(TypeError: .*lock.*"
                                               r"give the baseline a loader") as raised:
        study.run()
    assert "\n" not in str(raised.value)
    assert not list((tmp_path / "rows").glob("*.json"))


def _die(attempts: Path, task: Task) -> dict:
    """A task whose worker is killed every time it runs (it counts its attempts in files)."""
    attempts.mkdir(exist_ok=True)
    (attempts / str(len(list(attempts.iterdir())))).touch()
    os._exit(1)


def test_a_worker_killed_twice_is_one_error_row(cluster, tmp_path):
    from ray import cloudpickle

    module = sys.modules[__name__]
    cloudpickle.register_pickle_by_value(module)  # the workers cannot import this test module
    try:
        task = Task(None, "cd" * 32, tmp_path / "work")
        rows = list(cluster.run(functools.partial(_die, tmp_path / "attempts"), [task]))
    finally:
        cloudpickle.unregister_pickle_by_value(module)
    assert len(rows) == 1 and rows[0]["status"] == "error" and rows[0]["error_stage"] == "worker"
    assert rows[0]["fingerprint"] == "cd" * 32 and "died 2 times" in rows[0]["error"]
    assert len(list((tmp_path / "attempts").iterdir())) == 2  # the first run and one retry


def test_bad_addresses_and_a_cluster_without_the_slot(cluster, monkeypatch):
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    with pytest.raises(RayExecutorError, match=f"cannot reach a Ray cluster at 127.0.0.1:{port} .*ray start --head"):
        RayExecutor(address=f"127.0.0.1:{port}")
    with pytest.raises(RayExecutorError, match="is not host:port"):
        RayExecutor(address="somewhere")
    with pytest.raises(RayExecutorError, match="nodes=2 starts local nodes, but address='somewhere:1' joins"):
        RayExecutor(address="somewhere:1", nodes=2)
    with pytest.raises(RayExecutorError, match="nodes=0: give a whole number of local nodes, 1 or more"):
        RayExecutor(nodes=0)
    monkeypatch.setattr(ray, "cluster_resources", lambda: {"CPU": 2.0})
    with pytest.raises(RayExecutorError, match=f"has no '{MEASURE}' resource.*--resources"):
        cluster.start()


def test_import_optlab_does_not_import_ray():
    code = "import sys, optlab; optlab.RayExecutor; print('ray' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert out.stdout.strip() == "False"


def _linger(folder: Path, task: Task) -> dict:
    """A task that says it started (its pid) and would finish only after a long wait."""
    import time

    (folder / "pid").write_text(str(os.getpid()))
    time.sleep(60)
    (folder / "finished").touch()
    return {"fingerprint": task.fingerprint, "status": "ok"}


def test_ctrl_c_cancels_the_outstanding_tasks(cluster, tmp_path):
    import time

    from ray import cloudpickle

    interrupted = threading.Event()

    def interrupt_once_started():
        for _ in range(1200):  # a worker can take many seconds to start on 2 busy cores
            if (tmp_path / "pid").exists():
                break
            time.sleep(0.05)
        while not interrupted.is_set():  # Ctrl-C until it lands: one that arrives inside Ray's C++ wait can be lost
            os.kill(os.getpid(), signal.SIGINT)
            interrupted.wait(1.0)

    def on_ctrl_c(_signum, _frame):  # the first Ctrl-C that lands interrupts; later ones (in flight) are ignored
        if not interrupted.is_set():
            interrupted.set()
            raise KeyboardInterrupt

    module = sys.modules[__name__]
    cloudpickle.register_pickle_by_value(module)
    timer = threading.Thread(target=interrupt_once_started, daemon=True)
    previous = signal.signal(signal.SIGINT, on_ctrl_c)
    try:
        timer.start()
        with pytest.raises(KeyboardInterrupt):
            list(cluster.run(functools.partial(_linger, tmp_path), [Task(None, "ef" * 32, tmp_path / "w")]))
    finally:
        interrupted.set()
        timer.join()
        signal.signal(signal.SIGINT, previous)
        cloudpickle.unregister_pickle_by_value(module)
    pid = int((tmp_path / "pid").read_text())
    for _ in range(100):  # ray.cancel(force=True) kills the worker running it
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.05)
    else:
        pytest.fail(f"the worker (pid {pid}) still runs the cancelled task")
    assert not (tmp_path / "finished").exists()


def test_the_time_limit_travels_as_seconds_left_and_the_affinity_is_put_back(cluster, model, digits, tmp_path):
    base = zoo.baseline(model, name="digits-student")
    shipped = RayExecutor._shipped(TaskContext(base, digits, FAST, digits.test.inputs, None,
                                               stop_note="not run: the limit"))
    assert shipped.baseline.candidate.predict_fn is None  # rebuilt from its loader on the worker
    task = Task(RECIPES[1], "ab" * 32, tmp_path / "work")
    before = os.sched_getaffinity(0)
    late = _remote_run(shipped, None, -1.0, 0.0, task, 1)  # no seconds left when it was sent
    assert late["status"] == "skipped" and late["error"] == "not run: the limit" and "p50_ms" not in late
    assert os.sched_getaffinity(0) == before and late["pinned_cores"] == str(min(before))
    try:
        on_time = _remote_run(shipped, None, 600.0, 0.0, task, 1)
    finally:
        ray_executor._CONTEXTS.clear()  # the rebuilt baseline this process kept as a worker would
    assert on_time["status"] == "ok" and on_time["slot_started_at"] < on_time["slot_ended_at"]
    assert os.sched_getaffinity(0) == before


def test_a_workload_wider_than_every_node_is_refused(cluster, model, digits, tmp_path):
    wide = Workload.smoke(threads=64, memory=False, cold_start=False)
    study = Study(model, digits, [], workload=wide, results_dir=tmp_path,
                  options=RunOptions(executor=cluster, progress=False))
    with pytest.raises(RayExecutorError, match="threads=64, but the Ray nodes with a measurement slot have at most 1 "):
        study.run()


DRIVER = """
import sys
from pathlib import Path

from optlab.data import datasets
from optlab.instruments.latency import Workload
from optlab.models import zoo
from optlab.recipes.recipe import Compile, Quantize
from optlab.study.ray_executor import RayExecutor
from optlab.study.study import RunOptions, Study

data = datasets.load("digits", smoke=True)
model = zoo.get("digits", "student", smoke=True, data=data)
fast = Workload.smoke(threads=1, throughput_batch_sizes=(8,), memory=False, cold_start=False, sweep_budget_s=1.0)
recipes = [Quantize("dynamic-int8"), Compile(graph_level="basic"), Compile(provider="cuda")]
Study(model, data, recipes, workload=fast, results_dir=Path(sys.argv[2]),
      options=RunOptions(executor=RayExecutor(address=sys.argv[1]), progress=False)).run()
"""  # the module's FAST and RECIPES, in a driver of its own that joins the module's cluster


def test_a_killed_driver_resumes_from_the_stored_rows(cluster, both, model, digits, tmp_path):
    import time

    folder = tmp_path / "results"
    driver = subprocess.Popen([sys.executable, "-c", DRIVER, cluster._local_nodes.address, str(folder)], cwd=ROOT,
                              env={**os.environ, "PYTHONPATH": str(ROOT)},
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        for _ in range(1800):  # up to 90 s on two busy cores: the driver imports, joins, then stores rows
            if list((folder / "rows").glob("*.json")) or driver.poll() is not None:
                break
            time.sleep(0.05)
        driver.kill()  # SIGKILL: no cleanup, as when a laptop's driver dies
    finally:
        _, err = driver.communicate(timeout=30)
    stored = {path.name for path in (folder / "rows").glob("*.json")}
    assert 1 <= len(stored) < 4, err.decode()[-2000:]  # killed mid-study
    resumed = Study(model, digits, RECIPES, workload=FAST, results_dir=folder,
                    options=RunOptions(executor=cluster, progress=False)).run()
    assert int(resumed["cached"].sum()) == len(stored)  # the stored rows, not run again
    assert resumed["candidate"].tolist() == both[0]["candidate"].tolist()  # every task, once
    assert resumed["status"].tolist() == ["ok", "ok", "ok", "error"]
    assert {path.name for path in (folder / "rows").glob("*.json")} >= stored
    assert len(list((folder / "rows").glob("*.json"))) == 4
