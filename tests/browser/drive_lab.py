"""Drive a real JupyterLab in Chromium over one notebook and write what the browser saw as JSON.

Run by tests/browser/test_jupyterlab.py inside a loopback-only network namespace (`unshare -n`):
    python drive_lab.py JOB.json
JOB: {"mode": "live" | "saved", "root": folder, "notebook": file name in root, "out": result
JSON path, "artifacts": screenshot folder, "python": interpreter with JupyterLab,
"chromium": browser path, "deadline_s": the server's whole life}.

live:  start JupyterLab (127.0.0.1, a free port, a token), open the notebook, Run All, wait
       for the kernel; record widget/chart state; change the explorer's max-p99 box through
       the UI; click a point.
saved: execute the notebook headless first (papermill in smoke mode, as the main job does),
       then open the executed copy in JupyterLab with no kernel and record which charts drew.
Every browser request that does not go to the server is blocked and recorded; console and
page errors are recorded. The server is stopped in `finally`, and by a watchdog at the
deadline. This is a script, not a test module: the test asserts on its JSON.
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import secrets
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

from page_geometry import JS_GEOMETRY  # this script's folder is on sys.path (run as a script)

SIOCGIFFLAGS, SIOCSIFFLAGS, IFF_UP = 0x8913, 0x8914, 0x1
VIEWPORT = {"width": 1280, "height": 800}  # a laptop screen: the geometry check measures at this size
RESULTS_COLUMNS = ["candidate", "status", "family", "p99_ms", "quality", "quality_drop"]


_START = time.monotonic()


def log(step: str) -> None:
    """A timestamped progress line on stderr (the test prints it when something fails)."""
    print(f"[drive_lab {time.monotonic() - _START:6.1f} s] {step}", file=sys.stderr, flush=True)


def loopback_up() -> None:
    """Bring `lo` up in a fresh network namespace (what `ip link set lo up` does)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        request = struct.pack("16sh", b"lo", 0)
        flags = struct.unpack("16sh", fcntl.ioctl(sock, SIOCGIFFLAGS, request))[1]
        fcntl.ioctl(sock, SIOCSIFFLAGS, struct.pack("16sh", b"lo", flags | IFF_UP))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def lab_env(root: Path) -> dict[str, str]:
    """The environment of JupyterLab and its kernels: private config/settings/runtime dirs (no
    user settings leak in), smoke mode, no headless flag (a browser is attached)."""
    home = root / ".lab-home"
    env = {k: v for k, v in os.environ.items() if k != "OPTLAB_HEADLESS"}
    dirs = {"JUPYTER_CONFIG_DIR": "config", "JUPYTER_DATA_DIR": "data", "JUPYTER_RUNTIME_DIR": "runtime",
            "JUPYTERLAB_SETTINGS_DIR": "settings", "JUPYTERLAB_WORKSPACES_DIR": "workspaces", "IPYTHONDIR": "ipython"}
    for name, sub in dirs.items():
        (home / sub).mkdir(parents=True, exist_ok=True)
        env[name] = str(home / sub)
    # No news or update checks (they would reach out to the internet, and pop up a question).
    notification = home / "settings" / "@jupyterlab" / "apputils-extension" / "notification.jupyterlab-settings"
    notification.parent.mkdir(parents=True, exist_ok=True)
    notification.write_text(json.dumps({"fetchNews": "false", "checkForUpdates": False}))
    # Every cell rendered and laid out, on screen or not: the geometry check measures all charts.
    tracker = home / "settings" / "@jupyterlab" / "notebook-extension" / "tracker.jupyterlab-settings"
    tracker.parent.mkdir(parents=True, exist_ok=True)
    tracker.write_text(json.dumps({"windowingMode": "none"}))
    env.update(OPTLAB_SMOKE="1", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", PYTHONUNBUFFERED="1")
    return env


class Lab:
    """A JupyterLab server over `root`, stopped on exit or at the deadline, whichever is first."""

    def __init__(self, python: str, root: Path, deadline_s: float, kernels: bool = True):
        self.port, self.token = free_port(), secrets.token_hex(16)
        self.base = f"http://127.0.0.1:{self.port}"
        env = lab_env(root)
        self.log = open(root / ".lab-home" / "server.log", "w")  # noqa: SIM115 - closed in stop()
        # coreutils' timeout is the last guard: the server dies at the deadline even if this driver is killed
        cmd = ["timeout", "-k", "10", str(int(deadline_s)), python, "-m", "jupyterlab", "--no-browser",
               "--ip=127.0.0.1", f"--port={self.port}",
               f"--IdentityProvider.token={self.token}", f"--ServerApp.root_dir={root}",
               "--ServerApp.port_retries=0", "--ServerApp.terminals_enabled=False",
               "--LabApp.expose_app_in_browser=True",
               "--LabApp.news_url=None", "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"]
        if os.geteuid() == 0:  # CI containers run as root
            cmd.append("--allow-root")
        if not kernels:  # a kernel-less viewer: no kernel spec can be found, so none starts
            cmd.append("--KernelSpecManager.allowed_kernelspecs=optlab-no-kernel")
        self.proc = subprocess.Popen(cmd, cwd=root, env=env, stdout=self.log,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        self._timer = threading.Timer(deadline_s, self.stop)
        self._timer.daemon = True
        self._timer.start()

    def wait_ready(self, timeout_s: float = 60.0) -> None:
        end = time.monotonic() + timeout_s
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                raise RuntimeError(f"JupyterLab exited with code {self.proc.returncode} before it was ready")
            with contextlib.suppress(OSError):
                with urllib.request.urlopen(f"{self.base}/api/status?token={self.token}", timeout=2) as reply:
                    if reply.status == 200:
                        return
            time.sleep(0.3)
        raise TimeoutError(f"JupyterLab did not answer on {self.base} within {timeout_s:.0f} s")

    def stop(self) -> None:
        """SIGTERM the server's process group (kernels included), SIGKILL after 10 s."""
        self._timer.cancel()
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        self.log.close()


# --- browser helpers (JavaScript run in the page) ----------------------------------------

JS_KERNEL_IDLE = """() => {
  const w = window.jupyterapp && window.jupyterapp.shell.currentWidget;
  const k = w && w.sessionContext && w.sessionContext.session && w.sessionContext.session.kernel;
  return !!k && k.status === 'idle' && !!w.content && w.content.widgets.length > 0;
}"""

JS_RUN_STATE = """() => {
  const nb = window.jupyterapp.shell.currentWidget;
  const cells = nb.content.widgets.map(c => c.model).filter(m => m.type === 'code');
  const errors = [];
  for (const m of cells) {
    for (let i = 0; i < m.outputs.length; i++) {
      const o = m.outputs.get(i).toJSON();
      if (o.output_type === 'error') errors.push(o.ename + ': ' + o.evalue);
    }
  }
  const kernel = nb.sessionContext.session && nb.sessionContext.session.kernel;
  return {code_cells: cells.length, executed: cells.filter(m => m.executionCount !== null).length,
          running: cells.filter(m => m.executionState === 'running').length,
          kernel: kernel ? kernel.status : 'none', errors};
}"""

JS_KERNEL_PRINT = """async (code) => {
  const k = window.jupyterapp.shell.currentWidget.sessionContext.session.kernel;
  const f = k.requestExecute({code, silent: false, store_history: false});
  let out = '';
  f.onIOPub = msg => {
    if (msg.header.msg_type === 'stream') out += msg.content.text;
    if (msg.header.msg_type === 'error') out += 'ERROR ' + msg.content.ename + ': ' + msg.content.evalue;
  };
  await f.done;
  return out;
}"""

# Every point of a Pareto chart (layer "candidates") with its opacity and the figures in its aria-label.
JS_POINTS = """(root) => Array.from(root.querySelectorAll('g.candidates_marks > path')).map(p => ({
  opacity: parseFloat(p.getAttribute('opacity') || '1'), label: p.getAttribute('aria-label') || ''}))"""

BAD_TEXT = ("Loading widget", "Error displaying widget", "Click to show javascript error", "Error loading script",
            "Failed to create view", "model not found")


def _field(label: str, name: str) -> str | None:
    match = re.search(rf"(?:^|; ){re.escape(name)}: ([^;]*)", label)
    return match.group(1).strip() if match else None


def parse_point(point: dict) -> dict:
    """A point's figures back from its aria-label ("p99_ms: 1.500; quality_drop: +0.0100; ...")."""
    def number(text):
        if text is None or text in ("", "null", "NaN"):
            return None
        return float(text.replace("\u2212", "-").replace(",", ""))

    label = point["label"]
    return {"candidate": _field(label, "candidate"), "family": _field(label, "family"),
            "status": _field(label, "status"), "p99_ms": number(_field(label, "p99_ms")),
            "quality_drop": number(_field(label, "quality_drop")), "opacity": point["opacity"]}


class Browser:
    """Chromium through Playwright, every request off the server blocked and recorded."""

    def __init__(self, chromium: str, base: str, artifacts: Path):
        from playwright.sync_api import sync_playwright

        self.base, self.artifacts = base, artifacts
        self.blocked: list[str] = []
        self.console_errors: list[str] = []
        self.page_errors: list[str] = []
        self._pw = sync_playwright().start()
        self.browser = self._pw.chromium.launch(executable_path=chromium, headless=True,
                                                args=["--no-sandbox", "--disable-dev-shm-usage"])
        self.context = self.browser.new_context(viewport=VIEWPORT)
        self.context.route("**/*", self._route)
        self.page = self.context.new_page()
        self.page.set_default_timeout(30_000)
        self.page.on("console", lambda m: m.type == "error" and self.console_errors.append(m.text))
        self.page.on("pageerror", lambda e: self.page_errors.append(str(e)))

    def _route(self, route) -> None:
        url = route.request.url
        if url.startswith(self.base + "/") or url.startswith(("data:", "blob:")):
            route.continue_()
        else:
            self.blocked.append(url)
            route.abort("blockedbyclient")

    def shot(self, name: str, locator=None) -> str:
        """A PNG of the page or of one element; an element taller than the notebook's panel is
        shot in a page made taller for the moment (same width, so the same layout), not cut."""
        path = self.artifacts / f"{name}.png"
        box = locator.bounding_box() if locator is not None else None
        if box is None or box["height"] <= VIEWPORT["height"] - 200:
            (locator or self.page).screenshot(path=str(path))
            return str(path)
        self.page.set_viewport_size({"width": VIEWPORT["width"], "height": int(box["height"]) + 250})
        try:
            locator.scroll_into_view_if_needed()
            self.page.wait_for_timeout(300)
            locator.screenshot(path=str(path))
        finally:
            self.page.set_viewport_size(VIEWPORT)
        return str(path)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.browser.close()
        with contextlib.suppress(Exception):
            self._pw.stop()


def open_notebook(browser: Browser, lab: Lab, name: str) -> None:
    browser.page.goto(f"{lab.base}/lab/tree/{name}?token={lab.token}&reset", wait_until="domcontentloaded")
    browser.page.wait_for_function("() => !!window.jupyterapp && !!window.jupyterapp.shell.currentWidget",
                                   timeout=60_000)
    browser.page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=60_000)


def expected_charts(notebook: Path) -> int:
    """Code cells that draw a static chart (a call into ol.plots)."""
    cells = json.loads(notebook.read_text())["cells"]
    return sum(1 for c in cells if c["cell_type"] == "code" and "ol.plots." in "".join(c["source"]))


# --- the two scenarios ----------------------------------------------------------------------

def run_live(job: dict, browser: Browser, lab: Lab, result: dict) -> None:
    page, name = browser.page, job["notebook"]
    open_notebook(browser, lab, name)
    log("notebook open; waiting for the kernel")
    page.wait_for_function(JS_KERNEL_IDLE, timeout=90_000)
    log("kernel idle; Run All")
    started = time.monotonic()
    page.evaluate("() => window.jupyterapp.commands.execute('notebook:run-all-cells')")
    time.sleep(1.0)
    while True:  # (the command's promise may already have waited for every cell: look at least once)
        if lab.proc.poll() is not None:
            raise RuntimeError(f"JupyterLab stopped (its {job['deadline_s']} s deadline?) before Run All finished")
        state = page.evaluate(JS_RUN_STATE)
        if state["errors"] or (state["executed"] == state["code_cells"] and not state["running"]
                               and state["kernel"] == "idle"):
            break
        if time.monotonic() - started >= job.get("run_timeout_s", 130):
            break
        time.sleep(0.5)
    result["run_all_s"] = round(time.monotonic() - started, 1)
    log(f"Run All ended after {result['run_all_s']} s: {state}")
    result["run_state"] = state
    page.wait_for_timeout(1500)  # let the last widget/chart messages draw
    result["bad_text"] = [t for t in BAD_TEXT if t in page.inner_text(".jp-Notebook")]
    result["typeset_math"] = page.locator(".jp-OutputArea-output mjx-container").count()  # "$" read as LaTeX

    code = ("import json as _j\nfor _n in ('study', 'results'):\n    _v = globals().get(_n)\n"
            "    _df = getattr(_v, 'results', _v)\n    if _df is not None and hasattr(_df, 'to_dict'):\n"
            f"        print(_j.dumps(_df[{RESULTS_COLUMNS!r}].to_dict('records'), default=str)); break\n"
            "print('SLA', _j.dumps({'max_quality_drop': globals().get('max_quality_drop'), "
            "'max_p99_ms': globals().get('max_p99_ms')}))")
    printed = page.evaluate(JS_KERNEL_PRINT, code)
    lines = printed.strip().splitlines()
    result["kernel_rows"] = json.loads(lines[0]) if lines and lines[0].startswith("[") else []
    result["kernel_sla"] = json.loads(lines[-1][4:]) if lines and lines[-1].startswith("SLA ") else {}
    result["kernel_print"] = printed[-2000:]

    outputs = page.locator(".jp-OutputArea-output")
    explorer = outputs.filter(has=page.locator(".widget-text", has_text="max p99"))
    result["explorer_found"] = explorer.count()
    charts = page.locator(".jp-OutputArea-output .vega-embed")
    result["vega_views"] = charts.count()
    result["static_charts_expected"] = expected_charts(Path(job["root"]) / name)
    static = []
    for i in range(charts.count()):
        chart = charts.nth(i)
        in_explorer = chart.evaluate("e => !!e.closest('.widget-vbox')")
        if in_explorer:
            continue
        chart.scroll_into_view_if_needed()
        static.append({"marks": chart.evaluate("e => e.querySelectorAll('svg .role-mark > *').length"),
                       "points": len(chart.evaluate(JS_POINTS))})
    result["static_charts"] = static
    result["geometry"] = page.evaluate(JS_GEOMETRY)
    result["chart_screenshots"] = [browser.shot(f"{Path(name).stem}-chart-{i}", charts.nth(i))
                                   for i in range(charts.count())]
    if result["explorer_found"]:
        log("exploring")
        explore(job, browser, explorer.first, result)
    result["screenshot_end"] = browser.shot(f"{Path(name).stem}-end")


def explore(job: dict, browser: Browser, explorer, result: dict) -> None:
    """The explorer after Run All, then with max p99 changed through its box, then a click."""
    page, stem = browser.page, Path(job["notebook"]).stem
    explorer.scroll_into_view_if_needed()
    recommendation = explorer.locator(".widget-html", has_text="Recommendation:").first
    chart = explorer.locator(".vega-embed").first
    result["explorer_initial"] = {"recommendation": recommendation.inner_text(),
                                  "points": [parse_point(p) for p in chart.evaluate(JS_POINTS)],
                                  "families": explorer.locator("select option").all_inner_texts(),
                                  "screenshot": browser.shot(f"{stem}-explorer-after-run-all", explorer)}
    box = explorer.locator(".widget-text", has_text="max p99").locator("input")
    steps = []
    for value in job.get("p99_steps", [0.0001, 1000.0]):
        before = recommendation.inner_text()
        box.fill(str(value))
        box.press("Enter")
        with contextlib.suppress(Exception):
            page.wait_for_function("([el, old]) => el.innerText !== old",
                                   arg=[recommendation.element_handle(), before], timeout=15_000)
        page.wait_for_timeout(800)  # the chart's params travel after the text
        steps.append({"max_p99_ms": value, "recommendation": recommendation.inner_text(),
                      "points": [parse_point(p) for p in chart.evaluate(JS_POINTS)],
                      "screenshot": browser.shot(f"{stem}-explorer-max-p99-{value:g}", explorer)})
    result["explorer_steps"] = steps

    point = chart.locator("g.candidates_marks > path").first
    point.scroll_into_view_if_needed()  # the explorer is taller than an 800 px screen: click where it shows
    page.wait_for_timeout(300)
    box_xy = point.bounding_box()
    details_before = explorer.locator(".optlab-details").count()
    height_before = explorer.locator(".widget-vbox").first.bounding_box()["height"]
    page.mouse.click(box_xy["x"] + box_xy["width"] / 2, box_xy["y"] + box_xy["height"] / 2)
    with contextlib.suppress(Exception):
        explorer.locator(".optlab-details").first.wait_for(timeout=15_000)
    page.mouse.move(5, 5)  # off the chart: the hover tooltip would cover the screenshot
    page.wait_for_timeout(500)
    root = explorer.locator(".widget-vbox").first
    result["click"] = {"details_before": details_before,
                       "details_after": explorer.locator(".optlab-details").count(),
                       "details_text": (explorer.locator(".optlab-details").first.inner_text()
                                        if explorer.locator(".optlab-details").count() else ""),
                       "explorer_height_px": root.bounding_box()["height"], "height_before_px": height_before,
                       "screenshot": browser.shot(f"{stem}-explorer-after-click", explorer)}


def run_saved(job: dict, browser: Browser, lab: Lab, result: dict) -> None:
    """Open the executed notebook with no kernel: every chart output must show a picture."""
    page, name = browser.page, job["notebook"]
    open_notebook(browser, lab, name)
    # No kernel spec exists, so JupyterLab asks which kernel to use: answer "No Kernel".
    with contextlib.suppress(Exception):
        page.locator(".jp-Dialog button", has_text="No Kernel").first.click(timeout=10_000)
    with contextlib.suppress(Exception):
        page.locator(".jp-Dialog button.jp-mod-reject").first.click(timeout=2_000)
    page.wait_for_timeout(2000)
    saved = json.loads((Path(job["root"]) / name).read_text())
    pictures = 0
    for cell in saved["cells"]:
        for output in cell.get("outputs", []):
            if "image/png" in output.get("data", {}):
                pictures += 1
    result["saved_chart_outputs"] = pictures
    images = page.locator(".jp-OutputArea-output img")
    drawn = []
    for i in range(images.count()):
        image = images.nth(i)
        image.scroll_into_view_if_needed()
        page.wait_for_timeout(100)
        size = image.evaluate("e => [e.complete, e.naturalWidth, e.naturalHeight]")
        output = image.locator("xpath=ancestor::div[contains(@class, 'jp-OutputArea-output')][1]")
        drawn.append({"complete": size[0], "width": size[1], "height": size[2],
                      "screenshot": browser.shot(f"{Path(name).stem}-chart-{i}", output)})
    result["saved_images"] = drawn
    result["bad_text"] = [t for t in BAD_TEXT if t in page.inner_text(".jp-Notebook")]
    result["typeset_math"] = page.locator(".jp-OutputArea-output mjx-container").count()  # "$" read as LaTeX
    result["kernel_status"] = page.evaluate("""() => { const w = window.jupyterapp.shell.currentWidget;
        const s = w.sessionContext; return s.session && s.session.kernel ? s.session.kernel.status : 'none'; }""")
    result["screenshot_end"] = browser.shot(f"{Path(name).stem}-end")


def execute_headless(job: dict) -> None:
    """What the main job does: papermill in smoke mode, headless, into `notebook`."""
    root = Path(job["root"])
    env = {**lab_env(root), "OPTLAB_HEADLESS": "1"}
    subprocess.run([job["python"], "-m", "papermill", "--no-progress-bar", "--log-level", "WARNING",
                    job["source"], job["notebook"], "-p", "smoke", "True"],
                   cwd=root, env=env, check=True, timeout=job.get("execute_timeout_s", 120))


def main(path: str) -> int:
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # a TERM from the test still runs `finally`
    import faulthandler

    faulthandler.register(signal.SIGUSR1)  # `kill -USR1 <pid>` prints where a stuck run is
    job = json.loads(Path(path).read_text())
    result: dict = {"mode": job["mode"], "notebook": job["notebook"], "errors": []}
    started = time.monotonic()
    artifacts = Path(job["artifacts"])
    artifacts.mkdir(parents=True, exist_ok=True)
    if job.get("netns"):
        loopback_up()
    with contextlib.suppress(OSError):
        socket.create_connection(("1.1.1.1", 80), timeout=2).close()
        result["internet_reachable"] = True
    lab = browser = None

    def give_up() -> None:
        """A browser call that never returns (seen when the server died mid-call) must not hold
        the test: record it, stop the server, write the result and exit; the test kills the rest."""
        result["errors"].append(f"the driver passed its {job['deadline_s']} s deadline and gave up")
        log("deadline passed: giving up")
        if lab is not None:
            lab.stop()
            result["server_stopped"] = lab.proc.poll() is not None
        Path(job["out"]).write_text(json.dumps(result, indent=1, default=str))
        os._exit(3)

    watchdog = threading.Timer(job["deadline_s"] + 10, give_up)
    watchdog.daemon = True
    watchdog.start()
    try:
        if job["mode"] == "saved" and job.get("source"):
            execute_headless(job)
        lab = Lab(job["python"], Path(job["root"]), job["deadline_s"], kernels=job["mode"] == "live")
        lab.wait_ready()
        log(f"JupyterLab ready on {lab.base}")
        browser = Browser(job["chromium"], lab.base, artifacts)
        (run_live if job["mode"] == "live" else run_saved)(job, browser, lab, result)
    except Exception as error:  # noqa: BLE001 - recorded for the test to report, with a screenshot
        result["errors"].append(f"{type(error).__name__}: {error}")
        if browser is not None:
            with contextlib.suppress(Exception):
                result["screenshot_failure"] = browser.shot(f"{Path(job['notebook']).stem}-failure")
    finally:
        log("stopping" + (f" after {result['errors']}" if result["errors"] else ""))
        if browser is not None:
            result.update(blocked=browser.blocked, console_errors=browser.console_errors,
                          page_errors=browser.page_errors)
            browser.close()
        if lab is not None:
            lab.stop()
            result["server_stopped"] = lab.proc.poll() is not None
        result["wall_s"] = round(time.monotonic() - started, 1)
        watchdog.cancel()
        Path(job["out"]).write_text(json.dumps(result, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
