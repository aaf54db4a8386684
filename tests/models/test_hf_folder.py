"""An analyst's save_pretrained folder and CSV of texts, on a tiny BERT built here: tokenized by
the folder's own tokenizer (the baseline's logits are the model's on each text alone), the
calibration rows held out of the rows quality is measured on, labels matched to id2label,
requests padded per batch, and through a Study with an optimum recipe from Python; bad folders
and labels refused with one line. No test touches the network."""
import json
import shutil
import socket

import numpy as np
import pytest
import torch

from optlab.models import hf_folder
from optlab.testing.tiny_text import LABELS, texts_csv, texts_frame, tiny_bert_folder


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return tiny_bert_folder(tmp_path_factory.mktemp("hf") / "my-model")


@pytest.fixture(scope="module")
def csv(tmp_path_factory):
    return texts_csv(tmp_path_factory.mktemp("texts") / "texts.csv", rows=60)


@pytest.fixture(scope="module")
def labelled(folder, csv):
    return hf_folder.from_folder(folder, csv, text_column="text", label_column="label")


def test_the_baseline_scores_each_text_as_the_model_does_alone(folder, csv, labelled):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    baseline, data = labelled
    tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    model = AutoModelForSequenceClassification.from_pretrained(folder, local_files_only=True).eval()
    texts = texts_frame(60)["text"].to_numpy()[data.meta["test_rows"][:5]]
    got = baseline.predict({k: v[:5] for k, v in data.test.inputs.items()})
    with torch.inference_mode():
        want = np.concatenate([model(**tokenizer(str(t), return_tensors="pt")).logits.numpy() for t in texts])
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    assert data.task == "multiclass" and data.num_classes == 3 and data.meta["labelled"]
    assert (got.argmax(1) == data.test.labels[:5]).mean() >= 0.6  # a trained tiny model, labels mapped by name
    assert baseline.artifact_path == folder / "model.safetensors"  # the model as given, reloadable from its folder
    module, _, function = baseline.loader.partition(":")
    assert (module, function) == ("optlab.models.hf_folder", "load_predict")
    np.testing.assert_allclose(hf_folder.load_predict(baseline.artifact_path)(data.requests[3]),
                               baseline.predict(data.requests[3]), rtol=1e-5, atol=1e-6)


def test_calibration_rows_are_never_the_measured_rows(labelled):
    _, data = labelled
    test_rows, calibration_rows = set(data.meta["test_rows"]), set(data.meta["calibration_rows"])
    assert not test_rows & calibration_rows and test_rows | calibration_rows == set(range(60))
    assert len(calibration_rows) == 12 and len(data.test) == 48 and len(data.calibration) == 12
    assert len(data.train) == 0  # nothing trains on the measured rows
    test_texts = {tuple(r) for r in data.test.inputs["input_ids"]}
    assert sum(tuple(r) in test_texts for r in data.calibration.inputs["input_ids"]) <= 1  # random texts can repeat


def test_requests_are_padded_to_their_longest_row_and_say_so(labelled):
    baseline, data = labelled
    for request in data.requests:
        assert request["input_ids"].shape[1] == request["attention_mask"].sum(1).max()
    assert len({r["input_ids"].shape[1] for r in data.requests}) > 1
    assert any("each request batch padded to its own longest row" in n for n in baseline.meta["notes"])
    assert any("12 of the 60 rows held out for static int8 calibration" in n for n in baseline.meta["notes"])


def test_fixed_max_length_padding(folder, csv):
    baseline, data = hf_folder.from_folder(folder, csv, text_column="text", padding="max_length", max_length=32)
    assert {r["input_ids"].shape[1] for r in data.requests} == {32} and data.test.inputs["input_ids"].shape[1] == 32
    assert not data.meta["labelled"] and any("every row padded to 32 tokens" in n for n in baseline.meta["notes"])
    with pytest.raises(ValueError, match="the model takes 2..64 tokens"):
        hf_folder.from_folder(folder, csv, text_column="text", max_length=512)


def test_labels_match_names_case_insensitively_or_class_indices():
    config = type("Config", (), {"id2label": dict(enumerate(LABELS)), "num_labels": 3, "problem_type": None})()
    assert hf_folder.class_ids(("refund", "Greeting", "BILLING"), config).tolist() == [1, 2, 0]
    assert hf_folder.class_ids(("2", "0", "1"), config).tolist() == [2, 0, 1]
    with pytest.raises(ValueError, match=r"cannot score: 'spam', 'unknown'; its config.json has 3 labels \(id2label "
                                         r"0: billing, 1: refund, 2: greeting\)"):
        hf_folder.class_ids(("refund", "spam", "unknown", "spam"), config)
    with pytest.raises(ValueError, match=r"cannot score: 3, 7;.*class indices 0..2"):
        hf_folder.class_ids(("0", "3", "7"), config)
    regressor = type("Config", (), {"id2label": {0: "LABEL_0"}, "num_labels": 1, "problem_type": "regression"})()
    with pytest.raises(ValueError, match="not classes; leave the label column out"):
        hf_folder.class_ids(("0.5",), regressor)


def test_bad_folders_are_refused_before_loading(folder, csv, tmp_path):
    with pytest.raises(FileNotFoundError, match="no such folder"):
        hf_folder.check_folder(tmp_path / "missing")
    (tmp_path / "model.onnx").write_bytes(b"x")
    with pytest.raises(ValueError, match="is a file"):
        hf_folder.check_folder(tmp_path / "model.onnx")
    no_config = shutil.copytree(folder, tmp_path / "no-config")
    (no_config / "config.json").unlink()
    with pytest.raises(ValueError, match="has no config.json"):
        hf_folder.check_folder(no_config)
    no_tokenizer = shutil.copytree(folder, tmp_path / "no-tokenizer")
    for name in ("vocab.txt", "tokenizer.json"):
        (no_tokenizer / name).unlink()
    with pytest.raises(ValueError, match=r"has no tokenizer .*tokenizer.save_pretrained"):
        hf_folder.check_folder(no_tokenizer)
    encoder = shutil.copytree(folder, tmp_path / "encoder")
    config = json.loads((encoder / "config.json").read_text())
    (encoder / "config.json").write_text(json.dumps({**config, "architectures": ["BertModel"]}))
    with pytest.raises(ValueError, match="holds a BertModel, not a sequence classifier"):
        hf_folder.check_inputs(encoder, csv, text_column="text")
    no_pad = shutil.copytree(folder, tmp_path / "no-pad")
    settings = json.loads((no_pad / "tokenizer_config.json").read_text())
    (no_pad / "tokenizer_config.json").write_text(json.dumps({**settings, "pad_token": None}))
    (no_pad / "special_tokens_map.json").unlink()
    with pytest.raises(ValueError, match="the tokenizer has no pad token"):
        hf_folder.check_inputs(no_pad, csv, text_column="text")
    with pytest.raises(ValueError, match="has 12 rows; a study needs at least 16"):
        hf_folder.check_inputs(folder, texts_frame(12), text_column="text")


def test_a_study_from_python_without_labels_calibrates_on_held_out_rows(folder, csv, tmp_path):
    from optlab.instruments.latency import Workload
    from optlab.recipes import Optimum
    from optlab.study.study import Study

    baseline, data = hf_folder.from_folder(folder, csv, text_column="text")
    workload = Workload.smoke(cold_start=False, memory=False)  # each would import optimum in a child: seconds
    static = Optimum("O2", quantize="static-int8")
    rows = Study(baseline, data, [static], workload=workload, results_dir=tmp_path / "results").run()
    row = rows.set_index("candidate").loc[static.name]
    assert row["status"] == "ok" and row["metric"] == "agreement" and row["agreement"] >= 0.9
    assert row["runtime"] == "onnxruntime" and row["rows"] == 48
    assert json.loads(row["meta_json"])["calibration_rows"] == 12  # all of the held-out rows, none of the 48


def test_the_guard_blocks_non_loopback_connections():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s, pytest.raises(ConnectionRefusedError, match="blocked"):
        s.connect(("198.51.100.7", 443))
