"""End to end in a real JupyterLab and Chromium, with no network but loopback: every notebook.

One JupyterLab (127.0.0.1, free port, token) and one Chromium (Debian's, through Playwright)
serve the whole module: every notebook in notebooks/ (a new one is included by being there) is
copied into its own folder, opened in the same page, run with Run All in smoke mode, measured,
saved and closed with its kernel shut down; then 00_tour is executed headless as the main job
does and opened with no kernel (every chart must still be drawn). JupyterLab, its kernels and the
browser run inside a network namespace that has only `lo` (`unshare -n`), and the browser
blocks (and the test fails on) every request that is not to that server. The kernels get this
process's environment, so they import the optlab under test (checked).

The browser is 1280x800 (a laptop): after Run All, no two visible texts of a Vega chart overlap,
no text reaches outside its SVG, and no explorer control clips its label or value, at 1280x800
and at 1440x900 (page_geometry.py); a clicked point's details pane stays compact; the study's
progress bars are saved as they ended. Screenshots: $OPTLAB_ARTIFACTS/browser/ (default
test-artifacts/browser/, git-ignored) holds NN_name.png (the whole notebook after Run All) and a
folder per notebook (each chart, the explorer's steps), with result.json and timings.txt (seconds
per notebook and stage). The work is in drive_lab.py (run as a script in the namespace); this
module checks what it saw. `-k NN_name` runs only the notebooks the selected tests need.

Cost: nearly all of it is the notebooks' own smoke runs (Run All), each of which keeps about one
core busy (one-thread workloads), so the notebooks are driven in `LANES` lanes at once (default 2,
`OPTLAB_BROWSER_LANES`), each lane its own JupyterLab and Chromium in its own namespace, balanced by
the notebooks' measured Run All seconds (`RUN_ALL_S`). A server and browser start costs ~7-15 s per
lane, and opening, kernel start, checks, exploring, saving and closing add ~5-20 s per notebook.
timings.txt has the figures of each run, per lane.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DRIVER = Path(__file__).with_name("drive_lab.py")
# screenshots and the run's result.json (test-artifacts/ is git-ignored; CI may point it elsewhere)
ARTIFACTS = Path(os.environ.get("OPTLAB_ARTIFACTS", ROOT / "test-artifacts")) / "browser"
CHROMIUM = os.environ.get("OPTLAB_CHROMIUM", "/usr/bin/chromium")
NOTEBOOKS = sorted(p.name for p in (ROOT / "notebooks").glob("*.ipynb"))
SAVED = "00_tour.ipynb"  # executed headless and opened with no kernel
RUN_LIMIT_S = 360  # one notebook's Run All in smoke mode (00_tour once took 243 s on 2 cores at load 10)
STARTUP_S = 120  # the server and the browser, once
FADED, SOLID = 0.35, 0.95  # the Pareto chart's point opacity outside / inside the SLA
DETAILS_MAX_PX = 400  # a clicked point's details pane scrolls past its own bound, never pushes the page down
LANES = max(1, int(os.environ.get("OPTLAB_BROWSER_LANES", "2")))  # notebooks driven at once (2 cores: two kernels)
# seconds of Run All in the browser in smoke mode on 2 cores (session 13's CI), to balance the lanes;
# a notebook not listed counts as DEFAULT_RUN_ALL_S, and the saved tour as SAVED_RUN_S on the lane of its live run
RUN_ALL_S = {"08_llm.ipynb": 101, "07_transformers.ipynb": 53, "00_tour.ipynb": 45, "05_serving.ipynb": 44}
DEFAULT_RUN_ALL_S, SAVED_RUN_S = 30, 40
INSTALL_HINT = ("Debian's chromium is needed for the browser test: run `python3.11 dev.py setup` as root "
                "(it runs `apt-get install -y chromium`), or `sudo apt-get install -y chromium`; "
                "set OPTLAB_CHROMIUM to use another Chromium binary.")


def _require_browser() -> None:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing. {INSTALL_HINT}", pytrace=False)
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        pytest.fail("playwright is not installed: `python3.11 dev.py setup` installs the test extra",
                    pytrace=False)


def _namespace_prefix() -> list[str]:
    """`unshare -n` (root) or `unshare -rn` (an unprivileged user namespace): a loopback-only network."""
    unshare = shutil.which("unshare")
    if unshare is None:
        pytest.fail("`unshare` (util-linux) is missing: the browser test runs JupyterLab and Chromium in a "
                    "loopback-only network namespace; `apt-get install -y util-linux`", pytrace=False)
    prefix = [unshare, "-n"] if os.geteuid() == 0 else [unshare, "-rn"]
    probe = subprocess.run([*prefix, "true"], capture_output=True, text=True)
    if probe.returncode != 0:
        pytest.fail(f"cannot create a loopback-only network namespace ({' '.join(prefix)}: "
                    f"{probe.stderr.strip()}); run the tests as root or allow user namespaces", pytrace=False)
    return [*prefix, "--"]


def _wanted(request) -> tuple[list[str], bool]:
    """The notebooks the selected tests of this module need, and whether the saved case runs:
    `-k 05_serving` drives one notebook, not all."""
    names, saved = set(), False
    for item in request.session.items:
        if item.module is not request.module:
            continue
        callspec = getattr(item, "callspec", None)
        if callspec is not None and "notebook" in callspec.params:
            names.add(callspec.params["notebook"])
        names.update(NEEDS.get(item.originalname, ()))
        saved |= item.originalname == "test_saved_tour_shows_every_chart_without_a_kernel"
    return [n for n in NOTEBOOKS if n in names], saved


def _drive(tmp: Path, notebooks: list[str], saved: bool) -> dict:
    """Run drive_lab.py once over `notebooks` in a loopback-only namespace; its JSON result."""
    _require_browser()
    root = tmp / "lab"
    for name in notebooks:  # each in its own folder: its own results/ and working files
        (root / Path(name).stem).mkdir(parents=True)
        shutil.copy(ROOT / "notebooks" / name, root / Path(name).stem / name)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    for stem in [Path(n).stem for n in notebooks] + ([f"saved-{Path(SAVED).stem}"] if saved else []):
        shutil.rmtree(ARTIFACTS / stem, ignore_errors=True)
        (ARTIFACTS / f"{stem}.png").unlink(missing_ok=True)
    deadline = STARTUP_S + RUN_LIMIT_S * len(notebooks) + (RUN_LIMIT_S if saved else 0)
    job = {"root": str(root), "notebooks": notebooks, "out": str(tmp / "result.json"),
           "saved": {"notebook": SAVED, "source": str(ROOT / "notebooks" / SAVED)} if saved else None,
           "artifacts": str(ARTIFACTS), "python": sys.executable, "chromium": CHROMIUM,
           "deadline_s": deadline, "run_timeout_s": RUN_LIMIT_S - 60, "netns": True}
    (tmp / "job.json").write_text(json.dumps(job))
    started = time.monotonic()
    proc = subprocess.Popen([*_namespace_prefix(), sys.executable, str(DRIVER), str(tmp / "job.json")],
                            cwd=root, start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    try:
        output, _ = proc.communicate(timeout=deadline + 30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGTERM)  # the driver stops the server and the browser in `finally`
        try:
            output, _ = proc.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)  # (the server's own `timeout` guard ends it regardless)
            output, _ = proc.communicate()
    with contextlib.suppress(ProcessLookupError):  # whatever the driver left in its group (browser, node)
        os.killpg(proc.pid, signal.SIGKILL)
    result_path = tmp / "result.json"
    result = json.loads(result_path.read_text()) if result_path.exists() else \
        {"errors": [f"the driver wrote no result (exit {proc.returncode})"], "notebooks": {}, "saved": None}
    result["test_wall_s"] = round(time.monotonic() - started, 1)
    result["driver_log"] = output[-4000:]
    log = root / ".lab-home" / "server.log"
    result["server_log"] = log.read_text()[-3000:] if log.exists() else ""
    result["lab_roots"] = {name: str(root) for name in notebooks}
    return result


def _lanes(notebooks: list[str], saved: bool, lanes: int) -> list[tuple[list[str], bool]]:
    """`notebooks` split into at most `lanes` lanes of about equal Run All time (longest first, each to the
    lane with the least so far), each lane in the notebooks' own order; the saved tour runs on the lane of
    its live run (it resumes from that run's store)."""
    def cost(name: str) -> float:
        return RUN_ALL_S.get(name, DEFAULT_RUN_ALL_S) + (SAVED_RUN_S if saved and name == SAVED else 0)

    loads: list[tuple[float, list[str]]] = [(0.0, []) for _ in range(max(1, min(lanes, len(notebooks))))]
    for name in sorted(notebooks, key=cost, reverse=True):
        i = min(range(len(loads)), key=lambda k: loads[k][0])
        loads[i] = (loads[i][0] + cost(name), [*loads[i][1], name])
    split = [([n for n in notebooks if n in names], saved and SAVED in names) for _, names in loads if names]
    return split or [([], saved)]


def _merged(results: list[dict]) -> dict:
    """One result of the lanes' results: every notebook, every error (named by lane), the saved case."""
    def lane(i: int, text: str) -> str:
        return f"--- lane {i + 1} ---\n{text}"

    return {"errors": [f"lane {i + 1}: {e}" for i, r in enumerate(results) for e in r["errors"]],
            "internet_reachable": any(r.get("internet_reachable") for r in results),
            "server_stopped": all(r.get("server_stopped") for r in results),
            "notebooks": {name: run for r in results for name, run in r.get("notebooks", {}).items()},
            "saved": next((r["saved"] for r in results if r.get("saved")), None),
            "lab_roots": {name: root for r in results for name, root in r.get("lab_roots", {}).items()},
            "driver_log": "\n".join(lane(i, r["driver_log"]) for i, r in enumerate(results)),
            "server_log": "\n".join(lane(i, r["server_log"]) for i, r in enumerate(results)),
            "lanes": [{"notebooks": list(r.get("notebooks", {})), "saved": bool(r.get("saved")),
                       "test_wall_s": r.get("test_wall_s"), "timings": r.get("timings", {})} for r in results]}


def _timings(result: dict, wall_s: float) -> str:
    """Seconds per lane, notebook and stage, and the load at the end (for the report, not a target)."""
    lines = [f"browser module: {wall_s:.1f} s in all, {len(result['lanes'])} lane(s) at once; load average at "
             f"the end {os.getloadavg()[0]:.1f}"]
    for i, lane in enumerate(result["lanes"]):
        lines.append(f"lane {i + 1}: {lane['test_wall_s']} s; {lane['timings']}; {', '.join(lane['notebooks'])}"
                     + (" + saved" if lane["saved"] else ""))
    for name, run in result["notebooks"].items():
        lines.append(f"{name:40s} {run.get('wall_s', 0):7.1f} s  {run.get('timings')}")
    if result.get("saved"):
        lines.append(f"{'saved ' + SAVED:40s} {sum(result['saved']['timings'].values()):7.1f} s  "
                     f"{result['saved']['timings']}")
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="module")
def lab_run(request, tmp_path_factory) -> dict:
    """Every notebook the selected tests need, driven in lanes at once; the lanes' results merged."""
    notebooks, saved = _wanted(request)
    lanes = _lanes(notebooks, saved, LANES)
    folders = [tmp_path_factory.mktemp("browser") for _ in lanes]
    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=len(lanes)) as pool:
        results = list(pool.map(lambda args: _drive(args[0], *args[1]), zip(folders, lanes, strict=True)))
    result = _merged(results)
    timings = _timings(result, time.monotonic() - started)
    (ARTIFACTS / "result.json").write_text(json.dumps(result, indent=1))
    (ARTIFACTS / "timings.txt").write_text(timings)
    print(timings)
    return result


def _run(lab_run: dict, name: str) -> dict:
    """One notebook's result, after the run-wide checks."""
    assert not lab_run["errors"], (f"{lab_run['errors']}\ndriver:\n{lab_run['driver_log']}\n"
                                   f"server log:\n{lab_run['server_log']}")
    assert not lab_run.get("internet_reachable"), "the namespace reached the internet: it is not loopback-only"
    assert lab_run.get("server_stopped"), "the JupyterLab server was not stopped"
    assert name in lab_run["notebooks"], f"{name} was not driven:\n{lab_run['driver_log']}"
    return lab_run["notebooks"][name]


def _check_clean(result: dict) -> None:
    """Nothing failed, nothing reached off the server, no console or page errors."""
    assert not result["errors"], result["errors"]
    assert result["blocked"] == [], f"the page tried to load from off the server: {result['blocked']}"
    # anywidget gives a chart model 2 s to load its 0.9 MB bundle: on a busy machine it can miss that
    # ("[anywidget] Failed to initialize model"); it fails here, never hidden
    assert result["page_errors"] == [], result["page_errors"]
    assert result["console_errors"] == [], result["console_errors"]
    assert result["bad_text"] == [], f"error or loading text in the notebook: {result['bad_text']}"
    assert result["typeset_math"] == 0, "an output's text was typeset as LaTeX (unescaped $ signs)"


def _control_problems(geometry: dict, size: str) -> list[str]:
    return [f"at {size}: control {c['control']!r}, {c['element']} showing {c['text']!r}: {'; '.join(c['problems'])}"
            for c in geometry["controls"]]


def _check_geometry(result: dict) -> None:
    """At 1280x800: no two visible texts of a chart overprint, no text is cut by its SVG, no chart
    is wider than its output area; at 1280x800 and 1440x900 no control clips its label, value or list."""
    problems = []
    for chart in result["geometry"]["charts"]:
        for o in chart["overlaps"]:
            problems.append(f"{chart['name']}: {o['a']!r} ({o['a_role']}) and {o['b']!r} ({o['b_role']}) "
                            f"overlap by {o['overlap_px'][0]}x{o['overlap_px'][1]} px")
        for c in chart["cut"]:
            problems.append(f"{chart['name']}: {c['text']!r} ({c['role']}) reaches outside the SVG: "
                            f"text {c['box']}, svg {c['svg']}")
        if chart["wider_than_output"]:
            problems.append(f"{chart['name']}: {chart['wider_than_output']} px wider than its output area")
    problems += _control_problems(result["geometry"], "1280x800")
    problems += _control_problems(result["geometry_wide"], "1440x900")
    assert not problems, (f"{result['notebook']} (screenshot {result.get('screenshot')}):\n" + "\n".join(problems))


def _expected_faded(rows: list[dict], max_p99_ms: float | None, max_drop: float | None) -> dict[str, bool]:
    """Which points the SLA fades, by optlab.study.frontier's rules (missing figures fail a limit)."""
    out = {}
    for row in rows:
        p99, drop = row["p99_ms"], row["quality_drop"]
        drop = 0.0 if drop is None and row["family"] == "baseline" else drop
        slow = max_p99_ms is not None and (p99 is None or p99 > max_p99_ms)
        worse = max_drop is not None and (drop is None or drop > max_drop + 1e-12)
        out[row["candidate"]] = slow or worse
    return out


def _measured(result: dict) -> list[dict]:
    def number(value):
        return None if value in (None, "None", "nan", "NaN") else float(value)

    rows = [r for r in result["kernel_rows"] if r["status"] in ("ok", "reference")]
    return [{**r, "p99_ms": number(r["p99_ms"]), "quality_drop": number(r["quality_drop"])} for r in rows]


def _check_explorer(result: dict, measured: list[dict]) -> None:
    """The explorer, built before study.run(), holds every measured point; editing max p99 in
    its box changes the recommendation and fades exactly the points the SLA rules out; a click
    fills a details pane that stays within its bound."""
    initial = result["explorer_initial"]
    assert sorted(p["candidate"] for p in initial["points"]) == sorted(r["candidate"] for r in measured)
    assert "no results yet" not in initial["recommendation"]
    assert {r["family"] for r in measured} <= set(initial["families"])

    sla = result["kernel_sla"]
    tiny, large = result["explorer_steps"]
    assert "No candidate meets" in tiny["recommendation"] and "p99" in tiny["recommendation"]
    assert large["recommendation"] != tiny["recommendation"]
    for step in (tiny, large):
        want = _expected_faded(measured, step["max_p99_ms"], sla["max_quality_drop"])
        seen = {p["candidate"]: p["opacity"] == FADED for p in step["points"]}
        assert seen == want, (step["max_p99_ms"], seen, want)
        assert all(p["opacity"] in (FADED, SOLID) for p in step["points"])
    assert all(p["opacity"] == FADED for p in tiny["points"])
    if not all(_expected_faded(measured, large["max_p99_ms"], sla["max_quality_drop"]).values()):
        assert "No candidate meets" not in large["recommendation"]

    click = result["click"]
    assert click["details_before"] == 0 and click["details_after"] == 1
    assert "p99 (ms)" in click["details_text"]
    assert 0 < click["details_height_px"] <= DETAILS_MAX_PX, click
    # the explorer grows by at most the pane (the pane may wrap under the chart at 1280 px)
    assert click["explorer_height_px"] - click["height_before_px"] <= DETAILS_MAX_PX, click


@pytest.mark.parametrize("notebook", NOTEBOOKS)
def test_notebook_runs_and_reads_at_1280x800(lab_run, notebook):
    """Run All is clean, every chart draws, nothing overprints or clips, the explorer (where there
    is one) follows the study and answers its controls, and the study's bars are saved at their end."""
    result = _run(lab_run, notebook)
    _check_clean(result)
    state = result["run_state"]
    assert state["errors"] == [] and state["executed"] == state["code_cells"], state
    assert result["kernel_optlab"] and Path(result["kernel_optlab"]).is_relative_to(ROOT), (
        f"the notebook's kernel imported {result['kernel_optlab']}, not the optlab under test in {ROOT}")
    assert all(chart["marks"] > 0 for chart in result["static_charts"]), result["static_charts"]
    assert len(result["static_charts"]) >= result["static_charts_expected"]
    _check_geometry(result)
    # every study in smoke mode runs all its candidates: a saved bar short of its total kept a stale
    # state (the text fallback a viewer without the widget shows read "0/5" though all five ran)
    bars = result["study_bars_saved"]
    assert all(b and b.split("/")[0] == b.split("/")[1] for b in bars), (
        "a saved progress bar does not show its end", bars)
    measured = _measured(result)
    if result["explorer_found"] and measured:
        _check_explorer(result, measured)


def test_tour_explorer_holds_every_measured_point(lab_run):
    result = _run(lab_run, "00_tour.ipynb")
    measured = _measured(result)
    assert len(measured) >= 5, result["kernel_print"]  # baseline + 4 recipes in smoke mode
    assert result["explorer_found"] == 1
    assert any(chart["points"] == len(measured) for chart in result["static_charts"])
    bars = result["study_bars_saved"]  # the study ran all five: its saved bar says so
    assert bars and all(b and b.split("/")[0] == b.split("/")[1] for b in bars), bars


def test_quantization_keeps_working_files_under_results(lab_run):
    """INC's nc_workspace/ and every other working file stay under results/ (the notebook's folder is clean)."""
    result = _run(lab_run, "01_quantization.ipynb")
    assert result["static_charts_expected"] >= 2
    folder = Path(lab_run["lab_roots"]["01_quantization.ipynb"]) / "01_quantization"
    assert not (folder / "nc_workspace").exists(), "INC left nc_workspace/ in the notebook's folder"
    stray = {p.name for p in folder.iterdir()} - {"01_quantization.ipynb", "results", ".ipynb_checkpoints"}
    assert not stray, f"working files left in the notebook's folder: {sorted(stray)}"


def test_saved_tour_shows_every_chart_without_a_kernel(lab_run):
    assert not lab_run["errors"], lab_run["errors"]
    result = lab_run["saved"]
    assert result is not None, lab_run["driver_log"]
    _check_clean(result)
    assert result["kernel_status"] == "none"
    # the explorer (chart in its HTML) and the Pareto chart at least, each a decoded picture
    assert result["saved_chart_outputs"] >= 2
    drawn = [image for image in result["saved_images"] if image["complete"] and image["width"] > 100]
    assert len(drawn) >= result["saved_chart_outputs"], result["saved_images"]
    # the static explorer's recommendation is one block above its chart, not split around it
    assert result["headings"], "the static explorer shows no recommendation"
    for heading in result["headings"]:
        assert heading["img_top"] is not None and heading["bottom"] <= heading["img_top"], heading
    # a study bar saved headless shows its end (its text is what a kernel-less viewer shows); the
    # study may have resumed from the live run's store with nothing left to run, and then shows none
    bars = result["study_bars_saved"]
    assert all(b and b.split("/")[0] == b.split("/")[1] for b in bars), bars


# the notebooks each non-parametrized test needs driven
NEEDS = {"test_tour_explorer_holds_every_measured_point": ("00_tour.ipynb",),
         "test_quantization_keeps_working_files_under_results": ("01_quantization.ipynb",),
         "test_saved_tour_shows_every_chart_without_a_kernel": ("00_tour.ipynb",)}
