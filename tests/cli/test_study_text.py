"""`optlab study --model ./my-model/ --inputs texts.csv --text-column text [--label-column label]`
on a tiny BERT folder built here: bad input is one line and exit 2 before any work, the optimum
presets are the default recipes, and a run prints the table, says how it tokenized and split the
CSV, and keeps going past a candidate that fails (its error row is named). No network."""
import shutil

import numpy as np
import pandas as pd
import pytest

from optlab.cli.main import _validate_study, build_parser, main
from optlab.testing.tiny_text import texts_csv, texts_frame, tiny_bert_folder


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("text-cli")
    model = tiny_bert_folder(root / "my-model")
    texts_csv(root / "texts.csv", rows=48)
    no_config = shutil.copytree(model, root / "no-config")
    (no_config / "config.json").unlink()
    no_tokenizer = shutil.copytree(model, root / "no-tokenizer")
    for name in ("vocab.txt", "tokenizer.json"):
        (no_tokenizer / name).unlink()
    frame = texts_frame(48)
    frame.assign(text=[t if i % 7 else " " for i, t in enumerate(frame["text"])]).to_csv(root / "blank.csv",
                                                                                         index=False)
    frame.assign(label=frame["label"].replace("refund", "refunds")).to_csv(root / "typo.csv", index=False)
    frame.assign(label=np.arange(48) % 5).to_csv(root / "five.csv", index=False)
    frame.head(10).to_csv(root / "few.csv", index=False)
    (root / "model.onnx").write_bytes(b"not a real model")
    np.savez(root / "x.npz", input_ids=np.ones((4, 8), np.int64))
    return root


def run_cli(argv, capsys):
    try:
        code = main(argv)
    except SystemExit as stop:
        code = stop.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err


BAD = [
    ("{root}/no-config", "texts.csv", ["--text-column", "text"], "has no config.json, so it is not a save_pretrained"),
    ("{root}/no-tokenizer", "texts.csv", ["--text-column", "text"], "has no tokenizer (none of tokenizer.json, "),
    ("{root}/my-model", "texts.csv", ["--text-column", "sentence"],
     "has no column 'sentence'; its columns are: 'id', 'text', 'label'"),
    ("{root}/my-model", "texts.csv", ["--text-column", "text", "--label-column", "intent"],
     "has no column 'intent'; its columns are: 'id', 'text', 'label'"),
    ("{root}/my-model", "blank.csv", ["--text-column", "text"],
     "7 of 48 texts in column 'text' are empty (CSV lines 2, 9,"),
    ("{root}/my-model", "typo.csv", ["--text-column", "text", "--label-column", "label"],
     "cannot score: 'refunds'; its config.json has 3 labels (id2label 0: billing, 1: refund, 2: greeting)"),
    ("{root}/my-model", "five.csv", ["--text-column", "text", "--label-column", "label"],
     "cannot score: 3, 4; its config.json has 3 labels"),
    ("{root}/my-model", "few.csv", ["--text-column", "text"], "has 10 rows; a study needs at least 16"),
    ("{root}/model.onnx", "texts.csv", ["--text-column", "text"], "but --model model.onnx is an ONNX file"),
    ("{root}/my-model", "x.npz", ["--text-column", "text"], "but --inputs x.npz holds arrays"),
    ("{root}/my-model", "texts.csv", [], "--inputs texts.csv: name the CSV column that holds the texts with "
                                         "--text-column NAME"),
    ("{root}/my-model", "x.npz", [], "--model my-model/ is a folder: name the CSV column"),
    ("{root}/model.onnx", "texts.csv", [], "--inputs {root}/texts.csv is for a save_pretrained folder"),
    ("{root}/my-model", "texts.csv", ["--text-column", "text", "--labels", "{root}/x.npz", "--metric", "accuracy"],
     "--labels is for ONNX models with array inputs; for a folder and a CSV of texts, name the CSV's label column"),
    ("{root}/my-model", "texts.csv", ["--text-column", "text", "--calibration", "{root}/x.npz"],
     "a held-out part of the CSV calibrates static int8 and is never measured"),
]


@pytest.mark.parametrize(("model", "inputs", "extra", "message"), BAD, ids=[m for *_, m in BAD])
def test_bad_input_is_one_line_and_exit_2_before_any_work(files, tmp_path, capsys, model, inputs, extra, message):
    fill = {"root": files}
    argv = ["study", "--model", model.format(**fill), "--inputs", str(files / inputs),
            *[part.format(**fill) for part in extra], "--out", str(tmp_path / "out")]
    code, out, err = run_cli(argv, capsys)
    assert code == 2, err
    assert err.count("\n") == 1 and err.startswith("optlab study: error: "), err
    assert message.format(**fill) in err and "Traceback" not in err
    assert not (tmp_path / "out").exists() and out == ""  # nothing was created: no work started


def test_the_default_recipes_for_a_folder_are_the_optimum_presets(files, tmp_path):
    from optlab.recipes.presets import OPTIMUM_RECIPES

    args = build_parser().parse_args(["study", "--model", str(files / "my-model"), "--inputs",
                                      str(files / "texts.csv"), "--text-column", "text", "--out", str(tmp_path)])
    assert _validate_study(args) == list(OPTIMUM_RECIPES)
    assert [r.name for r in OPTIMUM_RECIPES] == [
        "optimum(level=O1)", "optimum(level=O2)", "optimum(level=O2, quantize=dynamic-int8)",
        "optimum(level=O2, quantize=static-int8)"]
    assert args.text_inputs.label_ids is None and len(args.text_inputs.calibration_rows) == 10


def test_a_study_on_a_folder_and_a_csv_keeps_going_past_a_failing_candidate(files, tmp_path, capsys):
    out = tmp_path / "out"
    starved = "optimum(level=O2, quantize=static-int8, calibration_samples=4)"  # below the handler's minimum
    code, printed, err = run_cli(["study", "--model", f"{files / 'my-model'}/", "--inputs", str(files / "texts.csv"),
                                  "--text-column", "text", "--label-column", "label", "--recipe", starved,
                                  "--smoke", "--out", str(out)], capsys)
    assert code == 0, err
    assert "texts: tokenized by my-model's own tokenizer (BertTokenizerFast)" in printed
    assert "each request batch padded to its own longest row" in printed
    assert "10 of the 48 rows held out for static int8 calibration" in printed
    assert f"failed: {starved}: ValueError: the calibration set has 4 rows" in printed
    rows = pd.read_csv(out / "results.csv").set_index("candidate")
    assert rows.loc[starved, "status"] == "error" and rows.loc[starved, "error_stage"] == "apply"
    baseline = rows.loc["baseline"]
    assert baseline["status"] == "ok" and baseline["metric"] == "accuracy" and baseline["rows"] == 38
    assert baseline["quality"] >= 0.6 and baseline["runtime"] == "torch"
    assert baseline["cold_start_ms"] > 0 and baseline["size_bytes"] == (files / "my-model" / "model.safetensors").stat(
        ).st_size  # a fresh process loaded the folder
    assert "baseline" in printed.split("failed:")[0]  # in the table
    assert "NaN" not in printed and " nan" not in printed  # a missing figure reads n/a
    assert (out / "report.html").is_file()
