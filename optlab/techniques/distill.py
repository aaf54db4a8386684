"""Knowledge distillation: train a smaller student (the zoo's, or an analyst's own) to match a teacher.

Loss = alpha * T^2 * KL(teacher_T || student_T) + (1 - alpha) * hard-label loss; for the
binary click model the soft term is BCE against the teacher's softened probability
sigmoid(t / T); for an analyst's outputs (task "outputs") the soft term is the mean squared
difference from the teacher's outputs, mixed with MSE on regression targets when labelled.
`Distill(from_scratch=True)` is the control: the same student, budget and
seed on hard labels only, so a study shows whether distillation actually helped.
"""
from __future__ import annotations

import re
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from optlab.data.datasets import Split
from optlab.instruments.latency import torch_threads
from optlab.models import training, weights, zoo
from optlab.models.candidate import Candidate
from optlab.models.module_outputs import FlatOutputs
from optlab.models.runtimes import torch_predict_fn
from optlab.models.training import to_tensors
from optlab.recipes.recipe import Distill
from optlab.techniques.prune import require_training_rows
from optlab.techniques.registry import register
from optlab.techniques.torch_io import require_module
from optlab.techniques.workdirs import artifact_file, resolve_workdir

_TEACHER_LOGITS: "OrderedDict[tuple, np.ndarray]" = OrderedDict()  # (teacher weights, data) -> logits
_TEACHER_CACHE_SIZE = 4
_LAYER_KEY = re.compile(r"^(?P<prefix>.*encoder\.layers?\.)(?P<index>\d+)(?P<rest>\..*)$")


@register(Distill)
def apply_distill(recipe: Distill, model: Any, data: Any, *, threads: int | None = None,
                  workdir: Path | None = None) -> Candidate:
    """Train a fresh `recipe.student` for `data` from the teacher `model` (never mutated); torch's
    thread count is `threads` for the call and restored after."""
    require_module(model, recipe)
    require_training_rows(data, what=f"{recipe.name} trains a student", fix="or compare your own smaller model "
                          "as a candidate")
    with torch_threads(threads):
        return _apply_distill(recipe, model, data, threads=threads, workdir=workdir)


def _apply_distill(recipe: Distill, model: Any, data: Any, *, threads: int | None,
                   workdir: Path | None) -> Candidate:

    teacher = model
    student = build_student(recipe.student, teacher, data)
    teacher_params, student_params = weights.param_count(teacher), weights.param_count(student)
    if student_params > teacher_params:
        raise ValueError(f"student {recipe.student!r} ({student_params:,} parameters) is larger than its "
                         f"teacher ({teacher_params:,}); distil into a smaller model")

    budget = student_budget(data)
    epochs = recipe.epochs if recipe.epochs is not None else budget["epochs"]
    lr = recipe.lr if recipe.lr is not None else budget["lr"]
    meta: dict[str, Any] = {"teacher_params": teacher_params, "student_params": student_params,
                            "params_before": teacher_params, "params_after": student_params,
                            "student": recipe.student, "epochs": epochs, "lr": lr,
                            "batch_size": budget["batch_size"], "warmup_fraction": budget["warmup_fraction"],
                            "from_scratch": recipe.from_scratch}
    labelled = data.task != "outputs" or bool(data.meta.get("labelled") and data.meta.get("regression_metric"))
    if recipe.from_scratch and not labelled:
        raise ValueError("Distill(from_scratch=True) trains on labels only, and these rows have no labels it can "
                         "train on (regression targets with metric='mae'|'rmse'|'r2', or class labels)")
    if recipe.from_scratch and data.task == "outputs":  # regression targets: MSE on the labels alone
        targets = np.concatenate([data.train.labels.reshape(len(data.train), 1).astype(np.float32),
                                  np.zeros((len(data.train), 1), np.float32)], axis=1)
        train_on, loss_fn = Split(data.train.inputs, targets), KDLoss(task="outputs", alpha=0.0)
        meta["initialised_from_teacher"] = 0
    elif recipe.from_scratch:
        train_on, loss_fn = data, None
        meta["initialised_from_teacher"] = 0
    else:
        meta["initialised_from_teacher"] = init_from_teacher(student, teacher)
        targets = np.concatenate([data.train.labels.reshape(len(data.train), 1).astype(np.float32),
                                  teacher_logits(teacher, data).reshape(len(data.train), -1)], axis=1)
        train_on = Split(data.train.inputs, targets)
        loss_fn = KDLoss(task=data.task, temperature=recipe.temperature, alpha=recipe.alpha if labelled else 1.0)
    log = training.train(student, train_on, epochs=epochs, lr=lr, batch_size=budget["batch_size"],
                         loss_fn=loss_fn, seed=0, weight_decay=budget["weight_decay"],
                         warmup_fraction=budget["warmup_fraction"], threads=budget["threads"])
    student.eval()
    meta.update({"train_s": round(log.train_s, 3), "epochs_run": log.epochs, "stopped_by": log.stopped_by,
                 "final_loss": log.final_loss})

    path = artifact_file(resolve_workdir(workdir), recipe.name, ".pt")
    torch.save(student, path)

    return Candidate(name=recipe.name, predict_fn=torch_predict_fn(student), family="distillation",
                     runtime="torch", device="cpu", recipe=recipe, model=student, artifact_path=path,
                     loader="optlab.models.runtimes:load_torch", loader_options={"threads": threads} if threads else {},
                     meta=meta)


def build_student(student: str, teacher: nn.Module, data: Any) -> nn.Module:
    """The student: `factory()` for an import path "package.module:factory" (an analyst's own,
    wrapped like the teacher when the teacher returns several outputs), else a zoo size for data
    the zoo knows."""
    import importlib


    if ":" not in student:
        if data.name not in zoo.SIZES:
            raise ValueError(f"Distill.student={student!r} names a size of optlab.models.zoo, which has no "
                             f"architectures for dataset {data.name!r}; give your own student: "
                             f"Distill(student=MyStudent) or student='package.module:factory' (a class or "
                             f"function returning a fresh torch module)")
        sizes = tuple(zoo.SIZES[data.name])
        if student not in sizes:
            raise ValueError(f"Distill.student={student!r} is not a size the zoo defines for "
                             f"{data.name!r}; choose one of: {', '.join(sizes)}")
        return zoo.build(data.name, student, data=data, seed=0)
    module_name, _, qualname = student.partition(":")
    try:
        factory = importlib.import_module(module_name)
        for part in qualname.split("."):
            factory = getattr(factory, part)
    except (ImportError, AttributeError) as error:
        raise ValueError(f"Distill.student={student!r} cannot be imported here ({error}); the student's "
                         f"module must be importable where the study runs") from None
    torch.manual_seed(0)
    built = factory()
    if not isinstance(built, nn.Module):
        raise ValueError(f"Distill.student={student!r} returned a {type(built).__name__}, not a torch module")

    if isinstance(teacher, FlatOutputs) and not isinstance(built, FlatOutputs):
        built = FlatOutputs(built, list(teacher.names))
    return built


class KDLoss(nn.Module):
    """alpha * T^2 * soft loss + (1 - alpha) * hard loss on targets packed as [label, teacher logits...]."""

    def __init__(self, task: str, temperature: float = 4.0, alpha: float = 0.7):
        super().__init__()
        if task not in ("multiclass", "binary", "outputs"):
            raise ValueError(f"task={task!r}: distillation supports 'multiclass', 'binary' and 'outputs'")
        self.task, self.temperature, self.alpha = task, float(temperature), float(alpha)

    def forward(self, model: nn.Module, inputs: dict[str, torch.Tensor], targets: torch.Tensor) -> torch.Tensor:
        """training.train's loss_fn(model, inputs, labels) signature."""
        targets = targets.float()
        return kd_loss(model(**inputs), targets[:, 1:], targets[:, 0], task=self.task,
                       temperature=self.temperature, alpha=self.alpha)


def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, labels: torch.Tensor, *,
            task: str, temperature: float, alpha: float) -> torch.Tensor:
    """The distillation loss (Hinton et al.): soft term scaled by T^2 so its gradients keep
    their size as T changes, mixed with the hard-label loss."""
    t = float(temperature)
    if task == "outputs":  # an analyst's outputs: match the teacher's values (logit matching), targets by MSE
        if alpha <= 0.0:
            return F.mse_loss(student_logits.reshape(-1), labels.reshape(-1).float())
        soft = F.mse_loss(student_logits.reshape(teacher_logits.shape), teacher_logits)
        if alpha >= 1.0:
            return soft
        hard = F.mse_loss(student_logits.reshape(-1), labels.reshape(-1).float())
        return alpha * soft + (1.0 - alpha) * hard
    if task == "binary":
        s, teacher = student_logits.reshape(-1), teacher_logits.reshape(-1)
        soft = F.binary_cross_entropy_with_logits(s / t, torch.sigmoid(teacher / t))
        hard = F.binary_cross_entropy_with_logits(s, labels.reshape(-1).float())
    else:
        soft = F.kl_div(F.log_softmax(student_logits / t, dim=-1), F.log_softmax(teacher_logits / t, dim=-1),
                        log_target=True, reduction="batchmean")
        hard = F.cross_entropy(student_logits, labels.reshape(-1).long())
    return alpha * t * t * soft + (1.0 - alpha) * hard


def teacher_logits(teacher: nn.Module, data: Any, batch_size: int = 256) -> np.ndarray:
    """The teacher's logits on the train split, computed once per (teacher weights, data)."""
    key = (weights.digest(teacher), getattr(data, "fingerprint", "") or id(data.train), len(data.train))
    if key in _TEACHER_LOGITS:
        _TEACHER_LOGITS.move_to_end(key)
        return _TEACHER_LOGITS[key]

    was_training = teacher.training
    teacher.eval()
    try:
        with torch.inference_mode():
            parts = [teacher(**to_tensors(batch)).float().numpy() for batch in data.train.batches(batch_size)]
    finally:
        teacher.train(was_training)
    logits = np.concatenate(parts, axis=0)
    _TEACHER_LOGITS[key] = logits
    while len(_TEACHER_LOGITS) > _TEACHER_CACHE_SIZE:
        _TEACHER_LOGITS.popitem(last=False)
    return logits


def init_from_teacher(student: nn.Module, teacher: nn.Module) -> int:
    """DistilBERT-style start: copy the teacher's embeddings, head and every k-th encoder layer
    into a student of the same width. Returns how many tensors were copied (0 when the
    student has no encoder layers or different shapes: CNN and MLP students start fresh)."""
    student_state, teacher_state = student.state_dict(), teacher.state_dict()
    student_layers = {int(m["index"]) for m in map(_LAYER_KEY.match, student_state) if m}
    teacher_layers = {int(m["index"]) for m in map(_LAYER_KEY.match, teacher_state) if m}
    if not student_layers or not teacher_layers:
        return 0
    stride = max(len(teacher_layers) // len(student_layers), 1)
    copied = {}
    for key, value in student_state.items():
        match = _LAYER_KEY.match(key)
        source = f"{match['prefix']}{int(match['index']) * stride}{match['rest']}" if match else key
        if source in teacher_state and teacher_state[source].shape == value.shape:
            copied[key] = teacher_state[source].detach().clone()
    student.load_state_dict(copied, strict=False)
    return len(copied)


def student_budget(data: Any) -> dict[str, Any]:
    """The zoo's training settings for `data` (epochs, lr, batch size, weight decay, warm-up) and its
    training threads: the KD run, its from-scratch control and the zoo's own student get exactly the
    same steps, so the same student on any machine (a wall-clock cap made the result depend on the
    machine's speed and load, and gave the slower KD steps fewer of them)."""

    smoke = bool(getattr(data, "meta", {}).get("smoke", False))
    known = (data.name, smoke) in zoo.TRAINING
    base = zoo.training(data.name, smoke) if known else {"epochs": 5, "lr": 1e-3, "batch_size": 64}
    return {"epochs": base["epochs"], "lr": base["lr"], "batch_size": base["batch_size"],
            "weight_decay": base.get("weight_decay", 0.01), "warmup_fraction": base.get("warmup_fraction", 0.05),
            "threads": base.get("threads", zoo.TRAIN_THREADS)}
