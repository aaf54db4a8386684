"""`python -m optlab.bench zoo [--smoke] [--cached]`: train every reference model and print a table.

Per model: train time, parameters and the test metric, beside references: digits accuracy
(target >= 97%); bids AUC beside the oracle AUC (target within 0.02) and a logistic
regression on one-hot categoricals; intents accuracy beside a bag-of-words linear model.
Accuracies carry a 95% bootstrap interval over the test rows. For intents the command then
judges the teacher against its targets (teacher >= 3 points above the 2-layer student
and >= 5 above bag-of-words, intervals apart; teacher training <= 90 s full / 15 s smoke)
and, with `--distill`, adds the student distilled from the teacher (the Distill recipe) and
its from-scratch control. The machine's load average is printed beside the seconds.
Trains fresh by default (the cache is overwritten); `--cached` reuses cached models.
"""
from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time

import numpy as np
import scipy.sparse as sp
import torch
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from optlab.bench.render import Col, Layout, Renderer, missing, target
from optlab.data import datasets as optlab_data
from optlab.instruments.agreement import bootstrap_mean_ci
from optlab.models import weights, zoo
from optlab.models.training import to_tensors
from optlab.recipes.recipe import Distill
from optlab.techniques.registry import apply


def cpu_model() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def logits(model, split, batch_size: int = 512) -> np.ndarray:
    with torch.inference_mode():
        return np.concatenate([model(**to_tensors(b)).numpy() for b in split.batches(batch_size)])


TEACHER_TARGETS = {"over_student_points": 3.0, "over_bag_of_words_points": 5.0}
TEACHER_MAX_TRAIN_S = {False: 90.0, True: 15.0}


def accuracy_interval(correct: np.ndarray) -> tuple[float, float]:
    """95% bootstrap interval of the accuracy, from per-row correctness (0/1)."""
    return bootstrap_mean_ci(np.asarray(correct, dtype=np.float64))


def load_average() -> str:
    try:
        return "load average " + ", ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "load average n/a"


def metric(data, scores: np.ndarray) -> tuple[str, float]:
    """(metric name, value) on the test split: AUC for binary, accuracy for multiclass."""
    if data.task == "binary":
        return "auc", float(roc_auc_score(data.test.labels, scores))
    return "accuracy", float((scores.argmax(axis=1) == data.test.labels).mean())


def logistic_regression_auc(data) -> float:
    """sklearn logistic regression on one-hot categoricals (rare values pooled) + standardized numerics."""
    enc = OneHotEncoder(handle_unknown="infrequent_if_exist", min_frequency=5).fit(data.train.inputs["categorical"])
    scaler = StandardScaler().fit(data.train.inputs["numeric"])

    def features(split):
        return sp.hstack([enc.transform(split.inputs["categorical"]),
                          sp.csr_matrix(scaler.transform(split.inputs["numeric"]))]).tocsr()

    lr = LogisticRegression(C=0.5, max_iter=400).fit(features(data.train), data.train.labels)
    return float(roc_auc_score(data.test.labels, lr.decision_function(features(data.test))))


def bag_of_words_correct(data) -> np.ndarray:
    """Per test row, whether the bag-of-words model (TF-IDF unigrams + logistic regression) is right."""
    texts = data.meta["texts"]
    vec = TfidfVectorizer().fit(texts["train"])
    lr = LogisticRegression(C=10.0, max_iter=1000).fit(vec.transform(texts["train"]), data.train.labels)
    return lr.predict(vec.transform(texts["test"])) == data.test.labels


def _row(name: str, model: str, metric_name: str, value: float, correct=None, **extra) -> dict:
    row = {"dataset": name, "model": model, "metric": metric_name, "test": value, **extra}
    if correct is not None:
        row["low"], row["high"] = accuracy_interval(correct)
    return row


def run(smoke: bool = False, fresh: bool = True, datasets=None, distill: bool = False):
    """Yield one row per model (and per reference baseline) as it finishes."""
    for name in datasets or zoo.SIZES:
        data = optlab_data.load(name, smoke=smoke)
        models = {}
        for size in zoo.SIZES[name]:
            model = models[size] = zoo.get(name, size, smoke=smoke, data=data, fresh=fresh)
            scores = logits(model, data.test)
            metric_name, value = metric(data, scores)
            correct = scores.argmax(axis=1) == data.test.labels if metric_name == "accuracy" else None
            yield _row(name, size, metric_name, value, correct, params=weights.param_count(model),
                       train_s=model.optlab_train_log["train_s"], load=load_average())
        start = time.perf_counter()
        if name == "bids":
            yield ({"dataset": name, "model": "oracle (true p)", "metric": "auc", "test": data.meta["oracle_auc"]})
            value = logistic_regression_auc(data)
            yield ({"dataset": name, "model": "logistic regression", "metric": "auc", "test": value,
                    "train_s": time.perf_counter() - start})
        elif name == "intents":
            correct = bag_of_words_correct(data)
            yield _row(name, "bag-of-words logreg", "accuracy", float(correct.mean()), correct,
                       train_s=time.perf_counter() - start)
            if distill:
                yield from _distilled(data, models["teacher"])


def _distilled(data, teacher):
    """The Distill recipe (student initialised from alternate teacher layers, KD loss) and its
    from-scratch control, both under the recipe's own training budget."""
    with tempfile.TemporaryDirectory() as workdir:
        for label, recipe in (("student, distilled", Distill()), ("student, Distill ctrl", Distill(from_scratch=True))):
            candidate = apply(recipe, teacher, data, workdir=workdir)
            scores = np.concatenate([candidate.predict(b) for b in data.test.batches(512)])
            correct = scores.argmax(axis=1) == data.test.labels
            yield _row(data.name, label, "accuracy", float(correct.mean()), correct,
                       params=candidate.meta["student_params"], train_s=candidate.meta["train_s"])


def verdict(rows: list[dict], smoke: bool) -> list[dict]:
    """The teacher's targets, judged on the intents rows: one targets-table row per target."""
    by_model = {r["model"]: r for r in rows if r["dataset"] == "intents"}
    teacher = by_model.get("teacher")
    if teacher is None:
        return []
    command = f"python -m optlab.bench zoo --datasets intents{' --smoke' if smoke else ''}"
    out = []
    for other, key in (("student", "over_student_points"), ("bag-of-words logreg", "over_bag_of_words_points")):
        ref = by_model[other]
        gap = 100 * (teacher["test"] - ref["test"])
        apart = teacher["low"] > ref["high"]
        ok = gap >= TEACHER_TARGETS[key] and apart
        judged = "(the target is for the full setting)" if smoke else ("MET" if ok else "NOT MET")
        out.append(target(f"teacher - {other}, accuracy points", gap, None if smoke else ok, command,
                          f"teacher - {other}: {gap:+.1f} points (target >= {TEACHER_TARGETS[key]:.0f}); intervals "
                          f"{'apart' if apart else 'overlap'} -> {judged}"))
    limit = TEACHER_MAX_TRAIN_S[smoke]
    ok = teacher["train_s"] <= limit
    out.append(target("teacher training seconds", teacher["train_s"], ok, command,
                      f"teacher training: {teacher['train_s']:.1f} s (target <= {limit:.0f} s, "
                      f"{'smoke' if smoke else 'full'}) -> {'MET' if ok else 'NOT MET'} "
                      f"({teacher.get('load', load_average())} when it finished)"))
    if "student, distilled" in by_model:
        distilled, control = by_model["student, distilled"], by_model["student, Distill ctrl"]
        apart = distilled["low"] > control["high"] or control["low"] > distilled["high"]
        out.append(target("distilled student, share of the teacher's accuracy", distilled["test"] / teacher["test"],
                          None, command + " --distill",
                          f"distilled student: {100 * distilled['test']:.1f}% = "
                          f"{distilled['test'] / teacher['test']:.1%} of the teacher's accuracy; "
                          f"{100 * (distilled['test'] - control['test']):+.1f} points vs the same student trained "
                          f"without a teacher (intervals {'apart' if apart else 'overlap'})"))
    return out


def _interval_text(row) -> str:
    return "" if missing(row.get("low")) else f"[{row['low']:.4f}, {row['high']:.4f}]"


TABLE = Layout((Col("dataset", "dataset", 9, "<"), Col("model", "model", 23, "<"),
                Col("params", "params", 10, spec=","), Col("train_s", "train_s", 9, spec=".1f"),
                Col("metric", "metric", 9, "<", before="  "), Col("test", "test", 8, spec=".4f"),
                Col("interval", "95% interval", 17, "<", before="  ", text=_interval_text)))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m optlab.bench zoo", description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="smoke data and training settings (CI)")
    parser.add_argument("--cached", action="store_true", help="reuse cached models instead of retraining")
    parser.add_argument("--fresh", action="store_true", help="retrain even when cached (the default)")
    parser.add_argument("--datasets", nargs="*", default=None, help="subset of datasets (space- or comma-separated)")
    parser.add_argument("--distill", action="store_true",
                        help="intents: also the Distill recipe's student and its from-scratch control")
    parser.add_argument("--json", default=None, help="write the tables and targets to this file")
    args = parser.parse_args(argv or [])
    out = Renderer("zoo", "python -m optlab.bench zoo " + " ".join(argv or []))
    out.say(f"CPU: {cpu_model()} | torch threads: {torch.get_num_threads()} | torch {torch.__version__} | "
            f"setting: {'smoke' if args.smoke else 'full'} | {load_average()}")
    names = [n for a in args.datasets for n in a.split(",") if n] if args.datasets else None
    frame = out.table("models", TABLE, run(smoke=args.smoke, fresh=not args.cached, datasets=names,
                                           distill=args.distill))
    out.targets(verdict(frame.to_dict(orient="records"), args.smoke))
    out.say(f"done | {load_average()}")
    out.write_json(args.json)
    return 0
