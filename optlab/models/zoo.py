"""Reference models: built from a config, trained here from scratch in seconds, cached on disk.

`get("digits")` returns a trained model in eval mode, from the cache when a model with the
same architecture, training config, data and seed was trained before (state_dict saved
with torch.save, loaded with weights_only=True, checked by a sha256 sidecar).
`baseline(model)` wraps one as the eager fp32 `Candidate` every study compares against.

torch (and the architectures and training loop built on it) is imported where used: importing the
zoo for its specs and cache paths must not cost a process torch's import.
"""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from optlab.data import cache
from optlab.data.cache import cache_dir
from optlab.data.datasets import Batch, Dataset, load
from optlab.data.hashing import sha256_json
from optlab.models import weights
from optlab.models.candidate import Candidate

VERSION = 3  # 3: fused AdamW; the full intents models train on two threads
SIZES = {"digits": ("teacher", "student"), "bids": ("teacher", "student"), "intents": ("teacher", "student")}
ARCH = {
    ("digits", "teacher"): {"channels": [16, 32, 32], "pool_after": [1, 2], "hidden": 128},
    ("digits", "student"): {"channels": [8, 16], "pool_after": [0, 1], "hidden": 32},
    ("bids", "teacher"): {"embed_dim": 16, "hidden": [256, 128], "dropout": 0.0},
    ("bids", "student"): {"embed_dim": 8, "hidden": [64], "dropout": 0.0},
    ("intents", "teacher"): {"layers": 4, "hidden": 64, "heads": 4, "intermediate": 128},
    ("intents", "student"): {"layers": 2, "hidden": 64, "heads": 4, "intermediate": 128},
}
# Training settings, full and smoke (smoke also trains on the smaller smoke data).
TRAINING = {
    ("digits", False): {"epochs": 10, "lr": 5e-3, "batch_size": 128},
    ("digits", True): {"epochs": 5, "lr": 1e-2, "batch_size": 128},
    ("bids", False): {"epochs": 3, "lr": 2e-3, "batch_size": 512, "weight_decay": 1e-4},
    ("bids", True): {"epochs": 6, "lr": 3e-3, "batch_size": 512, "weight_decay": 1e-4},
    # intents v2 (datasets/README.md): 3,000 small steps at a low rate let the 4-layer teacher learn
    # which offer a cancellation leaves; the 2-layer student mostly does not in the same budget.
    # Two training threads, the cores of a workshop laptop: 3,000 steps in about a minute instead of 1.5.
    ("intents", False): {"epochs": 3, "lr": 1e-3, "batch_size": 16, "warmup_fraction": 0.1, "threads": 2},
    ("intents", True): {"epochs": 3, "lr": 3e-3, "batch_size": 32, "warmup_fraction": 0.1},
}
# Training runs on a fixed number of threads, one unless a setting above says "threads": the
# same weights on any machine (reduction order depends on the thread count, not on the cores),
# and no slowdown from oversubscription when other work shares the cores.
TRAIN_THREADS = 1


def training(dataset: str, smoke: bool) -> dict[str, Any]:
    """The training settings of `dataset`'s zoo models (full or smoke), with their thread count."""
    return {"threads": TRAIN_THREADS} | TRAINING[(dataset, smoke)]
TRAINED: Counter = Counter()  # (dataset, size, smoke) -> trainings run in this process (cache hits add nothing)


def _check(dataset: str, size: str) -> None:
    if dataset not in SIZES:
        raise ValueError(f"unknown dataset {dataset!r}; valid names: {', '.join(SIZES)}")
    if size not in SIZES[dataset]:
        raise ValueError(f"unknown size {size!r} for {dataset!r}; valid sizes: {', '.join(SIZES[dataset])}")


def spec(dataset: str, size: str, data: Dataset | None = None) -> dict[str, Any]:
    """Everything needed to rebuild the architecture without the data: name, size, constructor kwargs."""
    _check(dataset, size)
    data = data if data is not None else load(dataset, smoke=True)
    kwargs = dict(ARCH[(dataset, size)])
    if dataset == "digits":
        kwargs["num_classes"] = data.num_classes
    elif dataset == "bids":
        kwargs |= {"cardinalities": data.meta["cardinalities"], "numeric_mean": data.meta["numeric_mean"],
                   "numeric_std": data.meta["numeric_std"]}
    else:
        kwargs |= {"vocab_size": data.meta["vocab_size"], "num_classes": data.num_classes,
                   "max_length": data.meta["max_length"]}
    return {"dataset": dataset, "size": size, "kwargs": kwargs}


def from_spec(model_spec: dict[str, Any]):
    """Build an untrained model from a `spec()` dict (what a fresh process does to reload one)."""
    from optlab.models.architectures import ARCHITECTURES  # on use: torch, which ONNX-only loaders never pay for

    model = ARCHITECTURES[model_spec["dataset"]](**model_spec["kwargs"])
    model.optlab_spec = model_spec
    return model.eval()


def build(dataset: str, size: str = "teacher", data: Dataset | None = None, seed: int = 0):
    """An untrained model of `size` for `dataset` (weights initialised from `seed`)."""
    import torch

    model_spec = spec(dataset, size, data)
    with torch.random.fork_rng(devices=[]):  # seeded init without touching the caller's RNG
        torch.manual_seed(seed)
        return from_spec(model_spec)


def _cache_paths(dataset: str, size: str, smoke: bool, seed: int, data: Dataset) -> tuple[Path, dict]:
    key = {"version": VERSION, "spec": spec(dataset, size, data), "training": TRAINING[(dataset, smoke)],
           "data": data.fingerprint, "seed": seed}
    digest = sha256_json(key)[:16]
    tag = "-smoke" if smoke else ""
    return cache_dir("models") / f"{dataset}-{size}{tag}-seed{seed}-{digest}.pt", key


def get(dataset: str, size: str = "teacher", smoke: bool = False, seed: int = 0, data: Dataset | None = None,
        fresh: bool = False):
    """A trained reference model in eval mode, trained now (and cached) or loaded from the cache.

    `data` defaults to `load(dataset, smoke=smoke)`; `fresh=True` retrains even when cached.
    The training log is on `model.optlab_train_log` (a dict).
    """
    import torch

    from optlab.models.training import train  # on use, as torch

    _check(dataset, size)
    data = data if data is not None else load(dataset, smoke=smoke)
    path, key = _cache_paths(dataset, size, smoke, seed, data)
    record = path.with_suffix(".json")
    if not fresh and cache.is_valid(path) and cache.is_valid(record):
        info = json.loads(record.read_text())
        model = from_spec(info["key"]["spec"])
        model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        model.optlab_train_log = info["train_log"]
        return model.eval()
    model = build(dataset, size, data, seed=seed)
    log = train(model, data, seed=seed, **training(dataset, smoke))
    TRAINED[(dataset, size, smoke)] += 1
    cache.write_checked(path, lambda tmp: torch.save(model.state_dict(), tmp))
    info = {"key": key, "train_log": log.to_dict(), "param_count": weights.param_count(model)}
    cache.write_checked(record, lambda tmp: tmp.write_text(json.dumps(info, indent=1, sort_keys=True)))
    model.optlab_train_log = info["train_log"]
    return model.eval()


def _predictor(model):
    import torch

    from optlab.models.training import to_tensors  # on use, as torch

    def predict(batch: Batch) -> np.ndarray:
        with torch.inference_mode():
            return model(**to_tensors(batch)).float().numpy()

    return predict


def baseline(model, name: str = "baseline") -> Candidate:
    """The model as an eager fp32 PyTorch Candidate (torch.inference_mode), reloadable in a fresh process.

    The state_dict (+ a spec JSON beside it) is saved under the cache's `candidates/` folder;
    `optlab.models.zoo:load_predict(artifact_path)` rebuilds the predictor from them.
    """
    import torch

    model_spec = getattr(model, "optlab_spec", None)
    state = model.state_dict()
    folder = cache.cache_dir("candidates", f"{name}-{weights.digest(model)[:16]}")
    path = folder / "model.pt"
    if not cache.is_valid(path):
        cache.write_checked(path, lambda tmp: torch.save(state, tmp))
    if model_spec is not None:
        (folder / "spec.json").write_text(json.dumps(model_spec, sort_keys=True))
    model.eval()
    return Candidate(name=name, predict_fn=_predictor(model), family="baseline", runtime="torch", device="cpu",
                     model=model, artifact_path=path,
                     loader="optlab.models.zoo:load_predict" if model_spec is not None else None,
                     meta={"param_count": weights.param_count(model), "dtype": "float32", "mode": "eager",
                           "dataset": None if model_spec is None else model_spec["dataset"]})


def load_predict(path, threads: int | None = None):
    """Rebuild a baseline's predictor from its artifact (model.pt + spec.json beside it)."""
    import torch

    path = Path(path)
    if threads:
        torch.set_num_threads(int(threads))
    model = from_spec(json.loads((path.parent / "spec.json").read_text()))
    model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    return _predictor(model.eval())


# --- language models -------------------------------------------------------------------

LANGUAGE_VERSION = 1
LANGUAGE_TRAINED: Counter = Counter()  # smoke -> language-model trainings run in this process


def _language_key(smoke: bool, fingerprint: str) -> dict[str, Any]:
    from dataclasses import asdict

    from optlab.models import language

    return {"version": LANGUAGE_VERSION, "vocab_size": language.VOCAB_SIZE, "corpus": fingerprint,
            "eval_length": language.EVAL_LENGTH,
            "specs": {s.name: asdict(s) for s in (language.TARGET, language.DRAFT)},
            "training": {s.name: asdict(language.TRAINING[(s.name, smoke)]) for s in (language.TARGET, language.DRAFT)}}


def _train_language(folder: Path, key: dict, smoke: bool) -> dict:
    """Train tokenizer, target and draft; write them and their record into `folder`; return the record."""
    import torch

    from optlab.data.text_corpus import load as load_corpus
    from optlab.models import language

    corpus = load_corpus()
    tokenizer_json = language.train_tokenizer(corpus.text("train"))
    tokenizer = language.tokenizer_from_json(tokenizer_json)
    train_docs = language.encode_split(tokenizer, corpus, "train")
    val_docs = language.encode_split(tokenizer, corpus, "validation")
    record = {"key": key, "log": {}, "perplexity": {}, "param_count": {}}
    cache.write_checked(folder / "tokenizer.json", lambda tmp: tmp.write_text(tokenizer_json))
    for spec in (language.TARGET, language.DRAFT):
        settings = language.TRAINING[(spec.name, smoke)]
        model = language.build(spec, tokenizer, seed=settings.seed)
        record["log"][spec.name] = language.train_lm(model, train_docs, settings, tokenizer.eos_token_id)
        windows = language.windows(val_docs, language.EVAL_LENGTH, settings.eval_windows)
        record["perplexity"][spec.name] = language.perplexity(model, windows)
        record["param_count"][spec.name] = language.param_count(model)
        cache.write_checked(folder / f"{spec.name}.pt", lambda tmp, m=model: torch.save(m.state_dict(), tmp))
    record["log"]["corpus"] = corpus.fingerprint
    text = json.dumps(record, indent=1, sort_keys=True)
    cache.write_checked(folder / "record.json", lambda tmp: tmp.write_text(text))
    LANGUAGE_TRAINED[smoke] += 1
    return record


def language_models(smoke: bool = False, fresh: bool = False):
    """The trained target and draft language models with their tokenizer and validation perplexities
    (`optlab.models.language.LanguageModels`), trained now and cached, or loaded from the cache.

    The cache key holds the corpus fingerprint (the hash of this Python's help topics, which change
    between CPython releases), the architectures and the training settings; `fresh=True` retrains."""
    import torch

    from optlab.data.text_corpus import load as load_corpus
    from optlab.models import language

    key = _language_key(smoke, load_corpus().fingerprint)
    folder = cache_dir("models", f"language{'-smoke' if smoke else ''}-{sha256_json(key)[:16]}")
    files = [folder / name for name in ("tokenizer.json", "target.pt", "draft.pt", "record.json")]
    if fresh or not all(cache.is_valid(path) for path in files):
        _train_language(folder, key, smoke)
    record = json.loads((folder / "record.json").read_text())
    tokenizer = language.tokenizer_from_json((folder / "tokenizer.json").read_text())
    models = {}
    for spec in (language.TARGET, language.DRAFT):
        model = language.build(spec, tokenizer)
        model.load_state_dict(torch.load(folder / f"{spec.name}.pt", map_location="cpu", weights_only=True))
        models[spec.name] = model.eval()
    return language.LanguageModels(models["target"], models["draft"], tokenizer, record["perplexity"]["target"],
                                   record["perplexity"]["draft"], record["log"])
