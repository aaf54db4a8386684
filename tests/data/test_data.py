"""optlab.data.datasets: the three offline datasets, their cache (sha256 sidecars) and determinism."""
from __future__ import annotations

import re

import numpy as np
import pytest

from optlab.data import datasets as data
from optlab.data.datasets import Dataset, Split, load

EXPECTED_INPUTS = {
    "digits": {"pixels": (np.float32, (1, 8, 8))},
    "bids": {"categorical": (np.int64, (8,)), "numeric": (np.float32, (5,))},
    "intents": {"input_ids": (np.int64, (128,)), "attention_mask": (np.int64, (128,))},
}


def test_unknown_dataset_lists_valid_names():
    with pytest.raises(ValueError, match="digits, bids, intents"):
        load("mnist")


@pytest.mark.parametrize("name", data.DATASETS)
def test_shapes_splits_and_requests(name, request):
    ds: Dataset = request.getfixturevalue(f"{name}_data")
    assert ds.name == name and ds.fingerprint and len(ds.fingerprint) == 64
    assert set(ds.input_names) == set(EXPECTED_INPUTS[name])
    for split in (ds.train, ds.validation, ds.test, ds.calibration):
        assert isinstance(split, Split) and len(split) > 0
        for key, (dtype, shape) in EXPECTED_INPUTS[name].items():
            arr = split.inputs[key]
            assert arr.dtype == dtype and arr.shape[1:] == shape and arr.shape[0] == len(split)
        assert split.labels.dtype == np.int64
        assert split.labels.min() >= 0 and split.labels.max() < ds.num_classes
    assert len(ds.test) >= 2000, "an accuracy change of 0.5% must be >= 10 rows"
    assert len(ds.train) == data.SMOKE_ROWS[name]["train"]
    assert len(ds.calibration) == data.CALIBRATION_ROWS[name]
    sizes = [len(next(iter(r.values()))) for r in ds.requests]
    assert len(ds.requests) == data.N_REQUESTS and len(set(sizes)) > 3
    for r in ds.requests:
        assert set(r) == set(ds.input_names)
    for label in ds.slices.values():
        assert len(label) == len(ds.test)


def test_full_sizes_from_cache(digits_data, bids_data, intents_data):
    sizes = {}
    for name in data.DATASETS:
        arrays, _ = data.cached_arrays(name, 0)
        sizes[name] = {s: len(arrays[f"{s}/labels"]) for s in ("train", "validation", "test")}
    assert sizes["digits"]["test"] >= 2000
    assert sum(sizes["bids"].values()) >= 200_000
    assert sum(sizes["intents"].values()) >= 20_000


def test_digits_split_by_original_image(digits_data):
    arrays, meta = data.cached_arrays("digits", 0)
    train, val, test = (set(arrays[f"{s}/source"].tolist()) for s in ("train", "validation", "test"))
    assert not train & test and not train & val and not val & test
    assert len(train | val | test) == 1797
    pixels = digits_data.test.inputs["pixels"]
    assert 0.0 <= pixels.min() and pixels.max() <= 1.0
    assert set(np.unique(digits_data.slices["copy"])) == {"original", "augmented"}


def test_bids_oracle_clicks_and_slices(bids_data):
    meta = bids_data.meta
    assert bids_data.task == "binary" and bids_data.num_classes == 2
    assert 0.6 < meta["oracle_auc"] < 0.95
    assert 0.01 < bids_data.train.labels.mean() < 0.08  # a click rate of a few percent
    assert set(np.unique(bids_data.slices["device"])) == {"desktop", "mobile", "tablet", "ctv"}
    assert set(np.unique(bids_data.slices["publisher_frequency"])) == {"head", "torso", "tail"}
    cats = bids_data.test.inputs["categorical"]
    assert (cats < np.array(meta["cardinalities"])).all() and (cats >= 0).all()
    assert len(meta["numeric_mean"]) == len(meta["numeric_std"]) == 5


def test_intents_tokenizer_and_lengths(intents_data):
    from pathlib import Path

    from tokenizers import Tokenizer

    meta = intents_data.meta
    tok = Tokenizer.from_file(meta["tokenizer_path"])
    assert Path(meta["tokenizer_path"]).is_file() and tok.get_vocab_size() == meta["vocab_size"]
    assert intents_data.test.inputs["input_ids"].max() < meta["vocab_size"]
    lengths = intents_data.test.inputs["attention_mask"].sum(axis=1)
    assert lengths.min() <= 12 and lengths.max() == 128 and np.median(lengths) < 64  # long-tailed
    assert len(meta["texts"]["test"]) == len(intents_data.test)
    first = intents_data.requests[0]
    assert first["attention_mask"][:, -1].any(), "requests are trimmed to their longest row"
    batch = next(intents_data.test.batches(8))
    assert batch["input_ids"].shape[1] == batch["attention_mask"].sum(axis=1).max()


def test_generators_are_deterministic():
    bids = data.generator("bids")
    a, _ = bids.generate(seed=3, n=4000)
    b, _ = bids.generate(seed=3, n=4000)
    c, _ = bids.generate(seed=4, n=4000)
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert not np.array_equal(a["train/categorical"], c["train/categorical"])
    intents = data.generator("intents")
    small = {"train": 300, "test": 50}
    a, _ = intents.generate(seed=3, n=small)
    b, _ = intents.generate(seed=3, n=small)
    assert list(a["train/texts"]) == list(b["train/texts"]) and np.array_equal(a["test/labels"], b["test/labels"])


def test_tokenizer_training_is_deterministic(tmp_path):
    intents = data.generator("intents")
    texts, _ = intents.generate(seed=1, n={"train": 400})
    intents.train_tokenizer(texts["train/texts"], tmp_path / "a.json", vocab_size=300)
    intents.train_tokenizer(texts["train/texts"], tmp_path / "b.json", vocab_size=300)
    assert (tmp_path / "a.json").read_bytes() == (tmp_path / "b.json").read_bytes()


def test_same_seed_same_data_other_seed_differs(digits_data, tmp_path, monkeypatch):
    monkeypatch.setenv("OPTLAB_CACHE", str(tmp_path))
    again = load("digits", smoke=True)
    assert again.fingerprint == digits_data.fingerprint
    np.testing.assert_array_equal(again.test.inputs["pixels"], digits_data.test.inputs["pixels"])
    assert load("digits", smoke=True, seed=1).fingerprint != digits_data.fingerprint
    assert load("digits").fingerprint != digits_data.fingerprint  # full != smoke


def test_cache_reused_and_corrupt_file_rebuilt(tmp_path, monkeypatch):
    monkeypatch.setenv("OPTLAB_CACHE", str(tmp_path))
    first = load("digits", smoke=True)
    path = data.data_path("digits", 0)
    stamp = path.stat().st_mtime_ns
    assert load("digits", smoke=True).fingerprint == first.fingerprint
    assert path.stat().st_mtime_ns == stamp, "a valid cache file is reused, not regenerated"
    size = path.stat().st_size
    with open(path, "r+b") as f:  # truncate: a crash mid-write or a bad copy
        f.truncate(size // 2)
    rebuilt = load("digits", smoke=True)
    assert rebuilt.fingerprint == first.fingerprint and path.stat().st_size == size
    with open(path, "r+b") as f:  # same size, one byte flipped
        f.seek(size // 3)
        byte = f.read(1)
        f.seek(size // 3)
        f.write(bytes([byte[0] ^ 0xFF]))
    assert load("digits", smoke=True).fingerprint == first.fingerprint


def test_generators_load_from_an_uninstalled_checkout(tmp_path):
    """With optlab on PYTHONPATH but not installed (no package mapping), the generators are read
    from the checkout's datasets/ folder."""
    import shutil
    import site
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    shutil.copytree(root / "optlab", tmp_path / "optlab", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(root / "datasets", tmp_path / "datasets", ignore=shutil.ignore_patterns("__pycache__"))
    code = (f"import sys; sys.path[:0] = [{str(tmp_path)!r}]; sys.path += {site.getsitepackages()!r}\n"
            "import optlab.data.datasets as d\n"
            "print(d.__file__); print(d.generator('digits').__file__)")
    out = subprocess.run([sys.executable, "-S", "-c", code], capture_output=True, text=True, check=True,
                         cwd=tmp_path).stdout.split()
    assert out == [str(tmp_path / "optlab" / "data" / "datasets.py"), str(tmp_path / "datasets" / "digits.py")]


def test_intents_cancellation_names_the_other_offer_by_its_place(monkeypatch):
    """v2 ads: two live offers, then "the first/second ... has ended"; the label is the offer left."""
    import random

    intents = data.generator("intents")
    for key, value in {"cancel_prob": 1.0, "filler_max": 0, "footer_prob": 0.0, "typo_rate": 0.0,
                       "upper_prob": 0.0}.items():
        monkeypatch.setitem(intents.PARAMS, key, value)
    first_words = set(intents.ORDINALS[0])
    rnd = random.Random(5)
    seen = set()
    for i in range(400):
        label = i % (len(intents.CLASSES) - 1)  # not brand_awareness: its "{brand}. {slogan}." has a full stop
        text = intents._ad(label, rnd)
        own_first = any(re.match(re.escape(t).replace(r"\{", "{").replace(r"\}", "}").format_map(
            {k: r"(?:(?!\. ).)+?" for k in intents.SLOTS}) + r"\. ", text) for t in intents.CORE[label])
        ordinal = re.search(r"the (\w+) (?:offer|deal|promotion|one)", text.rsplit(". ", 1)[-1]).group(1)
        assert own_first == (ordinal not in first_words), text  # the cancelled offer is never the label's
        seen.add((own_first, ordinal in first_words))
    assert seen == {(True, False), (False, True)}  # both orders occur


def test_intents_share_of_cancelled_offers():
    intents = data.generator("intents")
    texts, _ = intents.generate(seed=2, n={"train": 1000})
    ends = re.compile(r"(has ended|sold out|no longer available|was cancelled|has expired|is gone)")
    cancelled = [bool(ends.search(t.lower())) for t in texts["train/texts"]]
    assert abs(np.mean(cancelled) - intents.PARAMS["cancel_prob"]) < 0.06
