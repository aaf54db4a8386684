"""Results recorded on other machines: found by name, loaded as labelled reference rows."""
import pytest

from optlab.data import reference
from optlab.instruments.latency import Workload
from optlab.study.study import RunOptions, Study


def test_recorded_folders_are_found_by_machine_and_dataset():
    have = reference.available()
    assert {"bids", "digits"} <= set(have["h200"])
    assert (reference.recorded("h200", "bids") / "optlab-store.json").is_file()
    with pytest.raises(ValueError, match="recorded machines: h200"):
        reference.recorded("a100", "bids")
    with pytest.raises(ValueError, match="recorded there: bids"):
        reference.recorded("h200", "nope")


def test_h200_rows_load_beside_local_ones_and_say_where_they_come_from(tiny_digits, tmp_path):
    model, data = tiny_digits
    study = Study(model, data, [], workload=Workload.smoke(threads=1, throughput_batch_sizes=(8,), memory=False,
                                                           cold_start=False),
                  results_dir=tmp_path, options=RunOptions(progress=False))
    study.run()
    rows = study.load_reference(reference.recorded("h200", "digits"), label="recorded on an H200")
    assert len(rows) >= 2 and (rows["status"] == "reference").all()
    assert rows["candidate"].str.endswith("[recorded on an H200]").all()
    gpu = rows[rows["device"].astype(str).str.startswith("cuda")]
    assert len(gpu) and gpu["gpu_name"].str.contains("H200").all()
    assert (gpu["p50_ms"] > 0).all() and gpu["quality"].notna().all()
    assert study.recommend().candidate == "baseline"  # reference rows are never recommended
