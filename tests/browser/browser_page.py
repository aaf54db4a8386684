"""Chromium through Playwright for the browser test: one page, requests off the server blocked.

Imported by drive_lab.py (a script: this folder is on its sys.path). Errors the page logs are
kept in order, so the driver can tell which notebook was in front when each came.
"""
from __future__ import annotations

import contextlib
import re
from pathlib import Path

import page_scripts as js

VIEWPORT = {"width": 1280, "height": 800}  # a laptop screen: the geometry check measures at this size
TALLEST_SHOT_PX = 15000  # Chromium's largest texture is 16384 px: a longer notebook is shot in part


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

    def marks(self) -> tuple[int, int, int]:
        """Where the error lists stand: what is recorded after this belongs to the notebook in front."""
        return len(self.blocked), len(self.console_errors), len(self.page_errors)

    def since(self, marks: tuple[int, int, int]) -> dict[str, list[str]]:
        return {"blocked": self.blocked[marks[0]:], "console_errors": self.console_errors[marks[1]:],
                "page_errors": self.page_errors[marks[2]:]}

    def resize(self, viewport: dict) -> None:
        self.page.set_viewport_size(viewport)
        self.page.evaluate(js.JS_NEXT_FRAME)  # JupyterLab lays out again on the next frames

    def shot(self, path: Path, locator=None) -> str:
        """A PNG of the page or of one element; an element taller than the notebook's panel is
        shot in a page made taller for the moment (same width, so the same layout), not cut."""
        path.parent.mkdir(parents=True, exist_ok=True)
        box = locator.bounding_box() if locator is not None else None
        if box is None or box["height"] <= VIEWPORT["height"] - 200:
            (locator or self.page).screenshot(path=str(path))
            return str(path)
        self.resize({"width": VIEWPORT["width"], "height": min(int(box["height"]) + 250, TALLEST_SHOT_PX)})
        try:
            locator.scroll_into_view_if_needed()
            locator.screenshot(path=str(path))
        finally:
            self.resize(VIEWPORT)
        return str(path)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.browser.close()
        with contextlib.suppress(Exception):
            self._pw.stop()
