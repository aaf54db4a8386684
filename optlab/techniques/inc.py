"""Intel Neural Compressor 3.x (`neural_compressor.torch.quantization`) on CPU.

- weight-only int8/int4: RTN (round to nearest) or GPTQ (calibrated), linear layers only;
- static int8: export -> PT2E (X86InductorQuantizer) -> `torch.compile` with Inductor
  freezing. Without freezing the int8 graph is slower than fp32 eager; it is the switch
  that matters (DESIGN.md);
- autotune: INC's accuracy-aware search keeps the first config within `tolerable_loss`
  (relative) of the baseline on the validation split; optlab adds the speed axis by timing
  every trial at batch 256 and records all trials in `candidate.meta`.
"""
from __future__ import annotations

import contextlib
import copy
import os
import time
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from optlab.data.calibration import calibration_rows
from optlab.instruments import metrics
from optlab.instruments.timing import time_calls
from optlab.models.candidate import Candidate
from optlab.models.runtimes import compile_module, quiet_torch_logs, torch_predict_fn
from optlab.recipes.recipe import Quantize, UnsupportedRecipe
from optlab.techniques.registry import register
from optlab.techniques.torch_io import (
    TEXT_AXES,
    example_batch,
    input_names,
    positional,
    positional_tensors,
    require_module,
    save_module,
)
from optlab.techniques.workdirs import artifact_file, resolve_workdir

# INC, transformers, accelerate and torch are imported on use: heavy optional dependencies that
# registering the handler must not load (`_import_inc` says why its import order matters).

WORKSPACE = "nc_workspace"  # INC's working folder: always under optlab's work directory


@contextlib.contextmanager
def _inc_workspace(folder: str | os.PathLike) -> Iterator[Path]:
    """Point INC's global workspace (default `./nc_workspace/<time>/` in the current directory)
    at `folder/nc_workspace` while INC runs; the previous setting comes back afterwards."""
    from neural_compressor.common.base_config import options

    path = Path(folder) / WORKSPACE
    previous = options._workspace
    options.workspace = str(path) + os.sep
    try:
        yield path
    finally:
        options.workspace = previous


def _import_inc():
    """Import INC's torch API without its INFO/WARNING start-up lines (it reads LOGLEVEL once)."""
    previous = os.environ.get("LOGLEVEL")
    os.environ["LOGLEVEL"] = "ERROR"
    try:
        with quiet_torch_logs():
            # INC checks at import whether transformers is loaded, and its RTN path names
            # transformers.Conv1D whenever transformers is loaded later (by anyone): load it first.
            import transformers  # noqa: F401

            # Importing INC's layer-wise helpers creates its workspace folder: put it under the cache.
            with _inc_workspace(resolve_workdir(None)):
                import neural_compressor.torch.quantization as inc
    except ImportError as error:
        raise UnsupportedRecipe(f"Intel Neural Compressor is not installed ({error}); "
                                f"pip install neural-compressor-pt") from error
    finally:
        if previous is None:
            os.environ.pop("LOGLEVEL", None)
        else:
            os.environ["LOGLEVEL"] = previous
    return inc


@register(Quantize, runtime="inc")
def apply_inc(recipe: Quantize, model: Any, data: Any, *, threads=None, workdir=None) -> Candidate:
    require_module(model, recipe)
    inc = _import_inc()
    workdir = resolve_workdir(workdir)
    with _inc_workspace(workdir), quiet_torch_logs():
        return _apply(inc, recipe, model, data, threads, workdir)


def _apply(inc, recipe: Quantize, model: Any, data: Any, threads, workdir: Path) -> Candidate:
    if recipe.scheme == "static-int8":
        candidate = _static_int8(inc, recipe, model, data, threads, workdir)
    else:
        if recipe.scheme == "autotune":
            module, meta = _autotune(inc, recipe, model, data, threads)
        else:
            module, meta = _weight_only(inc, recipe, copy.deepcopy(model).eval(), data,
                                        bits=8 if recipe.scheme == "weight-only-int8" else 4, workdir=workdir)
        path = artifact_file(workdir, recipe.name, ".pt")
        extra = save_module(module, path, original=model)
        candidate = Candidate(
            name=recipe.name, predict_fn=torch_predict_fn(module), family="quantization",
            runtime="inc", device="cpu", recipe=recipe, model=module, artifact_path=path,
            loader="optlab.models.runtimes:load_torch", loader_options={"threads": threads, **extra}, meta=meta)
    return candidate


def _calibrate_fn(data: Any, recipe: Quantize, names: list[str] | None = None):
    """run_fn for INC: feeds the calibration rows (keyword inputs, or positional for graphs)."""
    import torch

    rows = calibration_rows(data, recipe.calibration_samples, recipe.calibration_data)

    def run(model):
        with torch.no_grad():
            for batch in rows.batches(64):
                tensors = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in batch.items()}
                model(*(tensors[n] for n in names)) if names else model(**tensors)

    return run, len(rows)


def _weight_only(inc, recipe: Quantize, module: Any, data: Any, bits: int, workdir: Path) -> tuple[Any, dict]:
    group = recipe.group_size
    if recipe.algorithm == "gptq":
        run, rows = _calibrate_fn(data, recipe)
        # INC's GPTQ resolves `model_path` at construction even when it never reads it (layer-wise
        # mode only): the default "" sends it to the Hugging Face hub. A local folder keeps it offline.
        config = inc.GPTQConfig(bits=bits, group_size=group, model_path=str(workdir))
        try:
            prepared = inc.prepare(module, config)
            run(prepared)
            module = inc.convert(prepared)
        except Exception as error:
            raise UnsupportedRecipe(f"INC GPTQ failed on this model ({type(error).__name__}: {error}); "
                                    f"GPTQ expects transformer-style blocks, use algorithm='rtn'") from error
        meta = {"inc_config": f"GPTQConfig(bits={bits}, group_size={group})", "calibration_rows": rows}
    else:
        module = inc.quantize(module, inc.RTNConfig(bits=bits, group_size=group))
        meta = {"inc_config": f"RTNConfig(bits={bits}, group_size={group})"}
    meta["weight_only"] = "linear layers; activations stay fp32"
    return module.eval(), meta


def _batch_ms(predict, batch: dict[str, np.ndarray], repeats: int = 5) -> float:
    """Median milliseconds of one call on `batch`: the speed axis INC's autotune lacks, timed by
    optlab's own harness."""
    run = time_calls(predict, [batch], warmup=1, min_samples=repeats, max_samples=repeats, budget_s=3600.0)
    return float(np.median(run.samples_ns)) / 1e6


def _autotune(inc, recipe: Quantize, model: Any, data: Any, threads) -> tuple[Any, dict]:
    try:
        import accelerate  # noqa: F401  (INC's autotune imports it)
    except ImportError as error:
        raise UnsupportedRecipe("INC autotune needs the accelerate package: pip install accelerate") from error
    group = recipe.group_size
    configs = [("RTN int4 g%d" % group, inc.RTNConfig(bits=4, group_size=group)),
               ("RTN int8 g%d" % group, inc.RTNConfig(bits=8, group_size=group)),
               ("RTN int8 per-channel", inc.RTNConfig(bits=8, group_size=-1))]
    timing_batch = {k: v[:256] for k, v in data.validation.inputs.items()}
    trials: list[dict[str, Any]] = []

    def eval_fn(q_model) -> float:
        predict = torch_predict_fn(q_model)
        score = metrics.split_score(predict, data)
        label = "baseline fp32" if not trials else configs[len(trials) - 1][0]
        trials.append({"trial": len(trials), "config": label, "score": round(score, 6),
                       "batch256_ms": round(_batch_ms(predict, timing_batch), 3)})
        return score

    tune = inc.TuningConfig(config_set=[c for _, c in configs], tolerable_loss=recipe.tolerable_loss)
    module = inc.autotune(copy.deepcopy(model).eval(), tune_config=tune, eval_fn=eval_fn)
    baseline = trials[0]["score"]
    for trial in trials[1:]:
        trial["relative_loss"] = round((baseline - trial["score"]) / baseline, 6) if baseline else None
        trial["passed"] = trial["relative_loss"] is not None and trial["relative_loss"] <= recipe.tolerable_loss
    if module is None:
        raise UnsupportedRecipe(f"INC autotune found no config within tolerable_loss={recipe.tolerable_loss:g} "
                                f"(trials: {trials[1:]}); raise tolerable_loss")
    winner = next((t for t in trials[1:] if t["passed"]), trials[-1])
    passing = [t for t in trials[1:] if t["passed"]]
    fastest = min(passing, key=lambda t: t["batch256_ms"]) if passing else None
    return module.eval(), {"inc_config": winner["config"], "tuning_trials": trials,
                           "tolerable_loss": recipe.tolerable_loss,
                           "fastest_passing_config": fastest["config"] if fastest else None,
                           "metric": "auc" if data.task == "binary" else "accuracy", "eval_split": "validation"}


def _dynamic_shapes(names: list[str]):
    import torch

    batch = torch.export.Dim("batch", min=1)
    sequence = torch.export.Dim("sequence", min=1)
    return tuple({0: batch, 1: sequence} if n in TEXT_AXES else {0: batch} for n in names)


def _static_int8(inc, recipe: Quantize, model: Any, data: Any, threads, workdir) -> Candidate:
    """export -> prepare (observers) -> calibrate -> convert -> save .pt2 -> torch.compile(freezing)."""
    from neural_compressor.torch.export import export

    names = input_names(data)
    module = positional(copy.deepcopy(model).eval(), names)
    args = positional_tensors(example_batch(data, n=8), names)
    shapes = _dynamic_shapes(names)
    try:
        exported = export(module, args, dynamic_shapes=(shapes,))
        prepared = inc.prepare(exported, inc.get_default_static_config())
        run, rows = _calibrate_fn(data, recipe, names)
        run(prepared)
        quantized = inc.convert(prepared)
    except UnsupportedRecipe:
        raise
    except Exception as error:
        raise UnsupportedRecipe(f"INC static int8 (export -> PT2E) failed on this model: "
                                f"{type(error).__name__}: {error}"[:500]) from error
    import torch

    path = artifact_file(workdir, recipe.name, ".pt2")
    meta: dict[str, Any] = {"inc_config": "get_default_static_config() (X86InductorQuantizer via PT2E)",
                            "calibration_rows": rows, "calibration_data": recipe.calibration_data,
                            "compile": "torch.compile(dynamic=False), inductor freezing=True"}
    try:
        torch.export.save(torch.export.export(quantized, args, dynamic_shapes=shapes), str(path))
        loader = "optlab.models.runtimes:load_torch_compiled"
        options = {"threads": threads, "positional": tuple(names), "dynamic": False}
    except Exception as error:  # noqa: BLE001 - keep a weights-only artifact so size_bytes still means something
        path = path.with_suffix(".pt")
        torch.save(quantized.state_dict(), path)
        loader, options = None, {}
        meta["artifact_note"] = f"torch.export.save failed ({type(error).__name__}); state_dict saved, no loader"
    # Static shapes (one compile per batch size): with dynamic=True the int8 graph ran ~10x slower
    # than fp32 eager here, and Inductor's quantized-conv lowering failed on a stride assertion.
    compiled = compile_module(quantized, freezing=True, dynamic=False)
    predict = torch_predict_fn(compiled, positional=tuple(names))
    start = time.perf_counter()
    predict({k: v[:64] for k, v in data.calibration.inputs.items()})
    meta["compile_s"] = round(time.perf_counter() - start, 3)
    return Candidate(name=recipe.name, predict_fn=predict, family="quantization", runtime="inc", device="cpu",
                     recipe=recipe, model=quantized, artifact_path=path, loader=loader, loader_options=options,
                     meta=meta)
