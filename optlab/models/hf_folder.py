"""Bring your own transformer: a local `save_pretrained` folder (a sequence classifier and its
tokenizer) and a CSV of texts become a study's baseline Candidate and Dataset, with no hub.

    baseline, data = from_folder("./my-model", "texts.csv", text_column="text")        # agreement
    baseline, data = from_folder("./my-model", "texts.csv", text_column="text", label_column="label")
    study = Study(baseline, data, OPTIMUM_RECIPES)   # optlab.recipes.presets

Everything is read with `local_files_only=True`. The texts are tokenized by the folder's own
tokenizer (AutoTokenizer). Padding: `longest` (default) pads the rows to the longest text and
every request batch is then trimmed to its own longest row, as a server with dynamic padding
sends them (the optimum exports take any sequence length); `max_length` pads everything to a
fixed length. The choice is in the baseline's notes.

A share of the CSV's rows (`calibration_share`, a fixed random draw) is held out as the
calibration set of static int8 and never measured: quality is measured on the other rows.
Without labels quality is the agreement with the model as given (the PyTorch baseline), as
for an ONNX file (`optlab.models.user_models`); with labels it is accuracy, the labels matched
to the model's `config.id2label` names or to class indices.

`check_inputs` runs every check that needs no model weights (folder, CSV, columns, empty texts,
labels against the config, enough rows), so the command line can refuse bad input first.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from optlab.data.datasets import Dataset, trim_padding
from optlab.data.hashing import sha256_json
from optlab.data.text_inputs import PADDINGS, TextTable, encode_texts, read_text_csv, text_table
from optlab.data.user_inputs import take
from optlab.models.candidate import Candidate
from optlab.models.training import to_tensors
from optlab.models.user_models import from_module

# What a save_pretrained tokenizer leaves in its folder (one of them is enough).
TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "vocab.json", "tokenizer.model", "spiece.model",
                   "sentencepiece.bpe.model")
CALIBRATION_SHARE = 0.2
MIN_CALIBRATION_ROWS = 8  # the optimum handler's minimum for static int8
MAX_CALIBRATION_ROWS = 512
MIN_MEASURED_ROWS = 8
SEED = 0


@dataclass(frozen=True)
class TextStudyInputs:
    """What `check_inputs` found: the folder, its config, the texts and their class ids, and
    which rows are held out for calibration (the others are measured)."""

    folder: Path
    config: Any
    tokenizer: Any
    table: TextTable
    label_ids: np.ndarray | None
    test_rows: np.ndarray
    calibration_rows: np.ndarray


# what transformers' from_pretrained loads weights from (sharded checkpoints by their index)
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                "pytorch_model.bin.index.json", "tf_model.h5", "flax_model.msgpack")


def check_folder(folder: str | Path) -> Path:
    """The folder, if it holds a save_pretrained model (config.json) and tokenizer; else a one-line error."""
    folder = Path(folder)
    if not folder.exists():
        raise FileNotFoundError(f"{folder}: no such folder; give a folder written by model.save_pretrained(folder) "
                                f"and tokenizer.save_pretrained(folder)")
    if not folder.is_dir():
        raise ValueError(f"{folder} is a file; give the folder written by model.save_pretrained(folder) and "
                         f"tokenizer.save_pretrained(folder)")
    if not (folder / "config.json").is_file():
        raise ValueError(f"{folder} has no config.json, so it is not a save_pretrained folder; save the model with "
                         f"model.save_pretrained({str(folder)!r})")
    if not any((folder / name).is_file() for name in WEIGHT_FILES):
        raise ValueError(f"{folder} has a config.json but no weights (none of {', '.join(WEIGHT_FILES)}); save them "
                         f"with model.save_pretrained({str(folder)!r})")
    if not any((folder / name).is_file() for name in TOKENIZER_FILES):
        raise ValueError(f"{folder} has no tokenizer (none of {', '.join(TOKENIZER_FILES)}); save the model's "
                         f"tokenizer beside it: tokenizer.save_pretrained({str(folder)!r})")
    return folder


def read_config(folder: Path):
    """The folder's config (AutoConfig, local files only), refusing a model without a classifier head."""
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(folder, local_files_only=True)
    except (OSError, ValueError, KeyError) as error:
        raise ValueError(f"{folder}/config.json cannot be read by transformers "
                         f"({' '.join(str(error).split())[:200]})") from None
    architectures = list(getattr(config, "architectures", None) or [])
    if architectures and not any(a.endswith("ForSequenceClassification") for a in architectures):
        raise ValueError(f"{folder} holds a {architectures[0]}, not a sequence classifier; optlab's text path "
                         f"studies *ForSequenceClassification models (a bare encoder would get a random head)")
    return config


def class_ids(values: tuple[str, ...], config: Any, column: str = "label") -> np.ndarray:
    """Label values (as read from the CSV) as the model's class indices: by `config.id2label`
    name, else as integers 0..num_labels-1; anything else is refused, naming the values."""
    id2label = {int(k): str(v) for k, v in (getattr(config, "id2label", None) or {}).items()}
    count = len(id2label) or int(getattr(config, "num_labels", 0) or 0)
    known = ", ".join(f"{i}: {name}" for i, name in sorted(id2label.items())[:10])
    if count < 2 or getattr(config, "problem_type", None) == "regression":
        raise ValueError(f"the model scores {count} value(s) per text (problem_type="
                         f"{getattr(config, 'problem_type', None)}), not classes; leave the label column out (quality "
                         f"is then the agreement with the model as given)")
    values = np.asarray(values, dtype=str)
    by_name = {name: i for i, name in id2label.items()}
    folded = {name.lower(): i for i, name in id2label.items()}
    if all(v in by_name for v in values):
        return np.array([by_name[v] for v in values], dtype=np.int64)
    if len(folded) == len(by_name) and all(v.lower() in folded for v in values):
        return np.array([folded[v.lower()] for v in values], dtype=np.int64)
    as_int = np.array([_integer(v) for v in values], dtype=object)
    if all(i is not None for i in as_int):
        ids = as_int.astype(np.int64)
        if ids.min() >= 0 and ids.max() < count:
            return ids
        bad = sorted({int(i) for i in ids if not 0 <= i < count})
    else:
        bad = sorted({str(v) for v in values if v not in by_name and v.lower() not in folded and _integer(v) is None})
    shown = ", ".join(map(repr, bad[:5])) + (f" and {len(bad) - 5} more" if len(bad) > 5 else "")
    raise ValueError(f"label column {column!r} holds values the model cannot score: {shown}; its config.json has "
                     f"{count} labels (id2label {known}{', ...' if count > 10 else ''}); use those names or class "
                     f"indices 0..{count - 1}")


def _integer(text: str) -> int | None:
    try:
        return int(text)
    except ValueError:
        return None


def held_out(n: int, share: float, source: str = "the texts") -> tuple[np.ndarray, np.ndarray]:
    """(measured rows, calibration rows): a fixed random draw of `share` of the rows (at least 8,
    at most 512) is held out for calibration; quality is measured on the rest only."""
    if not isinstance(share, (int, float)) or not 0 < share < 1:
        raise ValueError(f"calibration_share={share!r}; give a share of the rows in (0, 1), e.g. 0.2")
    count = min(max(int(round(n * share)), MIN_CALIBRATION_ROWS), MAX_CALIBRATION_ROWS)
    if n - count < MIN_MEASURED_ROWS:
        need = MIN_CALIBRATION_ROWS + MIN_MEASURED_ROWS
        raise ValueError(f"{source} has {n} rows; a study needs at least {need}: {MIN_CALIBRATION_ROWS} held out to "
                         f"calibrate static int8 and {MIN_MEASURED_ROWS} to measure quality on")
    order = np.random.default_rng(SEED).permutation(n)
    return np.sort(order[count:]), np.sort(order[:count])


def check_inputs(folder: str | Path, texts: Any, *, text_column: str = "text", label_column: str | None = None,
                 calibration_share: float = CALIBRATION_SHARE) -> TextStudyInputs:
    """Every check that needs no weights: the folder, the CSV (or DataFrame) and its columns,
    empty texts, labels against the config, enough rows for a calibration hold-out."""
    folder = check_folder(folder)
    if isinstance(texts, (str, Path)):
        table = read_text_csv(texts, text_column, label_column)
    elif type(texts).__name__ == "DataFrame":
        table = text_table(texts, text_column, label_column)
    else:
        raise TypeError(f"texts must be a CSV path or a pandas DataFrame with a {text_column!r} column; got "
                        f"{type(texts).__name__}")
    config = read_config(folder)
    ids = class_ids(table.labels, config, label_column) if table.labels is not None else None
    test_rows, calibration_rows = held_out(len(table), calibration_share, table.source)
    return TextStudyInputs(folder, config, load_tokenizer(folder), table, ids, test_rows, calibration_rows)


def load_tokenizer(folder: Path):
    """The folder's tokenizer (AutoTokenizer, local files only); it must be able to pad a batch."""
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise ValueError(f"{folder}: transformers cannot load its tokenizer ({' '.join(str(error).split())[:200]}); "
                         f"save it with tokenizer.save_pretrained({str(folder)!r})") from None
    if tokenizer.pad_token is None:
        raise ValueError(f"{folder}: the tokenizer has no pad token, so texts cannot be batched; set one and save "
                         f"it again (e.g. tokenizer.pad_token = tokenizer.eos_token; tokenizer.save_pretrained(...))")
    return tokenizer


def load_classifier(folder: Path):
    """The folder's model (AutoModelForSequenceClassification, local files only) in a torch
    module that returns logits, as the zoo's BertClassifier does."""
    from transformers import AutoModelForSequenceClassification

    hf = AutoModelForSequenceClassification.from_pretrained(folder, local_files_only=True).eval()
    return _classifier_class()(hf).eval()


def _classifier_class():
    """The wrapper class (in a module that imports torch, and at its top level so that a pruned or
    quantized copy pickles whole)."""
    from optlab.models.module_outputs import FolderClassifier  # on use: it imports torch

    return FolderClassifier


def from_folder(folder: str | Path, texts: Any, *, text_column: str = "text", label_column: str | None = None,
                calibration_share: float = CALIBRATION_SHARE, padding: str = "longest",
                max_length: int | None = None, name: str | None = None,
                checked: TextStudyInputs | None = None) -> tuple[Candidate, Dataset]:
    """The folder's model as the fp32 PyTorch baseline and the texts as a Dataset (see the module
    docstring). `checked` is `check_inputs`'s answer if the caller already has it."""
    if padding not in PADDINGS:
        raise ValueError(f"padding={padding!r}; choose one of {PADDINGS}")
    plan = checked or check_inputs(folder, texts, text_column=text_column, label_column=label_column,
                                   calibration_share=calibration_share)
    tokenizer = plan.tokenizer
    limit = _max_length(tokenizer, plan.config, max_length)
    model = load_classifier(plan.folder)
    batch, facts = encode_texts(tokenizer, plan.table.texts, max_length=limit, padding=padding)
    if not model.takes_token_types:
        batch.pop("token_type_ids", None)
    test, calibration = take(batch, plan.test_rows), take(batch, plan.calibration_rows)
    labels = None if plan.label_ids is None else plan.label_ids[plan.test_rows]
    # a sequence classifier's output is class scores by construction: no need to infer it
    baseline, data = from_module(model, test, labels=labels, metric=None if labels is None else "accuracy",
                                 output_kinds=None if labels is not None else {"output0": "classes"},
                                 calibration=calibration, name=name or plan.folder.name)
    if padding == "longest":
        data.requests = [trim_padding(r) for r in data.requests]
    sent = ("each request batch padded to its own longest row (dynamic padding); quality batches to the longest "
            f"text ({facts['width']} tokens)" if padding == "longest" else f"every row padded to {limit} tokens")
    notes = [f"tokenized by {plan.folder.name}'s own tokenizer ({type(tokenizer).__name__}), max_length {limit}: "
             f"{sent}; {facts['truncated_rows']} texts cut at max_length",
             f"{len(plan.calibration_rows)} of the {len(plan.table)} rows held out for static int8 calibration "
             f"(calibration_share={calibration_share}); quality measured on the other {len(plan.test_rows)} rows",
             "quality: accuracy against the label column" if labels is not None else
             "quality: agreement with the model as given (no label column)"]
    data.meta.update(texts=facts, padding=padding, source=plan.table.source, folder=str(plan.folder),
                     test_rows=plan.test_rows.tolist(), calibration_rows=plan.calibration_rows.tolist(),
                     id2label={int(k): str(v) for k, v in plan.config.id2label.items()})
    data.meta["notes"].extend(notes)
    baseline.meta["notes"] = list(data.meta["notes"])
    baseline.meta.update(padding=padding, max_length=limit, folder=str(plan.folder))
    weights = plan.folder / "model.safetensors"
    if weights.is_file():  # the model as given: its size on disk, and a fresh process loads the folder
        baseline.artifact_path, baseline.loader = weights, "optlab.models.hf_folder:load_predict"
    data.fingerprint = sha256_json({"user": data.fingerprint, "padding": padding, "max_length": limit})
    return baseline, data


def load_predict(path: str | Path, threads: int | None = None):
    """predict(batch) -> logits from the save_pretrained folder holding `path` (its weights file),
    for a cold start in a fresh process: transformers' import and the folder's load included."""
    import torch  # on use: a heavy optional dependency

    if threads:
        torch.set_num_threads(int(threads))  # a fresh process of its own: nothing to restore
    model = load_classifier(Path(path).parent)

    def predict(batch) -> np.ndarray:
        with torch.inference_mode():
            return model(**to_tensors(batch)).float().numpy()

    return predict


def _max_length(tokenizer: Any, config: Any, requested: int | None) -> int:
    """The longest sequence the model takes: the tokenizer's and the position table's limits."""
    limits = [int(v) for v in (getattr(tokenizer, "model_max_length", None),
                               getattr(config, "max_position_embeddings", None)) if v and int(v) < 1_000_000]
    longest = min(limits) if limits else 512
    if requested is None:
        return longest
    if not isinstance(requested, int) or not 1 < requested <= longest:
        raise ValueError(f"max_length={requested!r}; the model takes 2..{longest} tokens")
    return requested

