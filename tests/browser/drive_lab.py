"""Drive one JupyterLab in one Chromium over every notebook and write what the browser saw as JSON.

Run by tests/browser/test_jupyterlab.py inside a loopback-only network namespace (`unshare -n`):
    python drive_lab.py JOB.json
JOB: {"root": a folder with one sub-folder per notebook (STEM/NAME.ipynb, so each has its own
results/ and working files), "notebooks": the live runs, in order, "saved": null or {"notebook":
NAME, "source": path} (run headless, then opened with no kernel), "out": the result JSON,
"artifacts": the screenshot folder, "python": interpreter with JupyterLab, "chromium": browser
path, "deadline_s": the server's whole life, "run_timeout_s": one notebook's Run All}.

One server and one page for all: a JupyterLab start and a browser start cost 10-20 s each on 2
busy cores, so each notebook opens in the same page, runs (Run All, smoke mode), is measured,
saved, and closed with its kernel shut down before the next opens. Every wait is on a condition
(the kernel idle, every cell run, every chart drawn), not a fixed sleep.
live (each notebook): record run state, widget and chart state, geometry at 1280x800 and the
       controls at 1440x900, the study's progress bars as saved; on an explorer, change
       its max-p99 box through the UI and click a point. Seconds per stage go in `timings`.
saved: execute the notebook headless (papermill in smoke mode, as the main job does, its study
       resuming from the live run's store), then open it with no kernel and record which charts drew.
Every browser request that does not go to the server is blocked and recorded; console and page
errors are recorded for the notebook in front. The server is stopped in `finally`, and by a
watchdog at the deadline. This is a script, not a test module: the test asserts on its JSON.
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import page_scripts as js  # this script's folder is on sys.path (run as a script)
from browser_page import TALLEST_SHOT_PX, VIEWPORT, Browser, parse_point
from lab_server import Lab, lab_env, loopback_up
from page_geometry import JS_GEOMETRY

WIDE = {"width": 1440, "height": 900}  # a larger laptop: the explorer's controls must not clip here either
RESULTS_COLUMNS = ["candidate", "status", "family", "p99_ms", "quality", "quality_drop"]
KERNEL_REPORT = ("import json as _j, optlab as _o\nfor _n in ('study', 'results'):\n    _v = globals().get(_n)\n"
                 "    _df = getattr(_v, 'results', _v)\n    if _df is not None and hasattr(_df, 'to_dict'):\n"
                 f"        print(_j.dumps(_df[{RESULTS_COLUMNS!r}].to_dict('records'), default=str)); break\n"
                 "print('OPTLAB', _o.__file__)\n"
                 "print('SLA', _j.dumps({'max_quality_drop': globals().get('max_quality_drop'), "
                 "'max_p99_ms': globals().get('max_p99_ms')}))")

_START = time.monotonic()


def log(step: str) -> None:
    """A timestamped progress line on stderr (the test prints it when something fails)."""
    print(f"[drive_lab {time.monotonic() - _START:6.1f} s] {step}", file=sys.stderr, flush=True)


class Stopwatch:
    """Seconds per stage of one notebook (`with watch("run_all"): ...`)."""

    def __init__(self):
        self.timings: dict[str, float] = {}

    @contextlib.contextmanager
    def __call__(self, stage: str):
        started = time.monotonic()
        try:
            yield
        finally:
            self.timings[stage] = round(self.timings.get(stage, 0.0) + time.monotonic() - started, 1)


def open_notebook(browser: Browser, lab: Lab, path: str) -> None:
    """The notebook at `path` (relative to the server's root) in front: the first loads the page,
    later ones open in the same page (no reload)."""
    page = browser.page
    if not page.url.startswith(lab.base):
        page.goto(f"{lab.base}/lab/tree/{path}?token={lab.token}&reset", wait_until="domcontentloaded")
    else:
        page.evaluate(js.JS_OPEN, path)
    page.wait_for_function(js.JS_OPENED, arg=path, timeout=90_000, polling=200)


def expected_charts(notebook: Path) -> int:
    """Code cells that draw a static chart (a call into ol.plots)."""
    cells = json.loads(notebook.read_text())["cells"]
    return sum(1 for c in cells if c["cell_type"] == "code" and "ol.plots." in "".join(c["source"]))


def saved_study_bars(notebook: Path) -> list[str]:
    """The study's progress bars as the saved file has them: "n/total" of each text fallback."""
    bars = []
    for cell in json.loads(notebook.read_text())["cells"]:
        for output in cell.get("outputs", []):
            text = "".join(output.get("data", {}).get("text/plain", ""))
            if text.startswith("optlab study"):
                found = re.search(r"(\d+)/(\d+)\s*\[", text)
                bars.append(f"{found.group(1)}/{found.group(2)}" if found else "")
    return bars


# --- one notebook, live -----------------------------------------------------------------------

def run_all(job: dict, browser: Browser, lab: Lab, out: dict) -> None:
    """Run All and wait for its end (every code cell run and the kernel idle, or an error)."""
    page = browser.page
    page.evaluate("() => { window.jupyterapp.commands.execute('notebook:run-all-cells'); }")
    try:
        page.wait_for_function(js.JS_RUN_DONE, timeout=job["run_timeout_s"] * 1000, polling=500)
    except Exception:  # noqa: BLE001 - the state below says what did not finish
        if lab.proc.poll() is not None:
            raise RuntimeError(f"JupyterLab stopped (its {job['deadline_s']} s deadline?) "
                               "before Run All finished") from None
        out["errors"].append(f"Run All did not finish within {job['run_timeout_s']} s")
    out["run_state"] = page.evaluate(js.JS_RUN_STATE)
    with contextlib.suppress(Exception):  # the last widget and chart messages draw
        page.wait_for_function(js.JS_SETTLED, timeout=15_000, polling=200)


def read_kernel(browser: Browser, out: dict) -> None:
    printed = browser.page.evaluate(js.JS_KERNEL_PRINT, KERNEL_REPORT)
    lines = printed.strip().splitlines()
    out["kernel_rows"] = json.loads(lines[0]) if lines and lines[0].startswith("[") else []
    out["kernel_sla"] = json.loads(lines[-1][4:]) if lines and lines[-1].startswith("SLA ") else {}
    out["kernel_optlab"] = next((line[7:] for line in lines if line.startswith("OPTLAB ")), None)
    out["kernel_print"] = printed[-2000:]


def measure_page(browser: Browser, folder: Path, notebook: Path, out: dict) -> None:
    """Charts drawn, geometry at 1280x800 and 1440x900, and the screenshots: the whole notebook
    (artifacts/STEM.png) and each chart, taken in one page made tall enough to hold them all."""
    page = browser.page
    out["bad_text"] = [t for t in js.BAD_TEXT if t in page.inner_text(".jp-Notebook")]
    out["typeset_math"] = page.locator(".jp-OutputArea-output mjx-container").count()  # "$" read as LaTeX
    charts = page.locator(".jp-OutputArea-output .vega-embed")
    out["static_charts_expected"] = expected_charts(notebook)
    out["static_charts"] = [
        {"marks": chart.evaluate("e => e.querySelectorAll('svg .role-mark > *').length"),
         "points": len(chart.evaluate(js.JS_POINTS))}
        for chart in charts.all() if not chart.evaluate("e => !!e.closest('.widget-vbox')")]
    out["geometry"] = page.evaluate(JS_GEOMETRY)
    browser.resize(WIDE)
    out["geometry_wide"] = page.evaluate(JS_GEOMETRY)
    browser.resize(VIEWPORT)
    height = min(page.evaluate(js.JS_FULL_HEIGHT) + 50, TALLEST_SHOT_PX)
    browser.resize({"width": VIEWPORT["width"], "height": max(height, VIEWPORT["height"])})
    try:
        page.evaluate(js.JS_FULL_HEIGHT)  # (back at the top after the resize)
        page.evaluate(js.JS_NEXT_FRAME)
        out["screenshot"] = str(folder.parent / f"{folder.name}.png")
        page.screenshot(path=out["screenshot"])
        out["chart_screenshots"] = [browser.shot(folder / f"chart-{i}.png", chart)
                                    for i, chart in enumerate(charts.all())]
    finally:
        browser.resize(VIEWPORT)


def run_live(job: dict, browser: Browser, lab: Lab, name: str) -> dict:
    """One notebook: open, Run All, measure, explore, save, close (its kernel shut down)."""
    stem, watch = Path(name).stem, Stopwatch()
    path, notebook = f"{stem}/{name}", Path(job["root"]) / stem / name
    folder = Path(job["artifacts"]) / stem
    out: dict = {"notebook": name, "errors": [], "timings": watch.timings}
    marks = browser.marks()
    try:
        with watch("open"):
            open_notebook(browser, lab, path)
        with watch("kernel_start"):
            browser.page.wait_for_function(js.JS_KERNEL_IDLE, timeout=120_000, polling=200)
        log(f"{name}: Run All")
        with watch("run_all"):
            run_all(job, browser, lab, out)
        log(f"{name}: Run All ended after {watch.timings['run_all']} s: {out['run_state']}")
        with watch("checks"):
            read_kernel(browser, out)
            measure_page(browser, folder, notebook, out)
        explorer = browser.page.locator(".jp-OutputArea-output").filter(
            has=browser.page.locator(".widget-text", has_text="max p99"))
        out["explorer_found"] = explorer.count()
        if out["explorer_found"]:
            with watch("explore"):
                explore(browser, explorer.first, folder, out)
        with watch("save"):
            browser.page.evaluate(js.JS_SAVE)
            out["study_bars_saved"] = saved_study_bars(notebook)
    except Exception as error:  # noqa: BLE001 - recorded for the test to report, with a screenshot
        out["errors"].append(f"{type(error).__name__}: {error}")
        with contextlib.suppress(Exception):
            out["screenshot_failure"] = browser.shot(folder / "failure.png")
    finally:
        with watch("close"), contextlib.suppress(Exception):
            browser.page.evaluate(js.JS_CLOSE)
        out.update(browser.since(marks))
        out["wall_s"] = round(sum(watch.timings.values()), 1)
    log(f"{name}: {watch.timings}")
    return out


def _wait(page, script: str, arg=None, timeout_ms: int = 15_000) -> bool:
    """Wait for a condition in the page; False (not an error) when it never came: the test
    asserts on what was seen, and says what."""
    try:
        page.wait_for_function(script, arg=arg, timeout=timeout_ms, polling=100)
        return True
    except Exception:  # noqa: BLE001
        return False


def explore(browser: Browser, explorer, folder: Path, out: dict) -> None:
    """The explorer after Run All, then with max p99 changed through its box, then a click."""
    page = browser.page
    explorer.scroll_into_view_if_needed()
    recommendation = explorer.locator(".widget-html", has_text="Recommendation:").first
    chart = explorer.locator(".vega-embed").first
    out["explorer_initial"] = {"recommendation": recommendation.inner_text(),
                               "points": [parse_point(p) for p in chart.evaluate(js.JS_POINTS)],
                               "families": explorer.locator("select option").all_inner_texts(),
                               "screenshot": browser.shot(folder / "explorer-after-run-all.png", explorer)}
    box = explorer.locator(".widget-text", has_text="max p99").locator("input")
    chart_el = chart.element_handle()
    # max p99 0.0001 ms rules every point out (all faded); 1000 ms lets the fast ones back in
    waits = {0.0001: "(el) => { const p = el.querySelectorAll('g.candidates_marks > path');"
                     " return p.length > 0 && Array.from(p).every(x => x.getAttribute('opacity') === '0.35'); }",
             1000.0: "(el) => Array.from(el.querySelectorAll('g.candidates_marks > path'))"
                     ".some(x => x.getAttribute('opacity') !== '0.35')"}
    steps = []
    for value, drawn in waits.items():
        before = recommendation.inner_text()
        box.fill(str(value))
        box.press("Enter")
        changed = _wait(page, "([el, old]) => el.innerText !== old", [recommendation.element_handle(), before])
        redrawn = _wait(page, drawn, chart_el, timeout_ms=5_000)
        steps.append({"max_p99_ms": value, "recommendation": recommendation.inner_text(),
                      "text_changed": changed, "chart_redrawn": redrawn,
                      "points": [parse_point(p) for p in chart.evaluate(js.JS_POINTS)],
                      "screenshot": browser.shot(folder / f"explorer-max-p99-{value:g}.png", explorer)})
    out["explorer_steps"] = steps
    click(browser, explorer, chart, folder, out)


def click(browser: Browser, explorer, chart, folder: Path, out: dict) -> None:
    """Click the first point: the details pane fills, and stays compact."""
    page = browser.page
    point = chart.locator("g.candidates_marks > path").first
    point.scroll_into_view_if_needed()  # the explorer is taller than an 800 px screen: click where it shows
    box = point.bounding_box()
    root = explorer.locator(".widget-vbox").first
    details_before = explorer.locator(".optlab-details").count()
    height_before = root.bounding_box()["height"]
    page.mouse.click(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    with contextlib.suppress(Exception):
        explorer.locator(".optlab-details").first.wait_for(timeout=15_000)
    page.mouse.move(5, 5)  # off the chart: the hover tooltip would cover the screenshot
    _wait(page, js.JS_TOOLTIP_HIDDEN, timeout_ms=3_000)
    details = explorer.locator(".optlab-details")
    pane_height = "e => (e.closest('.widget-html') || e).getBoundingClientRect().height"  # the widget holding it
    out["click"] = {"details_before": details_before, "details_after": details.count(),
                    "details_text": details.first.inner_text() if details.count() else "",
                    "details_height_px": details.first.evaluate(pane_height) if details.count() else None,
                    "explorer_height_px": root.bounding_box()["height"], "height_before_px": height_before,
                    "screenshot": browser.shot(folder / "explorer-after-click.png", explorer)}


# --- the saved notebook -------------------------------------------------------------------------

def execute_headless(job: dict, python: str) -> Path:
    """What the main job does: papermill in smoke mode, headless, beside the live run's results
    (its study resumes from that store). The copy names no kernel JupyterLab has, so opening it
    starts none (a kernel-less viewer, as nbviewer or a colleague without the environment)."""
    saved = job["saved"]
    folder = Path(job["root"]) / Path(saved["notebook"]).stem
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / f"executed_{saved['notebook']}"
    env = {**lab_env(Path(job["root"])), "OPTLAB_HEADLESS": "1"}
    subprocess.run([python, "-m", "papermill", "--no-progress-bar", "--log-level", "WARNING",
                    saved["source"], str(target), "-p", "smoke", "True"],
                   cwd=folder, env=env, check=True, timeout=job.get("execute_timeout_s", 300))
    nb = json.loads(target.read_text())
    nb["metadata"]["kernelspec"] = {"name": "optlab-no-kernel", "display_name": "no kernel", "language": "none"}
    nb["metadata"].setdefault("language_info", {})["name"] = "none"
    target.write_text(json.dumps(nb))
    return target


def run_saved(job: dict, browser: Browser, lab: Lab) -> dict:
    """Open the executed notebook with no kernel: every chart output must show a picture."""
    page, watch = browser.page, Stopwatch()
    out: dict = {"notebook": job["saved"]["notebook"], "errors": [], "timings": watch.timings}
    folder = Path(job["artifacts"]) / f"saved-{Path(job['saved']['notebook']).stem}"
    marks = browser.marks()
    try:
        with watch("execute_headless"):
            target = execute_headless(job, job["python"])
        with watch("open"):
            open_notebook(browser, lab, f"{target.parent.name}/{target.name}")
            # no kernel spec fits, so JupyterLab may ask which kernel to use: answer "No Kernel"
            with contextlib.suppress(Exception):
                page.locator(".jp-Dialog button", has_text="No Kernel").first.click(timeout=5_000)
            _wait(page, js.JS_SETTLED, timeout_ms=10_000)
        with watch("checks"):
            saved_checks(browser, target, folder, out)
    except Exception as error:  # noqa: BLE001 - recorded for the test to report
        out["errors"].append(f"{type(error).__name__}: {error}")
    finally:
        with contextlib.suppress(Exception):
            page.evaluate(js.JS_CLOSE)
        out.update(browser.since(marks))
    return out


def saved_checks(browser: Browser, target: Path, folder: Path, out: dict) -> None:
    page = browser.page
    saved = json.loads(target.read_text())
    out["saved_chart_outputs"] = sum(1 for cell in saved["cells"] for output in cell.get("outputs", [])
                                     if "image/png" in output.get("data", {}))
    out["study_bars_saved"] = saved_study_bars(target)
    images = page.locator(".jp-OutputArea-output img")
    drawn = []
    for i, image in enumerate(images.all()):
        image.scroll_into_view_if_needed()
        _wait(page, "(e) => e.complete", image.element_handle(), timeout_ms=5_000)
        size = image.evaluate("e => [e.complete, e.naturalWidth, e.naturalHeight]")
        output = image.locator("xpath=ancestor::div[contains(@class, 'jp-OutputArea-output')][1]")
        drawn.append({"complete": size[0], "width": size[1], "height": size[2],
                      "screenshot": browser.shot(folder / f"chart-{i}.png", output)})
    out["saved_images"] = drawn
    out["headings"] = page.evaluate(js.JS_HEADINGS)
    out["bad_text"] = [t for t in js.BAD_TEXT if t in page.inner_text(".jp-Notebook")]
    out["typeset_math"] = page.locator(".jp-OutputArea-output mjx-container").count()  # "$" read as LaTeX
    out["kernel_status"] = page.evaluate("""() => { const w = window.jupyterapp.shell.currentWidget;
        const s = w.sessionContext; return s.session && s.session.kernel ? s.session.kernel.status : 'none'; }""")
    out["screenshot"] = browser.shot(folder.parent / f"{folder.name}.png")


# --- the whole run ------------------------------------------------------------------------------

def _watchdog(job: dict, result: dict, lab_ref: list) -> threading.Timer:
    """A browser call that never returns (seen when the server died mid-call) must not hold the
    test: at the deadline record it, stop the server, write the result and exit."""
    def give_up() -> None:
        result["errors"].append(f"the driver passed its {job['deadline_s']} s deadline and gave up")
        log("deadline passed: giving up")
        if lab_ref:
            lab_ref[0].stop()
            result["server_stopped"] = lab_ref[0].proc.poll() is not None
        Path(job["out"]).write_text(json.dumps(result, indent=1, default=str))
        os._exit(3)

    timer = threading.Timer(job["deadline_s"] + 10, give_up)
    timer.daemon = True
    timer.start()
    return timer


def main(path: str) -> int:
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # a TERM from the test still runs `finally`
    import faulthandler

    faulthandler.register(signal.SIGUSR1)  # `kill -USR1 <pid>` prints where a stuck run is
    job = json.loads(Path(path).read_text())
    result: dict = {"errors": [], "notebooks": {}, "saved": None, "timings": {}}
    started = time.monotonic()
    Path(job["artifacts"]).mkdir(parents=True, exist_ok=True)
    if job.get("netns"):
        loopback_up()
    with contextlib.suppress(OSError):
        socket.create_connection(("1.1.1.1", 80), timeout=2).close()
        result["internet_reachable"] = True
    lab_ref: list[Lab] = []
    browser = None
    watchdog = _watchdog(job, result, lab_ref)
    try:
        lab = Lab(job["python"], Path(job["root"]), job["deadline_s"])
        lab_ref.append(lab)
        lab.wait_ready()
        result["timings"]["server_start"] = round(time.monotonic() - started, 1)
        log(f"JupyterLab ready on {lab.base}")
        browser = Browser(job["chromium"], lab.base, Path(job["artifacts"]))
        result["timings"]["browser_start"] = round(time.monotonic() - started - result["timings"]["server_start"], 1)
        for name in job["notebooks"]:
            result["notebooks"][name] = run_live(job, browser, lab, name)
            Path(job["out"]).write_text(json.dumps(result, indent=1, default=str))  # what is done so far
        if job.get("saved"):
            result["saved"] = run_saved(job, browser, lab)
    except Exception as error:  # noqa: BLE001 - recorded for the test to report
        result["errors"].append(f"{type(error).__name__}: {error}")
    finally:
        log("stopping" + (f" after {result['errors']}" if result["errors"] else ""))
        if browser is not None:
            result["blocked"] = browser.blocked
            browser.close()
        if lab_ref:
            lab_ref[0].stop()
            result["server_stopped"] = lab_ref[0].proc.poll() is not None
        result["wall_s"] = round(time.monotonic() - started, 1)
        watchdog.cancel()
        Path(job["out"]).write_text(json.dumps(result, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
