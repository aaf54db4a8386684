"""The package's imports run one way: data -> models -> recipes -> instruments -> techniques ->
serving -> study -> cases -> views -> (testing helpers, benchmarks) -> cli. A module never imports one
from a layer above it: not at the top, not lazily inside a function, and not by a dotted name in
a string (such as a fresh-process loader)."""
from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "optlab"
LAYERS = ["data", "models", "recipes", "instruments", "techniques", "serving", "study", "cases", "views", "testing",
          "bench", "cli"]
RANK = {name: rank for rank, name in enumerate(LAYERS)}
RANK["generation"] = RANK["serving"]
DOTTED = re.compile(r"^optlab\.([a-z_]+)[a-z_.]*(:[A-Za-z_]\w*)?$")


def _layer(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[0] == "optlab" and parts[1] in RANK else None


def _module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(rel.parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _references(tree: ast.AST, module: str) -> list[tuple[int, str]]:
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative import: resolve against this module's package
                base = module.split(".")[: -node.level]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module or ""
            found.append((node.lineno, name))
            if name == "optlab":  # `from optlab import zoo` names submodules
                found += [(node.lineno, f"optlab.{alias.name}") for alias in node.names]
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and DOTTED.match(node.value):
            found.append((node.lineno, node.value.split(":")[0]))
    return found


MODULES = sorted(p for p in PACKAGE.rglob("*.py") if p.parent != PACKAGE or p.name not in ("__init__.py",))


def test_every_module_belongs_to_a_layer():
    for path in MODULES:
        assert _layer(_module_name(path)), f"{path.relative_to(PACKAGE.parent)} is in no layer of {LAYERS}"


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_import_runs_upward(path):
    module = _module_name(path)
    own = RANK[_layer(module)]
    upward = [f"line {line}: {name}" for line, name in _references(ast.parse(path.read_text()), module)
              if (layer := _layer(name)) and RANK[layer] > own]
    assert not upward, f"{module} (layer {_layer(module)}) reaches up to: " + "; ".join(upward)


def test_the_checker_sees_lazy_and_string_imports():
    source = "def f():\n    from optlab.views import plots\n\nLOADER = 'optlab.study.store:load'\n"
    names = [name for _, name in _references(ast.parse(source), "optlab.data.x")]
    assert sorted(names) == ["optlab.study.store", "optlab.views"]
