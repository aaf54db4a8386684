"""How optlab's charts reach a notebook: drawn offline, with a picture that needs no JavaScript.

Two promises, kept here and nowhere else:
- **Offline.** Live charts are altair `JupyterChart` widgets whose JavaScript (vega,
  vega-lite, vega-embed) is the bundle shipped inside `vl-convert-python`, never fetched
  from esm.sh or a CDN. Importing `optlab.views` switches altair to the "optlab" renderer
  (below): a documented exception to the house rule that code restores the global state it
  changes, because a chart that depends on a setup cell breaks for the first user who skips
  it. `alt.renderers.enable("default")` switches back.
- **A picture for every chart.** Each chart output also carries a PNG made by vl-convert
  (no browser, no network), so a saved notebook shows its charts with no kernel, in
  JupyterLab (which only shows "safe" outputs of an untrusted notebook: PNG is one, SVG
  and HTML scripts are not), nbviewer or GitHub. The Vega-Lite spec rides along under its
  v6 mimetype (altair 6 emits Vega-Lite v6; JupyterLab's built-in v5 renderer would fail
  on it, so it must never be labelled v5).

Headless (papermill, nbconvert, nbval, no kernel) there is no widget: the picture is the chart.
"""
from __future__ import annotations

import base64
import html
import os
import re
import sys
from typing import Any

from optlab.views.report import table_html
from optlab.views.tables import readable

RENDERER = "optlab"
SPEC_MIMETYPE = "application/vnd.vegalite.v6+json"
WIDGET_MIMETYPE = "application/vnd.jupyter.widget-view+json"
# SVG in the browser: crisp, and the marks are DOM elements a test (or a person) can inspect.
EMBED_OPTIONS: dict[str, Any] = {"renderer": "svg"}
PNG_SCALE = 1.0  # ~60-100 kB per chart: notebooks stay small enough to commit and diff


def is_headless() -> bool:
    """True where no live frontend can show widgets: OPTLAB_HEADLESS=1, no IPython kernel,
    or a kernel started by papermill / nbconvert / nbval."""
    flag = os.environ.get("OPTLAB_HEADLESS", "").strip().lower()
    if flag in ("1", "true", "yes"):
        return True
    if flag in ("0", "false", "no"):
        return False
    try:
        from IPython import get_ipython
    except ImportError:
        return True
    shell = get_ipython()
    if shell is None or getattr(shell, "kernel", None) is None:
        return True
    try:
        import psutil

        parent = " ".join(psutil.Process().parent().cmdline())
    except Exception:  # noqa: BLE001 - no parent info: assume a live frontend
        return False
    return any(tool in parent for tool in ("papermill", "nbconvert", "nbval", "nbclient"))


def _spec(chart_or_spec) -> dict[str, Any]:
    return chart_or_spec if isinstance(chart_or_spec, dict) else chart_or_spec.to_dict(validate=True)


def _vl_version() -> str:
    """The Vega-Lite version altair writes, in vl-convert's spelling (e.g. "v6_4")."""
    from altair.utils._importers import vl_version_for_vl_convert

    return vl_version_for_vl_convert()


def to_svg(chart_or_spec) -> str:
    """The chart as SVG text, rendered by vl-convert (no browser, no network)."""
    import vl_convert as vlc

    return vlc.vegalite_to_svg(_spec(chart_or_spec), vl_version=_vl_version())


def to_png(chart_or_spec, scale: float = 2.0) -> bytes:
    """The chart as PNG bytes, rendered by vl-convert (no browser, no network)."""
    import vl_convert as vlc

    return vlc.vegalite_to_png(_spec(chart_or_spec), vl_version=_vl_version(), scale=scale)


def svg_img(chart_or_spec, css_class: str = "chart") -> str:
    """An <img> holding the chart as a base64 SVG data URL: the one way optlab embeds a chart
    in HTML (reports, headless widget tables). No script, so no sanitiser removes it."""
    data = base64.b64encode(to_svg(chart_or_spec).encode("utf-8")).decode("ascii")
    return f'<img class="{css_class}" alt="chart" src="data:image/svg+xml;base64,{data}"/>'


def picture_bundle(chart_or_spec) -> dict[str, Any]:
    """What a notebook keeps for a chart when no JavaScript runs: PNG, the v6 spec, a text line."""
    spec = _spec(chart_or_spec)
    png = base64.b64encode(to_png(spec, scale=PNG_SCALE)).decode("ascii")
    title = spec.get("title")
    title = title.get("text") if isinstance(title, dict) else title
    return {"image/png": png, SPEC_MIMETYPE: spec, "text/plain": f"<optlab chart: {title or 'untitled'}>"}


def static_bundle(chart, table, heading: str = "") -> dict[str, Any]:
    """A bundle every notebook viewer can show with no JavaScript: the chart as an embedded
    SVG plus a table (text/html), the chart's PNG and Vega-Lite v6 spec, and plain text."""

    # prices carry "$": without these classes JupyterLab's MathJax (v2 / v3 names) typesets text between pairs
    # heading, chart and table each a block: an inline <img> after inline text would share the text's last
    # line, so a wrapped heading read as split around the chart
    heading = f'<div class="optlab-heading">{heading}</div>' if heading else ""
    spec = _spec(chart)  # validated once for the SVG, the PNG and the spec (each took ~0.12 s)
    body = (f'<div class="tex2jax_ignore mathjax_ignore">{heading}<div>{svg_img(spec)}</div>'
            f"{table_html(table)}</div>")
    plain = readable(table, digits=None).to_string(max_rows=40)  # "not measured", never NaN, in plain text too
    return {
        **picture_bundle(spec),
        "text/html": body,
        "text/plain": f"{heading and html.unescape(_strip_tags(heading)).strip()}\n{plain}",
    }


class CellEndDisplay:
    """A headless output that follows a study, redrawn in place once per notebook cell, when
    the cell ends (IPython's `post_run_cell`), not once per row: each redraw renders an SVG
    and a PNG (~0.5 s), which nobody sees before the notebook is saved, and a study of twenty
    rows spent ten seconds on them. A cell that fails still redraws. Outside IPython, or with
    no events to hook, `refresh` redraws at once.

    `handle` is what `display(..., display_id=True)` returned; `make_bundle` builds the output."""

    def __init__(self, handle, make_bundle):
        self.handle, self._make_bundle = handle, make_bundle
        self._events = None  # the shell's event manager while a redraw waits for the cell's end

    @classmethod
    def show(cls, make_bundle) -> CellEndDisplay:
        from IPython.display import display

        return cls(display(make_bundle(), raw=True, display_id=True), make_bundle)

    def refresh(self) -> None:
        """Mark the output stale: redraw when the running cell ends (once, however many calls)."""
        if self._events is not None:
            return
        events = _shell_events()
        if events is None:
            self.redraw()
            return
        self._events = events
        events.register("post_run_cell", self._after_cell)

    def _after_cell(self, *_result) -> None:
        events, self._events = self._events, None
        events.unregister("post_run_cell", self._after_cell)
        self.redraw()

    def redraw(self) -> None:
        if self.handle is not None:
            self.handle.update(self._make_bundle(), raw=True)


def _shell_events():
    """The running IPython shell's event manager, or None outside IPython."""
    try:
        from IPython import get_ipython
    except ImportError:
        return None
    return getattr(get_ipython(), "events", None)


def _strip_tags(text: str) -> str:
    return re.sub(r"<[^>]+>", "", text)


def enable_offline_widgets() -> None:
    """Make every `alt.JupyterChart` load vega from vl-convert's bundle (idempotent; ~1 s once)."""
    import altair as alt

    alt.JupyterChart.enable_offline(True)


def jupyter_chart(chart):
    """An offline `alt.JupyterChart` for `chart` (SVG renderer)."""
    import altair as alt

    enable_offline_widgets()
    return alt.JupyterChart(chart, embed_options=dict(EMBED_OPTIONS))


def widget_bundle(widget, **options: Any) -> dict[str, Any]:
    """A widget's own mimebundle (the live view); anywidgets return (data, metadata)."""
    bundle = widget._repr_mimebundle_(**options)
    if isinstance(bundle, tuple):
        bundle = bundle[0]
    return dict(bundle or {})


def render(spec: dict[str, Any], **_metadata: Any) -> dict[str, Any]:
    """altair renderer "optlab": live, an offline JupyterChart plus the picture; headless, the picture.
    A spec vl-convert cannot draw (e.g. data at a URL it cannot reach) still gets its live view
    and the spec itself, never a failed output."""
    try:
        bundle = picture_bundle(spec)
    except Exception as error:  # noqa: BLE001 - no picture is better than no chart
        bundle = {SPEC_MIMETYPE: spec, "text/plain": f"<optlab chart: no picture ({type(error).__name__}: {error})>"}
    if is_headless():
        return bundle
    import altair as alt

    return {**widget_bundle(jupyter_chart(alt.Chart.from_dict(spec))), **bundle}


def _lean_jsonschema() -> None:
    """Import jsonschema without its optional `rfc3987_syntax` module, once, before altair does.

    jsonschema imports rfc3987_syntax (installed as jupyter-events' `format-nongpl` extra) only to check
    the "iri" and "iri-reference" string formats, and that import builds 39 Lark grammars: 3.0 s on two
    cores, paid by every notebook kernel when it first draws a chart (cProfile, session 8). Vega-Lite
    specs use neither format. So when neither module is loaded yet, jsonschema is imported with
    rfc3987_syntax hidden and sys.modules is then put back as it was: jsonschema's format checker in
    this process lacks the two IRI checks; `import rfc3987_syntax` itself still works.
    """
    if "jsonschema" in sys.modules or "rfc3987_syntax" in sys.modules:
        return
    sys.modules["rfc3987_syntax"] = None  # an import of it raises ImportError, which jsonschema expects
    try:
        import jsonschema  # noqa: F401
    finally:
        del sys.modules["rfc3987_syntax"]


def enable() -> None:
    """Register and switch on the "optlab" altair renderer (called when optlab.views is imported)."""
    _lean_jsonschema()
    import altair as alt

    if RENDERER not in alt.renderers.names():
        alt.renderers.register(RENDERER, render)
    if alt.renderers.active != RENDERER:
        alt.renderers.enable(RENDERER)
