"""Hugging Face transformers through optimum: ONNX export, `ORTOptimizer` fusions and `ORTQuantizer`
int8, loaded back through `ORTModelForSequenceClassification` as candidates.

Everything stays local: the model is `save_pretrained` into the work folder and optimum's
exporter reads it from there (no hub). The export takes the inputs the data has (a BERT with a
one-row token-type table, like the zoo's, is exported without `token_type_ids`). Optimization
levels are optimum's (O1 general, O2 + transformer fusions, O3 + fast GELU); the fused
operators are counted in the graph and a missing fusion is written in the notes. Quantization
uses the `AutoQuantizationConfig` preset that this CPU can run (avx512_vnni > avx512 > avx2,
arm64 on ARM), chosen from its flags and recorded in the row; static int8 is calibrated on the
dataset's calibration split through optimum's `CalibrationConfig` / `ORTQuantizer.fit`.
"""
from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np

from optlab.data.calibration import calibration_rows
from optlab.data.datasets import Batch
from optlab.instruments.environment import cpu_info
from optlab.instruments.timing import summarize, time_calls
from optlab.models import weights
from optlab.models.candidate import Candidate, OnnxModel
from optlab.recipes.recipe import UnsupportedRecipe
from optlab.recipes.transformers import Optimum
from optlab.techniques import onnx_graph
from optlab.techniques.registry import register

TASK = "text-classification"
# The fused operators each fusion leaves in the graph (ORT's transformer optimizer names).
FUSIONS = {
    "attention": ("Attention", "MultiHeadAttention"),
    "gelu": ("Gelu", "BiasGelu", "FastGelu"),
    "layernorm": ("LayerNormalization", "SkipLayerNormalization", "SkipSimplifiedLayerNormalization"),
    "embed_layernorm": ("EmbedLayerNormalization",),
}
PRESET_FLAGS = (("avx512_vnni", "avx512_vnni"), ("avx512", "avx512f"), ("avx2", "avx2"))
MIN_CALIBRATION_ROWS = 8
NOTES_FILE = "optlab-notes.json"


def hf_model(model: Any):
    """The Hugging Face `PreTrainedModel` in `model`: itself, the zoo's `BertClassifier.bert`, or
    a local `save_pretrained` folder (an analyst's model; read with local_files_only, no hub)."""
    from transformers import PreTrainedModel

    if isinstance(model, PreTrainedModel):
        return model
    if isinstance(model, (str, os.PathLike)):
        folder = Path(model)
        if not (folder / "config.json").is_file():
            raise ValueError(f"{folder} is not a save_pretrained folder (no config.json); save the model with "
                             f"model.save_pretrained(folder) or pass the model object")
        from transformers import AutoModelForSequenceClassification

        return AutoModelForSequenceClassification.from_pretrained(folder, local_files_only=True).eval()
    inner = getattr(model, "bert", None)
    if isinstance(inner, PreTrainedModel):
        return inner
    raise UnsupportedRecipe(
        f"optimum needs a Hugging Face transformers model (a PreTrainedModel, or a folder saved with "
        f"save_pretrained); got {type(model).__name__}. For other torch models use Compile('onnxruntime') or "
        f"Quantize(runtime='onnxruntime')")


def choose_preset(requested: str = "auto", flags: frozenset[str] | None = None, machine: str | None = None) -> str:
    """The `AutoQuantizationConfig` preset for this CPU: the requested one if the CPU has its
    instructions, else (auto) the best it has. A preset the CPU cannot run is refused."""
    flags = cpu_info()[1] if flags is None else flags
    machine = (machine or platform.machine()).lower()
    arm = machine in ("arm64", "aarch64")
    available = [name for name, flag in PRESET_FLAGS if flag in flags and not arm] + (["arm64"] if arm else [])
    if requested == "auto":
        if not available:
            raise UnsupportedRecipe(f"no optimum quantization preset fits this CPU ({machine}, without avx2, "
                                    f"avx512f or avx512_vnni); int8 would not pay here, leave quantize='none'")
        return available[0]
    if requested not in available:
        have = ", ".join(available) or "none"
        raise UnsupportedRecipe(f"preset={requested!r} needs CPU instructions this machine lacks ({machine}); "
                                f"presets it can run: {have}; use preset='auto'")
    return requested


def export(model: Any, data: Any, workdir: Path, notes: list[str]) -> Path:
    """save_pretrained + optimum's ONNX export into `workdir` (reused for the same weights)."""
    hf = hf_model(model)
    folder = workdir / f"hf-{weights.digest(hf)[:12]}"
    onnx_dir = folder / "onnx"
    record = folder / "export-notes.json"
    if (onnx_dir / "model.onnx").exists() and record.exists():
        notes.extend(json.loads(record.read_text()))
        return onnx_dir
    hf.save_pretrained(folder / "pytorch")
    inputs = set(getattr(data, "input_names", None) or ("input_ids", "attention_mask"))
    if "input_ids" not in inputs:
        raise UnsupportedRecipe(f"optimum's text-classification export needs input_ids; the data has "
                                f"{sorted(inputs)}")
    from optimum.exporters.onnx import main_export
    from optimum.exporters.tasks import TasksManager

    config_type = hf.config.model_type
    try:
        constructor = TasksManager.get_exporter_config_constructor(
            exporter="onnx", model=hf, task=TASK, library_name="transformers")
    except (KeyError, ValueError) as error:
        raise UnsupportedRecipe(f"optimum has no ONNX export for model type {config_type!r} "
                                f"({str(error).splitlines()[0]}); use Compile('onnxruntime') instead") from error
    onnx_config = constructor(hf.config, task=TASK)
    if getattr(hf.config, "type_vocab_size", 2) < 2:
        # one token type: token_type_ids can only be zeros, and optimum's exporter would feed it
        # dummy ids from {0, 1}, out of range for a one-row token-type table
        inputs.discard("token_type_ids")
    dropped = [name for name in onnx_config.inputs if name not in inputs]
    custom = {"model": _inputs_only(onnx_config, inputs)} if dropped else None
    exported: list[str] = []
    if dropped:
        exported.append(f"exported without {', '.join(dropped)} (not in the data, or the model has one token type)")
    with onnx_graph.captured_output(exported, source="optimum exporter"):
        main_export(str(folder / "pytorch"), output=onnx_dir, task=TASK, local_files_only=True,
                    custom_onnx_configs=custom, do_validation=True, library_name="transformers")
    record.write_text(json.dumps(exported))
    notes.extend(exported)
    return onnx_dir


def _inputs_only(onnx_config, keep: set[str]):
    """A copy of optimum's ONNX config whose inputs are limited to `keep`."""
    base = type(onnx_config)

    class Limited(base):
        @property
        def inputs(self):
            return {k: v for k, v in super().inputs.items() if k in keep}

    return Limited(onnx_config._config, task=TASK)


def optimize(onnx_dir: Path, level: str, out_dir: Path, *, embed_layer_norm: bool) -> tuple[Path, dict[str, int]]:
    """ORTOptimizer at `level`; the optimized file and its fused operators (optimum's count)."""
    from optimum.onnxruntime import ORTOptimizer
    from optimum.onnxruntime.configuration import AutoOptimizationConfig

    config = AutoOptimizationConfig.with_optimization_level(
        level, for_gpu=False, disable_embed_layer_norm_fusion=not embed_layer_norm)
    ORTOptimizer.from_pretrained(onnx_dir).optimize(config, out_dir)
    path = out_dir / "model_optimized.onnx"
    return path, ORTOptimizer.get_fused_operators(path)


def fusions_found(fused: dict[str, int]) -> dict[str, bool]:
    return {name: any(fused.get(op, 0) > 0 for op in ops) for name, ops in FUSIONS.items()}


def _with_shapes(path: Path) -> None:
    """Symbolic shape inference in place: ORT's quantizer needs types for outputs of fused
    (com.microsoft) operators, which plain ONNX inference leaves out."""
    import onnx
    from onnxruntime.tools.symbolic_shape_infer import SymbolicShapeInference

    proto = SymbolicShapeInference.infer_shapes(onnx.load(str(path)), auto_merge=True)
    onnx.save(proto, str(path))


def quantize(recipe: Optimum, source: Path, out_dir: Path, data: Any, preset: str) -> tuple[Path, dict]:
    """ORTQuantizer with the preset's AutoQuantizationConfig; static ranges from the calibration split."""
    from onnxruntime.quantization import CalibrationMethod
    from optimum.onnxruntime import ORTQuantizer
    from optimum.onnxruntime.configuration import AutoQuantizationConfig, CalibrationConfig

    static = recipe.quantize == "static-int8"
    config = getattr(AutoQuantizationConfig, preset)(is_static=static, per_channel=recipe.per_channel)
    quantizer = ORTQuantizer.from_pretrained(source.parent, file_name=source.name)
    meta: dict[str, Any] = {"preset": preset, "format": str(config.format.name), "mode": str(config.mode.name),
                            "weights_dtype": config.weights_dtype.name, "per_channel": recipe.per_channel}
    ranges = None
    if static:
        rows = calibration_rows(data, recipe.calibration_samples, "representative")
        if len(rows) < MIN_CALIBRATION_ROWS:
            raise ValueError(f"the calibration set has {len(rows)} rows; static int8 needs at least "
                             f"{MIN_CALIBRATION_ROWS}: raise calibration_samples or use quantize='dynamic-int8'")
        names = [n for n in ("input_ids", "attention_mask", "token_type_ids") if n in _graph_inputs(source)]
        dataset = [{n: rows.inputs[n][i] for n in names} for i in range(len(rows))]
        method = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
                  "percentile": CalibrationMethod.Percentile}[recipe.calibration]
        calibration = CalibrationConfig(dataset_name=str(getattr(data, "name", "data")), dataset_config_name="optlab",
                                        dataset_split="calibration", dataset_num_samples=len(dataset), method=method,
                                        num_bins=128 if recipe.calibration != "minmax" else None,
                                        num_quantized_bins=128 if recipe.calibration == "entropy" else None,
                                        percentile=99.999 if recipe.calibration == "percentile" else None,
                                        moving_average=False if recipe.calibration == "minmax" else None)
        ranges = quantizer.fit(dataset=dataset, calibration_config=calibration,
                               operators_to_quantize=config.operators_to_quantize, batch_size=16,
                               onnx_augmented_model_name=out_dir.parent / "augmented_model.onnx")
        (out_dir.parent / "augmented_model.onnx").unlink(missing_ok=True)
        meta |= {"calibration": recipe.calibration, "calibration_rows": len(dataset)}
    quantizer.quantize(config, out_dir, calibration_tensors_range=ranges)
    return out_dir / f"{source.stem}_quantized.onnx", meta


def _int8_check(path: Path, notes: list[str]) -> dict[str, Any]:
    """The same inspection as ONNX Runtime's int8 rows: quantized operators and the share of weights
    stored as integers, in the meta and one note."""
    import onnx

    report = onnx_graph.quantization_report(onnx.load(str(path)))
    notes.append(onnx_graph.describe_report(report))
    return report


def _graph_inputs(path: Path) -> list[str]:
    import onnx

    return [i.name for i in onnx.load(str(path), load_external_data=False).graph.input]


@register(Optimum)
def apply_optimum(recipe: Optimum, model: Any, data: Any, *, threads=None, workdir: Path) -> Candidate:
    start = time.perf_counter()
    notes: list[str] = []
    onnx_dir = export(model, data, workdir, notes)
    slug = recipe.name.replace("(", "-").replace(")", "").replace(", ", "-").replace("=", "_")
    out = workdir / slug
    static = recipe.quantize == "static-int8"
    preset = choose_preset(recipe.preset) if recipe.quantize != "none" else None
    meta: dict[str, Any] = {"level": recipe.level, "exported": str(onnx_dir / "model.onnx")}
    with onnx_graph.captured_output(notes, source="optimum"):
        # ORT's embedding-LayerNorm fusion and its static (QDQ) quantizer do not mix: optimum disables
        # that fusion by default for this reason; it stays on for fp32 and dynamic int8.
        optimized, fused = optimize(onnx_dir, recipe.level, out / "optimized", embed_layer_norm=not static)
        meta["fused_operators"] = fused
        meta["fusions"] = fusions_found(fused)
        if recipe.level != "O1":
            expected = [k for k in FUSIONS if not (static and k == "embed_layernorm")]
            missing = [k for k in expected if not meta["fusions"][k]]
            if missing:
                notes.append(f"{recipe.level}: no {', '.join(missing)} fusion in the graph")
        path = optimized
        if recipe.quantize != "none":
            _with_shapes(optimized)
            path, qmeta = quantize(recipe, optimized, out / "quantized", data, preset)
            meta |= qmeta | _int8_check(path, notes)
            model_name, flags = cpu_info()
            speed = [f for f in ("avx2", "avx512f", "avx512_vnni", "amx_int8") if f in flags]
            notes.append(f"AutoQuantizationConfig.{preset} chosen for {model_name} (flags: {' '.join(speed) or 'none'})"
                         + ("" if recipe.preset == "auto" else " as requested"))
            if "avx512_vnni" not in flags and "amx_int8" not in flags and platform.machine().lower() not in (
                    "arm64", "aarch64"):
                notes.append("this CPU has no VNNI: int8 matrix products may not beat fp32 here")
    meta["notes"] = notes
    meta["apply_s"] = round(time.perf_counter() - start, 3)
    # beside the artifact, so a results row (its artifact_path) leads to the preset and fusions
    (path.parent / NOTES_FILE).write_text(json.dumps({k: v for k, v in meta.items() if k != "apply_s"}, indent=1))
    options = {"threads": threads}
    names = tuple(_graph_inputs(path))
    return Candidate(
        name=recipe.name, predict_fn=load_predict(path, **options),
        family="quantization" if recipe.quantize != "none" else "compilation", runtime="onnxruntime",
        device="cpu", recipe=recipe, model=OnnxModel(path, names, ("logits",)), artifact_path=path,
        loader="optlab.techniques.optimum:load_predict", loader_options=options, meta=meta)


def session_options(threads: int | None):
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = int(threads)
        options.inter_op_num_threads = 1
    options.log_severity_level = 3
    return options


def load_model(path: str | os.PathLike, threads: int | None = None):
    """The ONNX file at `path` (with optimum's config.json beside it) as an ORTModelForSequenceClassification."""
    from optimum.onnxruntime import ORTModelForSequenceClassification

    path = Path(path)
    return ORTModelForSequenceClassification.from_pretrained(
        path.parent, file_name=path.name, local_files_only=True, provider="CPUExecutionProvider",
        session_options=session_options(threads), use_io_binding=False)


def load_predict(path: str | os.PathLike, threads: int | None = None):
    """predict(batch) -> logits (float32 numpy) through ORTModelForSequenceClassification."""
    model = load_model(path, threads)
    names = [n for n in ("input_ids", "attention_mask", "token_type_ids") if n in model.input_names]

    def predict(batch: Batch) -> np.ndarray:
        feed = {n: np.ascontiguousarray(batch[n], dtype=np.int64) for n in names if n in batch}
        return np.asarray(model(**feed).logits, dtype=np.float32)

    return predict


# --- padding -----------------------------------------------------------------------------

PADDING = ("longest", "max_length")


def padded(batch: Batch, strategy: str, max_length: int = 128, pad_id: int = 0) -> Batch:
    """A text batch padded to its longest row (`longest`, what a server with dynamic padding
    sends) or to a fixed `max_length` (what a fixed-shape export or a naive server sends)."""
    if strategy not in PADDING:
        raise ValueError(f"padding={strategy!r}; choose one of {PADDING}")
    mask = batch["attention_mask"]
    longest = max(int(mask.sum(axis=1).max()), 1)
    if longest > max_length:
        raise ValueError(f"a row has {longest} tokens, more than max_length={max_length}; raise max_length")
    width = longest if strategy == "longest" else max_length
    out = {}
    for name, value in batch.items():
        if value.ndim == 2 and value.shape[1] == mask.shape[1]:
            fill = pad_id if name == "input_ids" else 0
            cut = value[:, :min(width, value.shape[1])]
            extra = width - cut.shape[1]
            out[name] = np.pad(cut, ((0, 0), (0, extra)), constant_values=fill) if extra else np.ascontiguousarray(cut)
        else:
            out[name] = value
    return out


def padding_share(batch: Batch, strategy: str, max_length: int = 128) -> float:
    """The share of token positions in the padded batch that are padding."""
    mask = padded(batch, strategy, max_length)["attention_mask"]
    return float(1.0 - mask.sum() / mask.size)


def artifact_notes(artifact_path: str | os.PathLike) -> dict[str, Any]:
    """What optimum did for the artifact of a results row: level, preset, fusions, notes."""
    path = Path(artifact_path).parent / NOTES_FILE
    if not path.exists():
        raise ValueError(f"{artifact_path} was not built by optlab's optimum handler (no {NOTES_FILE} beside it)")
    return json.loads(path.read_text())


def describe(candidate: Candidate) -> str:
    """One line: level, preset and fusions of an optimum candidate (for notebooks and the bench)."""
    meta = candidate.meta
    found = ", ".join(k for k, v in meta.get("fusions", {}).items() if v) or "none"
    return json.dumps({"candidate": candidate.name, "preset": meta.get("preset"), "fusions": found})


def compare_padding(candidate: Candidate, split: Any, *, batch_size: int = 32, batches: int = 20,
                    max_length: int = 128, budget_s: float = 1.0):
    """The same rows of `split` (their real, long-tailed lengths) sent three ways: padded to
    `max_length`; in arrival order, each batch padded to its longest row; and length-bucketed
    (rows sorted by length before batching, as a bucketing batcher does), each batch padded to
    its longest row. One row per strategy: padding share, p50 per batch, rows per second and
    throughput against max_length (a DataFrame)."""
    import pandas as pd


    n = min(batches * batch_size, len(split)) // batch_size * batch_size
    if n == 0:
        raise ValueError(f"the split has {len(split)} rows, fewer than one batch of {batch_size}")
    order = {"max_length": np.arange(n), "longest": np.arange(n),
             "bucketed": np.argsort(split.inputs["attention_mask"][:n].sum(axis=1), kind="stable")}
    rows = []
    for name, index in order.items():
        raw = [{k: v[index[i:i + batch_size]] for k, v in split.inputs.items()} for i in range(0, n, batch_size)]
        strategy = "max_length" if name == "max_length" else "longest"
        sent = [padded(b, strategy, max_length) for b in raw]
        run = time_calls(candidate.predict, sent, warmup=3, min_samples=20, max_samples=2000, budget_s=budget_s)
        p50 = summarize(run.samples_ns, n_boot=200).p50_ms
        rows.append({"padding": name, "tokens_per_batch": float(np.mean([b["input_ids"].size for b in sent])),
                     "padding_share": float(np.mean([padding_share(b, strategy, max_length) for b in raw])),
                     "p50_ms": p50, "rows_per_s": batch_size / (p50 / 1e3)})
    frame = pd.DataFrame(rows)
    frame["throughput_x"] = frame["rows_per_s"] / frame.loc[frame["padding"] == "max_length", "rows_per_s"].iloc[0]
    return frame
