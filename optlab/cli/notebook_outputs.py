"""Committed notebooks carry no outputs except the small deterministic cells nbval compares
(`# NBVAL_CHECK_OUTPUT`), whose outputs come from a smoke run. Strip, check and refresh them."""
from __future__ import annotations

import json
import tempfile
from pathlib import Path

CHECK_MARK = "# NBVAL_CHECK_OUTPUT"
MAX_CHECKED_BYTES = 4096
ALLOWED_CHECKED = {"stream", "execute_result"}


def is_checked(cell) -> bool:
    return cell.get("cell_type") == "code" and cell.get("source", "").lstrip().startswith(CHECK_MARK)


def bulky_outputs(notebook) -> list[str]:
    """Problems that make a committed notebook heavy or non-reproducible; empty when clean."""
    problems = []
    for index, cell in enumerate(notebook["cells"]):
        if cell.get("cell_type") != "code":
            continue
        outputs = cell.get("outputs", [])
        if not is_checked(cell):
            if outputs or cell.get("execution_count") is not None:
                problems.append(f"cell {index}: outputs are committed; strip them (optlab notebooks strip)")
            continue
        size = len(json.dumps(outputs))
        kinds = {o.get("output_type") for o in outputs}
        if size > MAX_CHECKED_BYTES:
            problems.append(f"cell {index}: checked output is {size} bytes (limit {MAX_CHECKED_BYTES})")
        if kinds - ALLOWED_CHECKED:
            problems.append(f"cell {index}: checked output has {sorted(kinds - ALLOWED_CHECKED)}; print plain text")
        for output in outputs:
            if set(output.get("data", {})) - {"text/plain"}:
                problems.append(f"cell {index}: checked output carries rich data; print plain text instead")
    return problems


def strip(notebook, keep_checked: bool = True):
    """Remove outputs, execution counts and papermill metadata (checked cells keep outputs)."""
    for cell in notebook["cells"]:
        cell.get("metadata", {}).pop("papermill", None)
        cell.get("metadata", {}).pop("execution", None)
        if cell.get("cell_type") != "code":
            continue
        if not (keep_checked and is_checked(cell) and cell.get("outputs")):
            cell["execution_count"] = None
            cell["outputs"] = []
        else:  # nbval refuses a checked cell that has outputs but no execution count
            cell["execution_count"] = 1
            for output in cell["outputs"]:
                if output.get("output_type") == "execute_result":
                    output["execution_count"] = 1
    notebook.get("metadata", {}).pop("papermill", None)
    return notebook


def refresh_checked(path: str | Path) -> Path:
    """Execute `path` in smoke mode and store the outputs of its checked cells (only those)."""
    import nbformat
    import papermill as pm

    from optlab.bench.notebook_runner import results_dir_parameter

    path = Path(path)
    source = nbformat.read(path, as_version=4)
    with tempfile.TemporaryDirectory() as tmp:
        executed = pm.execute_notebook(str(path), str(Path(tmp) / path.name), cwd=str(path.parent),
                                       parameters={"smoke": True, **results_dir_parameter(path, Path(tmp) / "results")},
                                       progress_bar=False, kernel_name="python3")
    by_source = {cell["source"]: cell.get("outputs", []) for cell in executed["cells"] if is_checked(cell)}
    for cell in source.cells:
        cell.metadata.pop("papermill", None)
        if cell.cell_type == "code":
            cell.outputs = by_source.get(cell.source, []) if is_checked(cell) else []
    strip(source)
    nbformat.write(source, path)
    return path
