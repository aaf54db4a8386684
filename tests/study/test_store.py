"""The results store: atomic rows, manifest versioning, read-only reference folders."""
import json
import math
import os

import numpy as np
import pytest

from optlab.study import fingerprint as fp
from optlab.study.store import FORMAT_VERSION, MANIFEST, IncompatibleStore, OtherStudyFolder, Store, StoreBusy

FP = "ab" * 32


def test_put_get_round_trip_with_numpy_and_nan(tmp_path):
    store = Store(tmp_path / "results")
    manifest = json.loads((tmp_path / "results" / MANIFEST).read_text())
    assert manifest["format"] == "optlab-store" and manifest["format_version"] == FORMAT_VERSION
    path = store.put(FP, {"candidate": "x", "p99_ms": np.float32(1.5), "n": np.int64(3), "bad": math.nan,
                          "arr": np.arange(2)}, key={"recipe": {"kind": "baseline"}})
    assert path.name == f"{FP}.json" and FP in store and len(store) == 1
    row = Store(tmp_path / "results").get(FP)["row"]  # reopened: read back from disk
    assert row == {"candidate": "x", "p99_ms": 1.5, "n": 3, "bad": None, "arr": [0, 1]}
    assert store.get("cd" * 32) is None
    assert not list((tmp_path / "results" / "rows").glob(".*.tmp"))


def test_torn_writes_are_ignored(tmp_path):
    store = Store(tmp_path)
    store.put(FP, {"candidate": "kept"})
    # a temp file left by a killed writer (its pid is not running) and a garbage record
    (store.rows_dir / f".{'cd' * 32}.json.999999999.tmp").write_text('{"half": ')
    (store.rows_dir / f"{'ef' * 32}.json").write_text("not json")
    with pytest.warns(UserWarning, match="unreadable result record"):
        assert [r["candidate"] for r in Store(tmp_path).rows()] == ["kept"]
    assert not list(store.rows_dir.glob(".*.tmp"))  # stale temp file cleaned on open


def test_incompatible_folders_are_refused_clearly(tmp_path):
    newer = tmp_path / "newer"
    newer.mkdir()
    (newer / MANIFEST).write_text(json.dumps({"format": "optlab-store", "format_version": FORMAT_VERSION + 1,
                                              "optlab_version": "9.0"}))
    with pytest.raises(IncompatibleStore, match="optlab 9.0 in store format version 2.*upgrade optlab"):
        Store(newer)
    other = tmp_path / "other"
    (other / "rows").mkdir(parents=True)
    (other / "rows" / "x.json").write_text("{}")
    with pytest.raises(IncompatibleStore, match="no optlab-store.json"):
        Store(other)
    garbage = tmp_path / "garbage"
    garbage.mkdir()
    (garbage / MANIFEST).write_text("[1, 2")
    with pytest.raises(IncompatibleStore, match="not readable JSON"):
        Store(garbage)
    assert issubclass(IncompatibleStore, ValueError)


def test_read_only_store_never_writes(tmp_path):
    Store(tmp_path / "ref").put(FP, {"candidate": "gpu"})
    ref = Store(tmp_path / "ref", read_only=True)
    assert ref.rows() == [{"candidate": "gpu"}]
    with pytest.raises(PermissionError):
        ref.put("cd" * 32, {})
    with pytest.raises(FileNotFoundError, match="does not exist"):
        Store(tmp_path / "missing", read_only=True)
    (tmp_path / "plain").mkdir()
    with pytest.raises(IncompatibleStore, match="not an optlab results folder"):
        Store(tmp_path / "plain", read_only=True)


def test_fingerprint_changes_with_every_part(tmp_path):
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 2)
    base = dict(recipe_json='{"kind": "baseline"}', model=fp.model_fingerprint(model), data="d1",
                workload={"batch_size": 1}, machine_info=fp.machine())
    digest = fp.fingerprint(fp.key(**base))
    assert digest == fp.fingerprint(fp.key(**base))
    with torch.no_grad():
        model.weight[0, 0] += 1e-3
    variants = [dict(recipe_json='{"kind": "quantize"}'), dict(model=fp.model_fingerprint(model)), dict(data="d2"),
                dict(workload={"batch_size": 8}), dict(machine_info={**fp.machine(), "torch_version": "0.0"})]
    for change in variants:
        assert fp.fingerprint(fp.key(**{**base, **change})) != digest, change
    assert fp.explain_difference(fp.key(**base), fp.key(**{**base, "data": "d2"})) == ["data"]
    machine = fp.machine()
    assert {"device", "cpu_model", "cpu_flags_sha256", "torch_version", "onnxruntime_version",
            "optlab_version"} <= set(machine)
    onnx_file = tmp_path / "m.onnx"
    onnx_file.write_bytes(b"abc")
    assert fp.model_fingerprint(onnx_file) == fp.file_fingerprint(onnx_file)
    assert os.path.exists(onnx_file)


def identity(baseline="a", data="d", name="mlp"):
    return {"baseline": baseline * 64, "data": data * 64, "name": name}


def test_a_folder_is_bound_to_one_study(tmp_path):
    Store(tmp_path).bind(identity())
    Store(tmp_path).bind(identity(name="renamed"))  # same baseline and data: the same study
    assert json.loads((tmp_path / MANIFEST).read_text())["study"]["baseline"] == "a" * 64
    with pytest.raises(OtherStudyFolder) as error:
        Store(tmp_path).bind(identity(baseline="b"), fix=", e.g. results_dir='x/lstm'")
    message = str(error.value)
    assert "\n" not in message and "another study's results ('renamed')" in message
    assert "baseline aaaaaaaaaaaa; this study has baseline bbbbbbbbbbbb" in message
    assert "Pass another results_dir, e.g. results_dir='x/lstm'" in message
    with pytest.raises(OtherStudyFolder, match="data dddddddddddd; this study has data eeeeeeeeeeee"):
        Store(tmp_path).bind(identity(data="e"))


def test_a_folder_written_before_binding_is_judged_by_its_rows(tmp_path):
    Store(tmp_path).put(FP, {"candidate": "x"}, key={"model": "a" * 64, "data": "d" * 64})
    Store(tmp_path).bind(identity())  # the rows agree: bound
    other = tmp_path / "other"
    Store(other).put(FP, {"candidate": "x"}, key={"model": "c" * 64, "data": "d" * 64})
    with pytest.raises(OtherStudyFolder, match="baseline cccccccccccc"):
        Store(other).bind(identity())


HOLD = """
import sys, time
from optlab.study.store import Store
with Store(sys.argv[1]).lock():
    print("locked", flush=True)
    time.sleep(float(sys.argv[2]))
    print("releasing", flush=True)
"""


def test_a_second_process_on_the_same_folder_fails_with_a_message_or_waits(tmp_path):
    import subprocess
    import sys

    Store(tmp_path)
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(tmp_path), "3"], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(StoreBusy, match=f"being written by another study run \\(pid {holder.pid} on .*"
                                            f"wait for it to finish, or pass another results_dir"):
            with Store(tmp_path).lock():
                pass
        with Store(tmp_path).lock(timeout_s=60):  # waits for the holder to finish
            assert holder.stdout.readline().strip() == "releasing"  # it got the lock only after the holder let go
        assert holder.wait(timeout=30) == 0
    finally:
        holder.kill()
        holder.wait()
