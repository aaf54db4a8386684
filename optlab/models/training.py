"""A plain, deterministic training loop shared by the zoo, fine-tuning after pruning and distillation.

`train(model, data, epochs=, lr=, batch_size=)` runs AdamW with a short warm-up and a
linear decay, a fixed data order per seed, and stops with `TrainingDiverged` the moment
the loss is NaN/inf. Distillation plugs in its own `loss_fn(model, inputs, labels)`.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from optlab.data.datasets import Batch, Dataset, Split, trim_padding

# torch is imported inside the functions that use it: modules that only name `train` or `to_tensors`
# (the zoo's specs, the techniques' registry) must not load it.


class TrainingDiverged(RuntimeError):
    """The training loss became NaN or infinite."""


@dataclass
class TrainLog:
    """What a training run did: epochs and steps run, seconds, mean loss per epoch, why it stopped."""

    epochs: int = 0
    steps: int = 0
    train_s: float = 0.0
    epoch_losses: list[float] = field(default_factory=list)
    stopped_by: str = "epochs"  # epochs | max_seconds | on_epoch
    lr: float = 0.0
    batch_size: int = 0

    @property
    def final_loss(self) -> float:
        return self.epoch_losses[-1] if self.epoch_losses else float("nan")

    def to_dict(self) -> dict[str, Any]:
        return {"epochs": self.epochs, "steps": self.steps, "train_s": self.train_s, "epoch_losses": self.epoch_losses,
                "stopped_by": self.stopped_by, "lr": self.lr, "batch_size": self.batch_size}


def to_tensors(batch: Batch) -> dict:
    """A batch of numpy arrays as torch tensors (zero-copy where the array allows it)."""
    import torch

    return {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in batch.items()}


def default_loss(model, inputs: dict, labels):
    """Cross-entropy for (N, C) logits; binary cross-entropy with logits for (N,) and (N, 1) logits."""
    import torch.nn.functional as F

    logits = model(**inputs)
    if logits.ndim == 2 and logits.shape[1] == 1:  # one score per row: a binary model, not one class
        logits = logits[:, 0]
    if logits.ndim == 1:
        return F.binary_cross_entropy_with_logits(logits, labels.float())
    return F.cross_entropy(logits, labels.long())


def _batch_order(split: Split, batch_size: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Shuffled row batches; text rows are bucketed by length first so batches carry little padding."""
    perm = rng.permutation(len(split))
    mask = split.inputs.get("attention_mask")
    if mask is not None:
        lengths = mask.sum(axis=1)
        chunk = batch_size * 32
        perm = np.concatenate(
            [c[np.argsort(lengths[c], kind="stable")] for c in np.split(perm, range(chunk, len(perm), chunk))]
        )
    batches = [perm[i:i + batch_size] for i in range(0, len(perm), batch_size)]
    return [batches[i] for i in rng.permutation(len(batches))]


def train(model, data: Split | Dataset, *, epochs: int, lr: float, batch_size: int,
          loss_fn: Callable | None = None, seed: int = 0, max_seconds: float | None = None,
          on_epoch: Callable[[int, TrainLog], bool | None] | None = None, weight_decay: float = 0.01,
          warmup_fraction: float = 0.05, clip_grad_norm: float | None = 1.0, threads: int | None = None) -> TrainLog:
    """Train `model` in place on a Split (or a Dataset's train split); return a `TrainLog`.

    `on_epoch(epoch, log)` is called after each epoch; returning True stops training.
    `max_seconds` stops after the step that passes the budget. `threads` sets torch's thread
    count for the run and `seed` torch's RNG inside it: both are restored after. The model is
    left in eval mode.
    """
    import torch

    previous_threads = torch.get_num_threads()
    if threads:
        torch.set_num_threads(int(threads))
    try:
        with torch.random.fork_rng(devices=[]):
            return _train(model, data, epochs=epochs, lr=lr, batch_size=batch_size, loss_fn=loss_fn, seed=seed,
                          max_seconds=max_seconds, on_epoch=on_epoch, weight_decay=weight_decay,
                          warmup_fraction=warmup_fraction, clip_grad_norm=clip_grad_norm)
    finally:
        torch.set_num_threads(previous_threads)


def _train(model, data, *, epochs, lr, batch_size, loss_fn, seed, max_seconds, on_epoch, weight_decay,
           warmup_fraction, clip_grad_norm) -> TrainLog:
    import torch

    split = data.train if isinstance(data, Dataset) else data
    if not isinstance(split, Split):
        raise TypeError(f"train() needs an optlab Split or Dataset, got {type(data).__name__}")
    if epochs < 1 or batch_size < 1 or not lr > 0:
        raise ValueError(f"epochs ({epochs}) and batch_size ({batch_size}) must be >= 1 and lr ({lr}) > 0")
    loss_fn = loss_fn or default_loss
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    params = [p for p in model.parameters() if p.requires_grad]
    # fused: one kernel for every parameter's update (about 7% of a small BERT's step on one thread)
    fused = all(p.dtype in (torch.float32, torch.float16, torch.bfloat16, torch.float64) for p in params) or None
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, fused=fused)
    total_steps = epochs * math.ceil(len(split) / batch_size)
    warmup = max(1, int(warmup_fraction * total_steps))
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min((s + 1) / warmup, max(0.0, (total_steps - s) / max(1, total_steps - warmup))))
    log = TrainLog(lr=lr, batch_size=batch_size)
    start = time.perf_counter()
    model.train()
    try:
        for epoch in range(epochs):
            losses = []
            for rows in _batch_order(split, batch_size, rng):
                inputs = to_tensors(trim_padding({k: v[rows] for k, v in split.inputs.items()}))
                labels = torch.from_numpy(np.ascontiguousarray(split.labels[rows]))
                loss = loss_fn(model, inputs, labels)
                if not torch.isfinite(loss):
                    raise TrainingDiverged(
                        f"loss became {loss.item()} at epoch {epoch + 1}, step {log.steps + 1}; "
                        f"lower the learning rate (lr={lr}) or check the inputs for NaN/inf")
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if clip_grad_norm:
                    torch.nn.utils.clip_grad_norm_(params, clip_grad_norm)
                optimizer.step()
                schedule.step()
                losses.append(loss.item())
                log.steps += 1
                if max_seconds is not None and time.perf_counter() - start > max_seconds:
                    log.stopped_by = "max_seconds"
                    break
            log.epochs = epoch + 1
            log.epoch_losses.append(float(np.mean(losses)))
            log.train_s = time.perf_counter() - start
            if log.stopped_by == "max_seconds":
                break
            if on_epoch is not None and on_epoch(epoch, log):
                log.stopped_by = "on_epoch"
                break
    finally:
        model.eval()
    log.train_s = time.perf_counter() - start
    return log
