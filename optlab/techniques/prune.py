"""Pruning: unstructured magnitude pruning (zeros, stored compressed) and structured pruning
(torch-pruning removes channels, hidden units and attention heads), each fine-tuned to recover.

The honest result: zeros do not make dense kernels faster, so unstructured pruning only
shrinks the artifact (saved as a bitmask plus the surviving values); structured pruning
rebuilds smaller layers, which is what speeds up dense hardware.
"""
from __future__ import annotations

import copy
import io
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from optlab.data.datasets import Split
from optlab.instruments.footprint import torch_footprint
from optlab.instruments.latency import torch_threads
from optlab.models import training, weights, zoo
from optlab.models.candidate import Candidate
from optlab.models.runtimes import torch_predict_fn
from optlab.models.training import to_tensors
from optlab.recipes.recipe import Prune, UnsupportedRecipe
from optlab.techniques.registry import register
from optlab.techniques.torch_io import require_module
from optlab.techniques.workdirs import artifact_file, resolve_workdir

PRUNABLE_TYPES = (nn.Linear, nn.Conv1d, nn.Conv2d)
SPARSE_FORMAT = "optlab-bitmask-v1"
MIN_ZERO_FRACTION_TO_PACK = 0.05  # below this a bitmask costs more than it saves


@register(Prune)
def apply_prune(recipe: Prune, model: Any, data: Any, *, threads: int | None = None,
                workdir: Path | None = None) -> Candidate:
    """Prune a copy of `model` to `recipe.sparsity`, fine-tune it, save it -> Candidate (torch's
    thread count is `threads` for the call and restored after)."""
    require_module(model, recipe)
    require_training_rows(data, what=f"{recipe.name} fine-tunes for {recipe.finetune_epochs} epoch(s)",
                          fix="or Prune(..., finetune_epochs=0)", needed=recipe.finetune_epochs > 0)
    with torch_threads(threads):
        return _apply_prune(recipe, model, data, threads=threads, workdir=workdir)


def _apply_prune(recipe: Prune, model: Any, data: Any, *, threads: int | None, workdir: Path | None) -> Candidate:

    example = to_tensors(_example_batch(data))
    pruned = copy.deepcopy(model).eval()
    pruned.__dict__.pop("optlab_spec", None)  # the zoo's spec no longer describes the pruned shapes
    output = output_layer(pruned, example)
    layers = prunable_layers(pruned, example)
    params_before = weights.param_count(pruned)
    meta: dict[str, Any] = {"params_before": params_before, "dense_size_bytes_before": dense_size_bytes(pruned),
                            "target_sparsity": recipe.sparsity,
                            "scope": recipe.scope, "structured": recipe.structured,
                            "finetune_epochs": recipe.finetune_epochs, "output_layer": _name_of(pruned, output)}
    train_on = finetune_split(model, data) if recipe.finetune_epochs > 0 else None
    meta["notes"] = finetune_notes(data) if recipe.finetune_epochs > 0 else []
    if recipe.structured:
        meta.update(prune_structured(pruned, example, recipe.sparsity, scope=recipe.scope, keep=[output],
                                     layers=layers))
        meta.update(_finetune(pruned, data, recipe, train_on))
    else:
        meta.update(prune_unstructured(pruned, layers, recipe.sparsity, scope=recipe.scope,
                                       finetune=lambda m: meta.update(_finetune(m, data, recipe, train_on))))
    pruned.eval()
    meta["params_after"] = weights.param_count(pruned)
    meta["param_reduction"] = 1.0 - meta["params_after"] / max(params_before, 1)
    meta["zero_fraction"] = torch_footprint(pruned)[1]

    path = artifact_file(resolve_workdir(workdir), recipe.name, ".pt")
    meta["dense_size_bytes"] = dense_size_bytes(pruned)
    if recipe.structured:  # smaller dense layers: a plain whole-module save
        torch.save(pruned, path)
        meta["artifact_format"] = "torch.save(module)"
        loader = "optlab.models.runtimes:load_torch"
    else:
        save_sparse(pruned, path)
        meta["artifact_format"] = SPARSE_FORMAT
        loader = "optlab.techniques.prune:load_pruned"
    meta["compressed_size_bytes"] = path.stat().st_size

    return Candidate(name=recipe.name, predict_fn=torch_predict_fn(pruned), family="pruning", runtime="torch",
                     device="cpu", recipe=recipe, model=pruned, artifact_path=path, loader=loader,
                     loader_options={"threads": threads} if threads else {}, meta=meta)


# --- which layers -------------------------------------------------------------------

def output_layer(model: nn.Module, example: dict[str, torch.Tensor]) -> nn.Module:
    """The last weighted leaf module the forward runs: the classifier head, never pruned."""
    order: list[nn.Module] = []
    hooks = [m.register_forward_hook(lambda mod, *_: order.append(mod))
             for m in model.modules() if isinstance(m, PRUNABLE_TYPES)]
    try:
        with torch.inference_mode():
            model(**example)
    finally:
        for hook in hooks:
            hook.remove()
    if not order:
        raise ValueError(f"{type(model).__name__} has no prunable layers (Linear/Conv1d/Conv2d); "
                         "pruning needs at least one besides the output layer")
    return order[-1]


def prunable_layers(model: nn.Module, example: dict[str, torch.Tensor]) -> list[nn.Module]:
    """Linear/Conv layers except the output layer (embeddings are never prunable layers)."""
    head = output_layer(model, example)
    layers = [m for m in model.modules() if isinstance(m, PRUNABLE_TYPES) and m is not head]
    if not layers:
        raise ValueError(f"{type(model).__name__} has no prunable layers besides its output layer; "
                         "pruning needs a hidden Linear or Conv layer")
    return layers


# --- unstructured -----------------------------------------------------------------

def prune_unstructured(model: nn.Module, layers: list[nn.Module], sparsity: float, *, scope: str = "global",
                       finetune: Callable[[nn.Module], None] | None = None) -> dict[str, Any]:
    """L1 magnitude pruning of `layers`' weights (global ranking or per layer), in place.

    The masks stay on while `finetune(model)` runs, so pruned weights stay zero; then they
    are made permanent (prune.remove)."""
    from torch.nn.utils import prune

    targets = [(layer, "weight") for layer in layers]
    if scope == "global":
        prune.global_unstructured(targets, pruning_method=prune.L1Unstructured, amount=float(sparsity))
    else:
        for layer, name in targets:
            prune.l1_unstructured(layer, name, amount=float(sparsity))
    if finetune is not None:
        finetune(model)
    for layer, name in targets:
        prune.remove(layer, name)
    zeros = sum(int((layer.weight == 0).sum()) for layer in layers)
    total = sum(layer.weight.numel() for layer in layers)
    return {"sparsity": zeros / total, "sparsity_of": "weights of the pruned layers", "pruned_layers": len(layers)}


# --- structured -------------------------------------------------------------------

def attention_modules(model: nn.Module) -> list[nn.Module]:
    """Hugging Face style self-attention blocks (query/key/value Linear + head counts)."""
    return [m for m in model.modules()
            if all(isinstance(getattr(m, a, None), nn.Linear) for a in ("query", "key", "value"))
            and hasattr(m, "num_attention_heads") and hasattr(m, "attention_head_size")]


def prune_structured(model: nn.Module, example: dict[str, torch.Tensor], sparsity: float, *,
                     scope: str = "global", keep: list[nn.Module] = (),
                     layers: list[nn.Module] | None = None) -> dict[str, Any]:
    """Remove `sparsity` of the channels / hidden units / attention heads in place (torch-pruning).

    Embeddings and `keep` (the output layer) are never pruned, so the vocabulary, the
    hidden size a residual stream shares with the embeddings, and the classes stay intact.
    Returns the measured sparsity: the fraction of `layers`' output units removed."""
    import torch_pruning as tp

    layers = list(layers) if layers is not None else prunable_layers(model, example)
    units_before = sum(_out_units(m) for m in layers)

    attention = attention_modules(model)
    heads = {linear: m.num_attention_heads for m in attention for linear in (m.query, m.key, m.value)}
    ignored = [m for m in model.modules() if isinstance(m, nn.Embedding)] + list(keep)
    heads_before = sum(m.num_attention_heads for m in attention)
    pruner = tp.pruner.MetaPruner(
        model, example, importance=tp.importance.MagnitudeImportance(p=2),
        pruning_ratio=float(sparsity), global_pruning=(scope == "global"), max_pruning_ratio=0.95,
        ignored_layers=ignored, num_heads=heads, prune_num_heads=bool(heads), prune_head_dims=not heads,
        head_pruning_ratio=_head_ratio(sparsity, attention))
    pruner.step()
    for m in attention:  # torch-pruning shrinks the Linear layers; the head bookkeeping is ours
        m.num_attention_heads = m.query.out_features // m.attention_head_size
        m.all_head_size = m.query.out_features
    with torch.inference_mode():
        model(**example)  # fail here, not in the caller, if the rebuilt graph is inconsistent
    out: dict[str, Any] = {"sparsity": 1.0 - sum(_out_units(m) for m in layers) / max(units_before, 1),
                           "sparsity_of": "output channels/units of the pruned layers"}
    if attention:
        out["heads_before"] = heads_before
        out["heads_after"] = sum(m.num_attention_heads for m in attention)
    return out


def _head_ratio(sparsity: float, attention: list[nn.Module]) -> float:
    """The head ratio torch-pruning needs to remove round(sparsity * heads) heads per layer:
    it rounds up (ceil) and rejects a layer left with no head, so aim just below and keep one."""
    if not attention:
        return 0.0
    heads = min(m.num_attention_heads for m in attention)
    remove = min(int(sparsity * heads + 0.5), heads - 1)
    return max(remove / heads - 1e-6, 0.0)


# --- fine-tuning --------------------------------------------------------------------

def require_training_rows(data: Any, *, what: str, fix: str, needed: bool = True) -> None:
    """Refuse, before any work, to fine-tune on an analyst's data that has no rows apart from the
    ones quality is measured on (training on them would flatter the result)."""
    meta = getattr(data, "meta", {}) or {}
    if needed and meta.get("source") == "user" and len(data.train) == 0:
        raise UnsupportedRecipe(f"{what}, but this data has no rows apart from the {len(data.test)} that quality is "
                                f"measured on; wrap it with finetune_share=0.25 (from_onnx/from_module) to hold out "
                                f"a quarter of the rows for fine-tuning (quality is then measured on the rest), {fix}")


def finetune_split(teacher: nn.Module, data: Any) -> Any:
    """What fine-tuning learns from: the train split with its labels, or, for an analyst's data
    without class labels (task "outputs"), the train split with the unpruned model's outputs as
    targets (distillation by logit matching) instead of labels it does not have."""
    if getattr(data, "task", None) != "outputs":
        return data.train

    predict = torch_predict_fn(teacher.eval())
    targets = np.concatenate([np.asarray(predict(batch), dtype=np.float32).reshape(len(next(iter(batch.values()))), -1)
                              for batch in data.train.batches(256)])
    return Split(data.train.inputs, targets)


def finetune_notes(data: Any) -> list[str]:
    meta = getattr(data, "meta", {}) or {}
    notes = [n for n in meta.get("notes", ()) if n.startswith("fine-tuning trains on")]
    if getattr(data, "task", None) == "outputs":
        notes.append("fine-tuned on the unpruned model's outputs (mean squared error on the outputs: no class "
                     "labels to learn from)")
    return notes


def _match_outputs(model: nn.Module, inputs: dict, targets) -> Any:
    """Logit matching: mean squared error between the model's flattened outputs and the teacher's."""
    outputs = model(**inputs)
    return torch.nn.functional.mse_loss(outputs.reshape(len(outputs), -1).float(), targets.float())


def _finetune(model: nn.Module, data: Any, recipe: Prune, train_on: Any = None) -> dict[str, Any]:
    """Recover accuracy for `recipe.finetune_epochs` epochs with the zoo's optimiser settings,
    within a wall-clock budget (TrainingDiverged propagates on a NaN/inf loss)."""
    if recipe.finetune_epochs == 0:
        return {"finetune_s": 0.0}

    settings = finetune_settings(data)
    lr = recipe.finetune_lr if recipe.finetune_lr is not None else settings["lr"]
    train_on = train_on if train_on is not None else data.train
    loss_fn = _match_outputs if getattr(data, "task", None) == "outputs" else None
    log = training.train(model, train_on, epochs=recipe.finetune_epochs, lr=lr, batch_size=settings["batch_size"],
                         weight_decay=settings["weight_decay"], seed=0, max_seconds=settings["max_seconds"],
                         loss_fn=loss_fn)
    model.eval()
    return {"finetune_lr": lr, "finetune_s": round(log.train_s, 3), "finetune_epochs_run": log.epochs,
            "finetune_stopped_by": log.stopped_by, "finetune_final_loss": log.final_loss}


FINETUNE_LR_FRACTION = 1.0  # of the zoo's lr; training.train warms up and decays it linearly
FINETUNE_MAX_S = {False: 40.0, True: 5.0}  # keeps a recipe under ~60 s full / ~10 s smoke


def finetune_settings(data: Any) -> dict[str, Any]:
    """Learning rate, batch size, weight decay and wall-clock cap for fine-tuning a model of
    `data` (the zoo's training settings; generic ones for a dataset the zoo does not know)."""

    smoke = bool(getattr(data, "meta", {}).get("smoke", False))
    base = zoo.TRAINING.get((getattr(data, "name", ""), smoke), {"lr": 1e-3, "batch_size": 64})
    return {"lr": base["lr"] * FINETUNE_LR_FRACTION, "batch_size": base["batch_size"],
            "weight_decay": base.get("weight_decay", 0.01), "max_seconds": FINETUNE_MAX_S[smoke]}


# --- artifacts --------------------------------------------------------------------

def save_sparse(model: nn.Module, path: str | Path) -> Path:
    """Save `model` with its sparse weights as a bitmask + the non-zero values.

    Costs 1 bit per weight plus 4 bytes per survivor: at 50% zeros ~53% of dense fp32."""
    skeleton = copy.deepcopy(model)
    packed: dict[str, dict[str, Any]] = {}
    for name, module in skeleton.named_modules():
        weight = getattr(module, "weight", None)
        if not isinstance(module, PRUNABLE_TYPES) or weight is None or weight.dtype != torch.float32:
            continue
        mask = (weight.detach() != 0)
        if 1.0 - mask.float().mean().item() < MIN_ZERO_FRACTION_TO_PACK:
            continue
        packed[name] = {"shape": tuple(weight.shape),
                        "mask": torch.from_numpy(np.packbits(mask.numpy().ravel())),
                        "values": weight.detach()[mask].clone()}
        module.weight = nn.Parameter(torch.empty(0), requires_grad=weight.requires_grad)
    torch.save({"format": SPARSE_FORMAT, "module": skeleton, "packed": packed}, path)
    return Path(path)


def load_module(path: str | Path) -> nn.Module:
    """Read a module saved by this technique (plain `torch.save` or the sparse format)."""
    obj = torch.load(path, weights_only=False, map_location="cpu")  # our own artifact
    if isinstance(obj, nn.Module):
        return obj.eval()
    if not (isinstance(obj, dict) and obj.get("format") == SPARSE_FORMAT):
        raise ValueError(f"{path} is not an optlab pruning artifact (expected a module or {SPARSE_FORMAT})")
    module = obj["module"]
    modules = dict(module.named_modules())
    for name, entry in obj["packed"].items():
        shape = entry["shape"]
        n = int(np.prod(shape))
        mask = torch.from_numpy(np.unpackbits(entry["mask"].numpy(), count=n).astype(bool))
        dense = torch.zeros(n, dtype=entry["values"].dtype)
        dense[mask] = entry["values"]
        modules[name].weight = nn.Parameter(dense.reshape(shape))
    return module.eval()


def load_pruned(path: str | Path, threads: int | None = None) -> Callable[[dict], np.ndarray]:
    """Loader for a fresh process: artifact -> predict(batch) -> logits."""
    if threads:
        torch.set_num_threads(int(threads))

    return torch_predict_fn(load_module(path))


def dense_size_bytes(model: nn.Module) -> int:
    """Bytes of the whole module saved densely with `torch.save`."""
    buffer = io.BytesIO()
    torch.save(model, buffer)
    return buffer.getbuffer().nbytes


# --- small shared helpers -----------------------------------------------------------

def _example_batch(data: Any, rows: int = 8) -> dict[str, np.ndarray]:
    split = data.calibration if len(getattr(data, "calibration", ())) else data.train
    return next(iter(split.take(slice(0, rows)).batches(rows)))


def _out_units(layer: nn.Module) -> int:
    return layer.out_channels if isinstance(layer, (nn.Conv1d, nn.Conv2d)) else layer.out_features


def _name_of(model: nn.Module, module: nn.Module) -> str:
    return next((name for name, m in model.named_modules() if m is module), "")
