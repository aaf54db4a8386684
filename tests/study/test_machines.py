"""Machine labels from the fingerprint every row carries (hand-made rows, and one real row)."""
import pandas as pd
import pytest

from optlab.instruments.environment import environment
from optlab.instruments.latency import Workload
from optlab.instruments.quality import reference
from optlab.models import zoo
from optlab.study.executor import Task, TaskContext, run_task
from optlab.study.frontier import recommend
from optlab.study.machines import describe, machine_column, machine_key, machine_label, machines

EPYC = dict(cpu_model="AMD EPYC 7B13", cpu_flags="avx avx2 fma", cores=2)
XEON = dict(cpu_model="Intel Xeon Platinum 8480+", cpu_flags="avx avx2 avx512f amx_tile", cores=56)


def test_a_label_names_the_host_the_cpu_and_its_cores():
    assert machine_label({"node": "node-a", **EPYC}) == "node-a: AMD EPYC 7B13, 2 cores"
    assert machine_label({**EPYC, "cores": 2.0}) == "AMD EPYC 7B13, 2 cores"  # in process: no node; cores read as float
    # a CPU row and a CUDA row of one study on one machine: one machine (GPU columns follow the device)
    assert machine_key({"node": "g", **XEON, "gpu_name": "NVIDIA H100"}) == machine_key({"node": "g", **XEON})
    assert machine_label({"candidate": "hand-made", "node": float("nan")}) is None  # names no machine
    assert machine_key({"candidate": "x", "cpu_model": None, "gpu_name": "NVIDIA H100"}) is None


def test_two_ray_nodes_on_one_host_are_one_machine_and_hosts_differ():
    df = pd.DataFrame([{"candidate": "a", "node": "host", "node_id": "n1", **EPYC},
                       {"candidate": "b", "node": "host", "node_id": "n2", **EPYC},
                       {"candidate": "c", "node": "other", "node_id": "n3", **EPYC},
                       {"candidate": "d", "status": "error"}])
    assert machines(df) == {"host: AMD EPYC 7B13, 2 cores": 2, "other: AMD EPYC 7B13, 2 cores": 1}
    assert machine_column(df).tolist()[3] is None


def test_machines_that_differ_only_in_cpu_flags_get_different_labels():
    df = pd.DataFrame([{"node": "vm", **EPYC}, {"node": "vm", **EPYC, "cpu_flags": "avx"}])
    first, second = machine_column(df)
    assert first != second and first.startswith("vm: AMD EPYC 7B13, 2 cores (CPU flags ")
    assert describe({"A": 1, "B": 3}) == "'A' (1 row) and 'B' (3 rows)"


def test_a_real_rows_machine_and_the_same_row_from_another_host(tiny_digits, tmp_path):
    """A row run_task really measured names this machine; beside it, the same row as if another host
    had measured it makes recommend ask which machine (the columns are the ones a study writes)."""
    model, data = tiny_digits
    base = zoo.baseline(model, name="tiny")
    workload = Workload.smoke(threads=1, throughput_batch_sizes=(8,), memory=False, cold_start=False, n_boot=50)
    context = TaskContext(base, data, workload, data.test.inputs, reference(base, data, "test"))
    row = run_task(context, Task(None, "ab" * 32, tmp_path / "work"))
    env = environment()
    assert row["status"] == "ok" and machine_label(row) == f"{env.cpu_model}, {env.cores} cores"
    df = pd.DataFrame([row, {**row, "candidate": "tiny@other", "node": "other-host"}])
    with pytest.raises(ValueError, match="measured on 2 machines"):
        recommend(df)
    assert recommend(df, machine=machine_label(row)).candidate == "tiny"
