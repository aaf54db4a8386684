"""The same Study on a Ray cluster, with measurement that stays honest across nodes.

    study = Study(model, data, recipes, options=RunOptions(executor=RayExecutor()))

`RayExecutor` runs a study's tasks on Ray (`pip install optlab[distributed]`) behind the
`Executor` seam: the Study is unchanged, and only this process (the driver) writes rows to the
results folder, in the order they finish. What travels and why:

- Tasks carry references, never closures: the recipe, the fingerprint and the work folder
  (`Task`), plus the remaining seconds of the study's time limit (a `time.monotonic()` instant
  means nothing on another machine, so the deadline is sent as seconds left when the task is
  submitted, and tasks are submitted only as measurement slots free up, so they do not age in
  a queue).
- The shared context (data, workload, timed inputs, the baseline's reference outputs) goes
  once through Ray's object store (`ray.put`). The baseline is rebuilt on the worker from its
  loader (`Candidate.loader`: an ONNX Runtime session does not pickle, and a fresh build is
  what a fresh process would measure); a baseline without a loader is sent pickled, and one
  that cannot be pickled is refused before any work with the fix named.
- Measurement is serialised per node: every task needs one unit of the custom resource
  `optlab_measure`, which each node offers once. `run_task` builds, measures and evaluates in
  one call, so the whole task holds the slot (building does not overlap another candidate's
  timing on that node; nodes run in parallel). Not split into a build task outside the slot and
  a measuring task inside it: a build beside a measurement shares the node's memory bandwidth
  and caches (its cores too, unless pinned away), and the candidate a recipe returns (an ONNX
  Runtime session, a compiled module) does not cross processes, so the measuring task would
  time a candidate reloaded from its artifact, not the one the in-process study times.
  `python -m optlab.bench ray` prints the build's share of the slot: what a split could save.
  The task pins itself to the first `threads` cores it may use (`os.sched_setaffinity`,
  restored afterwards), so every candidate on a node is timed on the same cores. Each row says
  which node measured it (`node`, `node_id`), when the slot was held (`slot_started_at`,
  `slot_ended_at`: Unix seconds), and its environment columns come from that node (`measure`
  describes the machine it runs on).
- Faults: a worker killed mid-task is retried once (`max_retries=1`); a second death becomes an
  error row naming what happened (error_stage "worker"). A row is yielded once per task.
  Ctrl-C (KeyboardInterrupt, and the study's hard stop) cancels every outstanding task.

By default a local cluster is started, bound to 127.0.0.1 (no dashboard, no usage report;
`RAY_USAGE_STATS_ENABLED` and the SIGTERM handler Ray installs are put back by `shutdown()`).
`nodes=2` starts that many local nodes instead (Ray's test-cluster utility,
`ray.cluster_utils.Cluster`), each given its own slice of this machine's cores (a node label
its tasks pin inside) and one measurement slot: the mechanism of a multi-node cluster on one
host, where the nodes still share memory, caches and the machine's load, so it shows the
scheduling, not a multi-machine speed-up.
`address="host:port"` joins an existing cluster whose nodes were started with
`ray start ... --resources='{"optlab_measure": 1}'`.

Artifacts: a recipe writes its files into the task's work folder. Without `storage` that is the
results folder's `artifacts/` path, on the node that built it (on one host, the driver's
folder; on several machines the row's `artifact_path` names a path on the node in its `node`
column). `storage="/shared/path"` sends every task's work folder there instead (a mount all
nodes share, say), so the row's `artifact_path` is under it; before any work a probe task on
every measuring node writes and removes a file there, and a folder one of them cannot write is
refused in one line. The baseline's loader artifact must be readable at the same path on every
node. A study's fingerprint records the driver's machine; a row measured on a node whose
machine differs says so in its notes.
"""
from __future__ import annotations

import functools
import os
import signal
import socket
import time
import uuid
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from optlab.study import fingerprint as fp
from optlab.study.executor import Task, TaskContext, recipe_fields, run_task, skipped_row

MEASURE = "optlab_measure"
LOCAL_START_ATTEMPTS = 2  # a local node that misses Ray's fixed 30 s start-up deadline (a busy machine) starts again
CORES_LABEL = "optlab-cores"  # a local node's slice of this machine's cores ("0.1"), see _start_local_nodes
CONNECT_TIMEOUT_S = 3.0
RAY_ERRORS_RETRIED = 1  # a worker killed mid-task runs once more, then its task is an error row


class RayExecutorError(RuntimeError):
    """A Ray setup or input problem found before any work (one line, with the fix)."""


@dataclass(frozen=True)
class PortableBaseline:
    """A baseline Candidate that can cross a process boundary: its fields without `predict_fn`,
    which the worker rebuilds from `loader` (or `predict_fn` itself when there is no loader)."""

    candidate: Any  # the Candidate with predict_fn=None (loader set) or as is (no loader)

    @classmethod
    def of(cls, candidate: Any) -> "PortableBaseline":
        if candidate.loader and candidate.artifact_path is not None:
            return cls(replace(candidate, predict_fn=None))
        return cls(candidate)

    def rebuild(self) -> Any:
        candidate = self.candidate
        if candidate.predict_fn is not None:
            return candidate
        module, _, name = candidate.loader.partition(":")
        import importlib

        load = getattr(importlib.import_module(module), name)
        return replace(candidate, predict_fn=load(candidate.artifact_path, **candidate.loader_options))


@dataclass(frozen=True)
class Shipped:
    """What every task of one run shares, sent once through the object store."""

    token: str
    baseline: PortableBaseline
    data: Any
    workload: Any
    inputs: Any
    baseline_outputs: Any
    verbose: bool
    stop_note: str
    driver_machine: dict[str, Any]


def _describe_pickle_failure(name: str, value: Any) -> str | None:
    """None if `value` pickles with Ray's cloudpickle, else the reason in a few words."""
    from ray import cloudpickle  # Ray's own pickler: what ray.put and task arguments use

    try:
        cloudpickle.dumps(value)
    except Exception as error:  # noqa: BLE001 - any pickling failure is reported with its reason
        return f"{name} cannot be sent to Ray workers ({type(error).__name__}: {str(error).splitlines()[0]})"
    return None


def check_shippable(context: TaskContext, tasks: Sequence[Task]) -> None:
    """Raise RayExecutorError (one line, naming the fix) when a part of the run does not pickle."""
    baseline = PortableBaseline.of(context.baseline)
    problem = _describe_pickle_failure("the baseline", baseline)
    if problem:
        raise RayExecutorError(
            f"{problem}: give the baseline a loader (Candidate(loader='module:function', artifact_path=...)), "
            f"or pass a torch.nn.Module / build it with optlab.models.zoo.baseline, or define its predict "
            f"function at module level without unpicklable state (sessions, locks, open files)")
    for name, value in (("the data", context.data), ("the workload", context.workload),
                        ("the timed inputs", context.inputs)):
        problem = _describe_pickle_failure(name, value)
        if problem:
            raise RayExecutorError(f"{problem}: keep it to plain arrays and dataclasses")
    for task in tasks:
        problem = _describe_pickle_failure(f"the recipe {task.name!r}", task)
        if problem:
            raise RayExecutorError(f"{problem}: recipes are frozen dataclasses of plain values")


def _on_loopback(address: str) -> bool:
    """Whether "host:port" names this machine's loopback interface (127.x.x.x, localhost, ::1)."""
    host = address.rpartition(":")[0].strip("[]")
    return host in ("localhost", "::1") or host.startswith("127.")


def _check_reachable(address: str) -> None:
    """Fail at once, in one line, when `host:port` accepts no connection (Ray itself retries for long)."""
    if address in ("auto", "local") or address.startswith("ray://"):
        return
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise RayExecutorError(f"address={address!r} is not host:port (e.g. '10.0.0.5:6379'), 'auto' or None")
    try:
        socket.create_connection((host, int(port)), timeout=CONNECT_TIMEOUT_S).close()
    except OSError as error:
        raise RayExecutorError(
            f"cannot reach a Ray cluster at {address} ({error.strerror or error}): start one there with "
            f"`ray start --head --port={port} --resources='{{\"{MEASURE}\": 1}}'`, or pass address=None "
            f"for a local cluster") from None


class RayExecutor:
    """Runs a Study's tasks on Ray; see the module docstring for what travels and how timing stays honest.

    address: None starts a local cluster bound to 127.0.0.1 (`num_cpus` cores, default all); a
    "host:port" joins that cluster (checked reachable at once). nodes: local nodes to start
    (address None only), each with `num_cpus` cores (default: this machine's cores split evenly)
    and one measurement slot. storage: the folder every task writes its artifacts into (default:
    the results folder's), checked writable on every measuring node before work. init_options:
    more `ray.init` keywords (`_temp_dir` for Ray's own session files). Use as a context manager,
    or call `shutdown()`, to stop a cluster it started.
    """

    def __init__(self, address: str | None = None, storage: str | os.PathLike | None = None, *,
                 num_cpus: int | None = None, nodes: int = 1, init_options: dict[str, Any] | None = None):
        if not isinstance(nodes, int) or nodes < 1:
            raise RayExecutorError(f"nodes={nodes!r}: give a whole number of local nodes, 1 or more")
        if address is not None and nodes != 1:
            raise RayExecutorError(f"nodes={nodes} starts local nodes, but address={address!r} joins a cluster: "
                                   f"drop one (a joined cluster's nodes are started with `ray start`)")
        if address is not None:
            _check_reachable(address)
        self.address, self.num_cpus, self.nodes = address, num_cpus, nodes
        self.storage = None if storage is None else Path(storage).expanduser().absolute()
        self.init_options = dict(init_options or {})
        self._started = False
        self._restore: dict[str, Any] = {}
        self._remote = None
        self._local_nodes = None  # the ray.cluster_utils.Cluster of nodes > 1
        self._storage_checked = False

    def __repr__(self) -> str:
        nodes = f", nodes={self.nodes}" if self.nodes != 1 else ""
        storage = f", storage={os.fspath(self.storage)!r}" if self.storage is not None else ""
        return f"RayExecutor(address={self.address!r}{nodes}{storage})"

    def __enter__(self) -> "RayExecutor":
        return self

    def __exit__(self, *exc) -> None:
        self.shutdown()

    # -- the cluster ----------------------------------------------------------------------
    def start(self) -> "RayExecutor":
        """Join or start the cluster (once), then check it offers the measurement slot."""
        import ray  # optional dependency (optlab[distributed]): only a RayExecutor imports it

        if not ray.is_initialized():
            self._init(ray)
        slots = ray.cluster_resources().get(MEASURE, 0)
        if slots < 1:
            where = self.address or "the running Ray session"
            raise RayExecutorError(
                f"the Ray cluster at {where} has no {MEASURE!r} resource, so measurements could overlap on "
                f"a node: start each node with `ray start ... --resources='{{\"{MEASURE}\": 1}}'`")
        return self

    def _init(self, ray) -> None:
        from ray._private import ray_constants  # where Ray decides to bind a lone node to loopback

        self._restore = {"usage": os.environ.get("RAY_USAGE_STATS_ENABLED"),
                         "sigterm": signal.getsignal(signal.SIGTERM)}
        os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
        options = {"include_dashboard": False, "log_to_driver": False, "configure_logging": False,
                   **self.init_options}
        address = self.address
        if self.address is None and self.nodes == 1:
            options.update(num_cpus=self.num_cpus, resources={MEASURE: 1})
        cluster = ray_constants.ENABLE_RAY_CLUSTER
        # a local cluster, or one joined on this machine's loopback address: keep 127.0.0.1 (Ray otherwise
        # swaps "127.0.0.1:port" for this machine's LAN address, where such a cluster does not listen)
        ray_constants.ENABLE_RAY_CLUSTER = self.address is not None and not _on_loopback(self.address)
        try:
            if self.address is None and self.nodes > 1:
                self._local_nodes = _start_local_nodes(self.nodes, self.num_cpus, options.pop("_temp_dir", None))
                address = self._local_nodes.address
            # "local": always a new cluster, never one that `ray start` (or RAY_ADDRESS) left on this machine
            ray.init(address=address or "local", **options)
        except Exception as error:  # noqa: BLE001 - Ray's connection errors are long; one line with the fix
            self._stop_local_nodes()
            self._put_back()
            hint = ("; a cluster with token authentication (Ray's default) also needs its token on this "
                    "machine (RAY_AUTH_TOKEN, see Ray's token-auth docs)" if self.address else "")
            raise RayExecutorError(f"could not start or join Ray at {self.address or 'a local cluster'}: "
                                   f"{type(error).__name__}: {str(error).splitlines()[0]}{hint}") from None
        finally:
            ray_constants.ENABLE_RAY_CLUSTER = cluster
        self._started = True

    def _put_back(self) -> None:
        if not self._restore:
            return
        usage = self._restore.pop("usage")
        if usage is None:
            os.environ.pop("RAY_USAGE_STATS_ENABLED", None)
        else:
            os.environ["RAY_USAGE_STATS_ENABLED"] = usage
        sigterm = self._restore.pop("sigterm")
        if sigterm is not None:
            signal.signal(signal.SIGTERM, sigterm)

    def shutdown(self) -> None:
        """Stop the Ray session this executor started (a joined cluster keeps running)."""
        if self._started:
            import ray  # optional dependency

            ray.shutdown()
            self._started = False
            self._remote = None
            self._storage_checked = False
        self._stop_local_nodes()
        self._put_back()

    def _stop_local_nodes(self) -> None:
        if self._local_nodes is not None:
            nodes, self._local_nodes = self._local_nodes, None
            nodes.shutdown()  # kills their processes and removes the address file Cluster wrote

    def slots(self) -> int:
        """Measurement slots in the cluster (one per node that offers `optlab_measure`)."""
        import ray  # optional dependency

        return int(ray.cluster_resources().get(MEASURE, 0))

    # -- running ------------------------------------------------------------------------------
    def run(self, fn: Callable[[Task], dict[str, Any]], tasks: Sequence[Task]) -> Iterator[dict[str, Any]]:
        """Yield one row per task as it finishes (see the module docstring). `fn` must be the
        Study's `functools.partial(run_task, context)`; any other function is sent pickled."""
        tasks = list(tasks)
        context = _context_of(fn)
        if context is not None:
            check_shippable(context, tasks)
        else:
            problem = _describe_pickle_failure("the task function", fn)
            if problem:
                raise RayExecutorError(f"{problem}: define it at module level")
        self.start()
        import ray  # optional dependency

        _check_fits(ray, int(getattr(getattr(context, "workload", None), "threads", None) or 1))
        if self.storage is not None:
            self._check_storage(ray)
            tasks = [replace(task, workdir=self.storage / task.workdir.name) for task in tasks]
        remote = self._remote_task(ray)
        shipped = None if context is None else ray.put(self._shipped(context))
        return self._loop(ray, remote, fn, context, shipped, tasks)

    def _check_storage(self, ray) -> None:
        """Refuse (one line) a storage folder that a measuring node cannot create and write."""
        if self._storage_checked:
            return
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        probe = ray.remote(num_cpus=0, max_retries=0)(_probe_storage)
        nodes = [node["NodeID"] for node in ray.nodes()
                 if node.get("Alive") and node.get("Resources", {}).get(MEASURE, 0) >= 1]
        refs = [probe.options(scheduling_strategy=NodeAffinitySchedulingStrategy(node, soft=False))
                .remote(os.fspath(self.storage)) for node in nodes]
        for node, problem in zip(nodes, ray.get(refs), strict=True):
            if problem:
                raise RayExecutorError(
                    f"storage={os.fspath(self.storage)!r} cannot be written on Ray node {node[:12]} ({problem}): "
                    f"give a folder every node can create and write (a shared mount), or storage=None to "
                    f"keep artifacts in the results folder")
        self._storage_checked = True

    def _remote_task(self, ray):
        if self._remote is None:
            self._remote = ray.remote(max_retries=RAY_ERRORS_RETRIED, retry_exceptions=False)(_remote_run)
        return self._remote

    @staticmethod
    def _shipped(context: TaskContext) -> Shipped:
        return Shipped(uuid.uuid4().hex, PortableBaseline.of(context.baseline), context.data, context.workload,
                       context.inputs, context.baseline_outputs, context.verbose, context.stop_note, fp.machine())

    def _loop(self, ray, remote, fn, context, shipped, tasks: list[Task]) -> Iterator[dict[str, Any]]:
        waiting, running, seen = list(tasks), {}, set()
        threads = int(getattr(getattr(context, "workload", None), "threads", None) or 1)
        slots = max(self.slots(), 1)  # submit only what can start now: a queued task's time limit would age
        try:
            while waiting or running:
                while waiting and len(running) < slots:
                    task = waiting.pop(0)
                    left = _seconds_left(context)
                    if left is not None and left <= context.min_start_s:
                        yield skipped_row(context, task, context.stop_note)
                        continue
                    start_s = 0.0 if context is None else context.min_start_s
                    ref = remote.options(num_cpus=threads, resources={MEASURE: 1}).remote(
                        shipped, None if context is not None else fn, left, start_s, task, threads)
                    running[ref] = task
                if not running:
                    continue
                done, _ = ray.wait(list(running), num_returns=1, timeout=1.0)  # a timeout lets Ctrl-C land
                if not done:
                    continue
                task = running.pop(done[0])
                row = _result(ray, done[0], task, context)
                if row.get("fingerprint") in seen:
                    continue
                seen.add(row.get("fingerprint"))
                yield row
        finally:  # Ctrl-C, the hard stop, or the caller stopped reading: nothing keeps running
            for ref in running:
                ray.cancel(ref, force=True)


def _start_local_nodes(nodes: int, num_cpus: int | None, temp_dir: str | None):
    """`nodes` Ray nodes on this machine (ray.cluster_utils.Cluster), each given its own slice of
    the cores as the node label `optlab-cores` ("0.1": cores 0 and 1), inside which its tasks pin
    themselves. The nodes' own processes keep every core: confined to one core, a node on a busy
    2-core machine missed Ray's 30 s start-up deadline."""
    from ray.cluster_utils import Cluster  # Ray's own utility for several nodes on one host

    cores = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else list(range(os.cpu_count() or 1))
    per = num_cpus or max(len(cores) // nodes, 1)
    slices = [cores[(i * per) % len(cores):][:per] or cores[:per] for i in range(nodes)]
    common = {"resources": {MEASURE: 1}, "node_ip_address": "127.0.0.1", "include_dashboard": False}
    if temp_dir is not None:
        common["temp_dir"] = temp_dir
    attempts_left = LOCAL_START_ATTEMPTS
    while True:
        local = Cluster()
        try:
            for cores_of_node in slices:
                local.add_node(num_cpus=len(cores_of_node), labels={CORES_LABEL: ".".join(map(str, cores_of_node))},
                               **common)
            return local
        except BaseException as error:
            # a node that missed Ray's start-up deadline leaves its processes to Ray's exit hook
            local.shutdown()
            attempts_left -= 1
            if not attempts_left or not isinstance(error, Exception) or "timed out during startup" not in str(error):
                raise


def _node_cores(ray) -> set[int] | None:
    """The cores this node's label `optlab-cores` gives it (local nodes), None when unlabelled."""
    label = ray.get_runtime_context().get_node_labels().get(CORES_LABEL)
    if isinstance(label, (list, tuple)):
        label = label[0] if label else None
    try:
        return {int(core) for core in label.split(".")} if label else None
    except ValueError:
        return None


def _probe_storage(folder: str) -> str | None:
    """On a node: None if `folder` can be created and a file written and removed there, else why not."""
    probe = Path(folder) / f".optlab-probe-{socket.gethostname()}-{os.getpid()}"
    try:
        Path(folder).mkdir(parents=True, exist_ok=True)
        probe.write_bytes(b"ok")
        probe.unlink()
    except OSError as error:
        return f"{type(error).__name__}: {error.strerror or error}"
    return None


def _check_fits(ray, threads: int) -> None:
    """Refuse a workload whose threads no measuring node has (Ray would queue its tasks forever)."""
    cpus = [node.get("Resources", {}).get("CPU", 0) for node in ray.nodes()
            if node.get("Alive") and node.get("Resources", {}).get(MEASURE, 0) >= 1]
    if cpus and max(cpus) < threads:
        raise RayExecutorError(f"the workload times with threads={threads}, but the Ray nodes with a measurement "
                               f"slot have at most {max(cpus):g} CPUs: lower Workload(threads=...) or add a "
                               f"larger node")


def _context_of(fn: Callable) -> TaskContext | None:
    """The TaskContext inside the Study's `partial(run_task, context)`, or None for another function."""
    if isinstance(fn, functools.partial) and fn.func is run_task and fn.args and isinstance(fn.args[0], TaskContext):
        return fn.args[0]
    return None


def _seconds_left(context: TaskContext | None) -> float | None:
    if context is None or context.deadline is None:
        return None
    return context.deadline - time.monotonic()


def _result(ray, ref, task: Task, context: TaskContext | None) -> dict[str, Any]:
    """The task's row, or an error row when its worker died (after the retry) or Ray failed it."""
    try:
        return ray.get(ref)
    except ray.exceptions.RayTaskError as error:  # fn raised (run_task itself never does): name it
        cause = error.cause if getattr(error, "cause", None) is not None else error
        what = f"{type(cause).__name__}: {str(cause).splitlines()[0] if str(cause) else ''}"
        return _worker_error_row(task, context, type(cause).__name__, what)
    except ray.exceptions.RayError as error:
        what = (f"{type(error).__name__}: the Ray worker running it died {RAY_ERRORS_RETRIED + 1} times "
                f"(killed, out of memory, or its node left); {str(error).splitlines()[0]}")
        return _worker_error_row(task, context, type(error).__name__, what)


def _worker_error_row(task: Task, context: TaskContext | None, error_type: str, what: str) -> dict[str, Any]:
    row = {"candidate": task.name if task.recipe is not None or context is None
           else context.baseline.name or "baseline",
           "status": "error", "error": what, "error_type": error_type, "error_stage": "worker",
           "error_traceback": None, "runtime": getattr(task.recipe, "runtime", None),
           "fingerprint": task.fingerprint, "source": "local"}
    row.update(recipe_fields(task.recipe))
    return row


# -- on the worker ------------------------------------------------------------------------------
_CONTEXTS: dict[str, TaskContext] = {}  # token -> the rebuilt context, kept while this worker lives


def _rebuilt(shipped: Shipped) -> TaskContext:
    """The run's TaskContext on this worker, the baseline rebuilt once per worker and run."""
    context = _CONTEXTS.get(shipped.token)
    if context is None:
        _CONTEXTS.clear()  # one run at a time: drop the previous run's baseline
        context = TaskContext(shipped.baseline.rebuild(), shipped.data, shipped.workload, shipped.inputs,
                              shipped.baseline_outputs, verbose=shipped.verbose, stop_note=shipped.stop_note)
        _CONTEXTS[shipped.token] = context
    return context


def _remote_run(shipped: Shipped | None, fn: Callable | None, left: float | None, min_start_s: float,
                task: Task, threads: int) -> dict[str, Any]:
    """One task on a worker, holding its node's measurement slot, pinned to `threads` cores.
    `left`: seconds of the study's time limit left when it was submitted (None: no limit)."""
    import ray  # runs inside a Ray worker

    allowed = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    mine = _node_cores(ray)  # a local node's own slice of the machine's cores
    pinned = ([core for core in allowed if mine is None or core in mine] or allowed)[:max(threads, 1)]
    started = time.time()
    if pinned:
        os.sched_setaffinity(0, pinned)
    try:
        if shipped is not None:
            context = _rebuilt(shipped)
            context.deadline = None if left is None else time.monotonic() + left
            context.min_start_s = min_start_s
            row = run_task(context, task)
            _note_machine(row, shipped.driver_machine)
        else:
            row = fn(task)
    finally:
        if pinned:
            os.sched_setaffinity(0, allowed)
    row.update(node=socket.gethostname(), node_id=ray.get_runtime_context().get_node_id(),
               slot_started_at=started, slot_ended_at=time.time(),
               pinned_cores=" ".join(map(str, pinned)) or None)
    return row


def _note_machine(row: dict[str, Any], driver_machine: dict[str, Any]) -> None:
    """Say so in the row when this node's machine differs from the one the study's fingerprint names."""
    here = fp.machine()
    differs = sorted(k for k in set(here) | set(driver_machine) if here.get(k) != driver_machine.get(k))
    if differs:
        note = f"measured on {socket.gethostname()}, whose {', '.join(differs)} differ from the driver's machine"
        row["notes"] = "; ".join(part for part in (row.get("notes"), note) if part)

