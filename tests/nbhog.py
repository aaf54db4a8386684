"""A pytest plugin for the nbval step: run the notebooks beside a CPU hog, and fail a cell whose
output shows a person `inf`, `nan`, `NaN` or a RuntimeWarning.

A workshop laptop is never idle (a browser, a video call, an indexer), and that is where figures
went to 0/s and the advice printed "$inf" and "nan%". So `dev.py test` runs every notebook in
smoke mode under nbval with this plugin:

    python -m pytest -p tests.nbhog --hog 1 --no-inf-nan --nbval-lax notebooks/*.ipynb

`--hog N` starts N busy-looping processes for the whole session (stopped at its end, by their own
ids); `--no-inf-nan` checks every executed cell's text outputs (streams, text/plain, text/html,
text/markdown; images and widget state are not text a person reads) and fails the cell naming
what it printed. Reusing the nbval run costs no second execution of the notebooks.
"""
from __future__ import annotations

import re
import subprocess
import sys

import pytest

# Words a person must never be shown; "info", "infer", "finance", "nano" and "NaT" do not match.
FORBIDDEN = re.compile(r"(?<![A-Za-z0-9_])(?:-?inf|nan|NaN|-?Infinity)(?![A-Za-z0-9_])|RuntimeWarning")
TEXT_TYPES = ("text/plain", "text/html", "text/markdown", "text/latex")
DATA_URL = re.compile(r"data:[\w/+.-]+;base64,[A-Za-z0-9+/=]+")  # embedded images in HTML are not text
HOG_SOURCE = "while True:\n    pass\n"


def forbidden_text(outputs) -> list[str]:
    """Each forbidden word found in a cell's outputs, with a little context."""
    found = []
    for output in outputs or ():
        texts = []
        if output.get("output_type") == "stream":
            texts.append(str(output.get("text", "")))
        elif output.get("output_type") == "error":
            texts.append(f"{output.get('ename')}: {output.get('evalue')}")
        for kind in TEXT_TYPES:
            value = (output.get("data") or {}).get(kind)
            if value is not None:
                texts.append("".join(value) if isinstance(value, list) else str(value))
        for text in texts:
            text = DATA_URL.sub("", text)
            for match in FORBIDDEN.finditer(text):
                start, end = max(match.start() - 40, 0), match.end() + 40
                found.append(f"{match.group(0)!r} in ...{text[start:end]!r}...")
    return found


def pytest_addoption(parser):
    group = parser.getgroup("optlab notebooks")
    group.addoption("--hog", type=int, default=0, metavar="N",
                    help="run N busy-looping processes beside the tests for the whole session")
    group.addoption("--no-inf-nan", action="store_true",
                    help="fail a notebook cell whose outputs show inf, nan, NaN or a RuntimeWarning")


def pytest_sessionstart(session):
    count = session.config.getoption("--hog")
    session.config._optlab_hogs = [subprocess.Popen([sys.executable, "-c", HOG_SOURCE]) for _ in range(count)]


def pytest_sessionfinish(session):
    for process in getattr(session.config, "_optlab_hogs", []):
        process.kill()  # only the processes this plugin started, by their own handle
        process.wait(timeout=10)


def pytest_report_header(config):
    count = config.getoption("--hog")
    return f"optlab: {count} CPU hog process(es) run beside the tests" if count else None


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if call.when != "call" or not report.passed or not item.config.getoption("--no-inf-nan"):
        return
    found = forbidden_text(getattr(item, "test_outputs", None))
    if found:
        report.outcome = "failed"
        report.longrepr = (f"{item.nodeid}: the cell shows a person inf/nan or a RuntimeWarning "
                           f"(say 'not available' and why instead):\n  " + "\n  ".join(found[:10]))
