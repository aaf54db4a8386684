"""`python -m optlab.bench zoo [--smoke] [--cached]`: train every reference model and print a table.

Per model: train time, parameters and the test metric, beside references: digits accuracy
(target >= 97%); bids AUC beside the oracle AUC (target within 0.02) and a logistic
regression on one-hot categoricals; intents accuracy beside a bag-of-words linear model.
Trains fresh by default (the cache is overwritten); `--cached` reuses cached models.
"""
from __future__ import annotations

import argparse
import platform
import time

import numpy as np


def cpu_model() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def logits(model, split, batch_size: int = 512) -> np.ndarray:
    import torch

    from optlab.models.training import to_tensors

    with torch.inference_mode():
        return np.concatenate([model(**to_tensors(b)).numpy() for b in split.batches(batch_size)])


def metric(data, scores: np.ndarray) -> tuple[str, float]:
    """(metric name, value) on the test split: AUC for binary, accuracy for multiclass."""
    from sklearn.metrics import roc_auc_score

    if data.task == "binary":
        return "auc", float(roc_auc_score(data.test.labels, scores))
    return "accuracy", float((scores.argmax(axis=1) == data.test.labels).mean())


def logistic_regression_auc(data) -> float:
    """sklearn logistic regression on one-hot categoricals (rare values pooled) + standardized numerics."""
    import scipy.sparse as sp
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    enc = OneHotEncoder(handle_unknown="infrequent_if_exist", min_frequency=5).fit(data.train.inputs["categorical"])
    scaler = StandardScaler().fit(data.train.inputs["numeric"])

    def features(split):
        return sp.hstack([enc.transform(split.inputs["categorical"]),
                          sp.csr_matrix(scaler.transform(split.inputs["numeric"]))]).tocsr()

    lr = LogisticRegression(C=0.5, max_iter=400).fit(features(data.train), data.train.labels)
    return float(roc_auc_score(data.test.labels, lr.decision_function(features(data.test))))


def bag_of_words_accuracy(data) -> float:
    """sklearn TF-IDF unigram bag of words + logistic regression on the raw texts."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    texts = data.meta["texts"]
    vec = TfidfVectorizer().fit(texts["train"])
    lr = LogisticRegression(C=10.0, max_iter=1000).fit(vec.transform(texts["train"]), data.train.labels)
    return float((lr.predict(vec.transform(texts["test"])) == data.test.labels).mean())


def run(smoke: bool = False, fresh: bool = True, datasets=None):
    """Yield one row per model (and per reference baseline) as it finishes."""
    from optlab.data import datasets as optlab_data
    from optlab.models import weights, zoo

    for name in datasets or zoo.SIZES:
        data = optlab_data.load(name, smoke=smoke)
        for size in zoo.SIZES[name]:
            model = zoo.get(name, size, smoke=smoke, data=data, fresh=fresh)
            metric_name, value = metric(data, logits(model, data.test))
            yield ({"dataset": name, "model": size, "params": weights.param_count(model),
                         "train_s": model.optlab_train_log["train_s"], "metric": metric_name, "test": value})
        start = time.perf_counter()
        if name == "bids":
            yield ({"dataset": name, "model": "oracle (true p)", "metric": "auc", "test": data.meta["oracle_auc"]})
            value = logistic_regression_auc(data)
            yield ({"dataset": name, "model": "logistic regression", "metric": "auc", "test": value,
                         "train_s": time.perf_counter() - start})
        elif name == "intents":
            value = bag_of_words_accuracy(data)
            yield ({"dataset": name, "model": "bag-of-words logreg", "metric": "accuracy", "test": value,
                         "train_s": time.perf_counter() - start})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m optlab.bench zoo", description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="smoke data and training settings (CI)")
    parser.add_argument("--cached", action="store_true", help="reuse cached models instead of retraining")
    parser.add_argument("--fresh", action="store_true", help="retrain even when cached (the default)")
    parser.add_argument("--datasets", nargs="*", default=None, help="subset of datasets")
    args = parser.parse_args(argv or [])
    import torch

    print(f"CPU: {cpu_model()} | torch threads: {torch.get_num_threads()} | torch {torch.__version__} | "
          f"setting: {'smoke' if args.smoke else 'full'}")
    print(f"{'dataset':<9}{'model':<21}{'params':>10}{'train_s':>9}  {'metric':<9}{'test':>8}", flush=True)
    for r in run(smoke=args.smoke, fresh=not args.cached, datasets=args.datasets):
        params = f"{r['params']:,}" if "params" in r else "-"
        train_s = f"{r['train_s']:.1f}" if "train_s" in r else "-"
        print(f"{r['dataset']:<9}{r['model']:<21}{params:>10}{train_s:>9}  {r['metric']:<9}{r['test']:>8.4f}",
              flush=True)
    return 0
