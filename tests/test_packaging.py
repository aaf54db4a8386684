"""The install promises: pinned, light to import, and the README's commands are what CI runs."""
from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HEAVY = ("torch", "onnxruntime", "transformers", "neural_compressor", "openvino", "sklearn", "altair", "ray")


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _pins() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, _, version = line.partition("==")
            assert version, f"constraints.txt line {line!r} is not an exact pin (name==version)"
            pins[_canonical(name)] = version
    return pins


def test_import_optlab_stays_light():
    code = ("import sys, optlab, optlab.recipes, optlab.models.candidate, optlab.data; "
            f"print([m for m in {HEAVY!r} if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", f"import optlab pulled in heavy modules: {out.stdout}"


def test_every_dependency_is_pinned_and_torch_is_the_cpu_pin():
    pins = _pins()
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = project["dependencies"] + [r for extra in project["optional-dependencies"].values() for r in extra]
    for requirement in declared:
        name = _canonical(re.split(r"[<>=!~\[ ;]", requirement, maxsplit=1)[0])
        assert name in pins, f"{name} is declared in pyproject.toml but not pinned in constraints.txt"
    assert pins["torch"] == "2.13.0"


def test_installed_versions_match_the_pins():
    from importlib.metadata import PackageNotFoundError, version

    mismatched = []
    for name, pinned in _pins().items():
        try:
            installed = version(name)
        except PackageNotFoundError:
            mismatched.append(f"{name}: not installed")
            continue
        if installed.split("+")[0] != pinned.split("+")[0]:
            mismatched.append(f"{name}: installed {installed}, pinned {pinned}")
    assert not mismatched, "environment drifted from constraints.txt: " + "; ".join(mismatched)


def test_readme_gives_exactly_two_commands_and_ci_runs_the_test_one():
    readme = (ROOT / "README.md").read_text()
    commands = re.findall(r"^python3\.11 dev\.py (\w+)$", readme, flags=re.M)
    assert sorted(set(commands)) == ["main", "test"], commands
    ci = (ROOT / ".ci" / "run").read_text()
    assert re.search(r"^python3\.11 dev\.py test$", ci, flags=re.M), "CI must call the README's test command"


def test_environment_yml_uses_the_same_pins():
    text = (ROOT / "environment.yml").read_text()
    assert "-c constraints.txt" in text and "python=3.11" in text


def test_the_package_list_matches_the_tree():
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "optlab").rglob("__init__.py")}
    assert found | {"optlab.data.generators"} == listed, "pyproject's [tool.setuptools] packages and optlab/ differ"


def test_a_wheel_installs_and_loads_every_dataset_outside_the_checkout(tmp_path):
    """A plain (non-editable) install finds the dataset generators: built offline, installed with
    --no-deps into a fresh virtual environment that sees this environment's packages, and run
    from a folder that is not the checkout."""
    import shutil
    import site
    import venv

    source = tmp_path / "source"  # a copy: setuptools builds in-tree and would leave build/ in the checkout
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, source / name)
    for folder in ("optlab", "datasets"):
        shutil.copytree(ROOT / folder, source / folder, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    wheels = tmp_path / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
                    "-q", "-w", str(wheels), str(source)], check=True, capture_output=True, text=True)
    (wheel,) = wheels.glob("optlab-*.whl")
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=False).create(env_dir)
    python = env_dir / "bin" / "python"
    child_site = subprocess.run([str(python), "-c", "import site; print(site.getsitepackages()[0])"],
                                check=True, capture_output=True, text=True).stdout.strip()
    # This environment's packages, as a plain path entry: its optlab (an editable install) is not
    # picked up, because a path entry does not run the .pth hooks inside it.
    (Path(child_site) / "project-env.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--no-index",
                    "-q", str(wheel)], check=True, capture_output=True, text=True)
    code = ("import optlab, optlab.data.datasets as d; "
            "print(optlab.__file__); "
            "print(*[f'{n}:{len(d.load(n, smoke=True).test)}' for n in d.DATASETS]); "
            "import optlab.data.reference as r, optlab.study.store as s; "
            "print(*[f'{m}/{n}:{len(s.Store(r.recorded(m, n), read_only=True).records())}' "
            "for m, ns in r.available().items() for n in ns])")
    out = subprocess.run([str(python), "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120,
                         env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "OPTLAB_CACHE": str(tmp_path / "cache"),
                              "HF_HUB_OFFLINE": "1"})
    assert out.returncode == 0, out.stderr[-2000:]
    installed, sizes, recorded = out.stdout.splitlines()
    assert str(env_dir) in installed and str(ROOT) not in installed, installed
    assert [s.split(":")[0] for s in sizes.split()] == ["digits", "bids", "intents"]
    assert all(int(s.split(":")[1]) > 0 for s in sizes.split())
    recorded = dict(item.split(":") for item in recorded.split())  # the reference results ship in the wheel
    assert {"h200/bids", "h200/digits"} <= set(recorded) and all(int(n) > 0 for n in recorded.values()), recorded
