"""optlab.views.rendering: charts draw offline and keep a picture for kernel-less viewers."""
import base64

import altair as alt
import pytest

from optlab.testing import results_frame
from optlab.views import plots, rendering


@pytest.fixture
def chart():
    return plots.pareto_chart(results_frame(), max_p99_ms=3.0, max_quality_drop=0.01, recommended="ort-int8")


def test_importing_views_switches_altair_to_the_offline_renderer():
    assert alt.renderers.active == rendering.RENDERER


def test_headless_chart_output_is_a_picture_and_a_v6_spec(chart, monkeypatch):
    monkeypatch.setenv("OPTLAB_HEADLESS", "1")
    bundle = chart._repr_mimebundle_()
    bundle = bundle[0] if isinstance(bundle, tuple) else bundle
    assert base64.b64decode(bundle["image/png"]).startswith(b"\x89PNG")
    assert "v6" in bundle[rendering.SPEC_MIMETYPE]["$schema"]
    assert rendering.WIDGET_MIMETYPE not in bundle
    assert not any("vegalite.v5" in key or key == "text/html" for key in bundle)  # no CDN <script>


def test_live_chart_output_is_an_offline_widget_with_the_picture(chart, monkeypatch):
    monkeypatch.setenv("OPTLAB_HEADLESS", "0")
    bundle = chart._repr_mimebundle_()
    bundle = bundle[0] if isinstance(bundle, tuple) else bundle
    assert rendering.WIDGET_MIMETYPE in bundle and "image/png" in bundle
    assert alt.JupyterChart._is_offline
    esm = alt.JupyterChart._esm
    assert "esm.sh" not in esm and "cdn.jsdelivr" not in esm  # vega ships in the bundle


def test_svg_img_is_the_one_embedding(chart):
    tag = rendering.svg_img(chart)
    assert tag.startswith('<img class="chart"') and "data:image/svg+xml;base64," in tag
    svg = base64.b64decode(tag.split("base64,")[1].split('"')[0]).decode()
    assert "candidates_marks" in svg  # the point layer, by name


def test_a_spec_vl_convert_cannot_draw_still_gives_an_output(monkeypatch):
    monkeypatch.setenv("OPTLAB_HEADLESS", "1")
    spec = {"$schema": "https://vega.github.io/schema/vega-lite/v6.json", "mark": "no-such-mark",
            "data": {"values": [{"a": 1}]}, "encoding": {"x": {"field": "a", "type": "quantitative"}}}
    bundle = rendering.render(spec)
    assert bundle[rendering.SPEC_MIMETYPE] == spec and "no picture" in bundle["text/plain"]


def test_static_bundle_never_shows_nan_in_plain_text_or_html(chart):
    from optlab.views.report import headline_table
    from tests.nbhog import forbidden_text

    table = headline_table(results_frame())
    table.loc[0, "p99_ms"] = float("nan")  # a figure the run did not take
    bundle = rendering.static_bundle(chart, table)
    assert "not measured" in bundle["text/plain"]
    assert forbidden_text([{"output_type": "display_data",
                            "data": {k: bundle[k] for k in ("text/plain", "text/html")}}]) == []


def test_static_bundle_keeps_the_heading_in_one_block_above_the_chart(chart):
    """The heading (the explorer's recommendation) is a block of its own, then the chart in its own
    block: inline, the <img> shared the heading's last line and the sentence read as split around it."""
    from optlab.views.report import headline_table

    heading = "<b>Recommendation:</b> <span>ort-int8: the best at $0.01 per 1M requests, " + "long " * 40 + "</span>"
    body = rendering.static_bundle(chart, headline_table(results_frame()), heading)["text/html"]
    assert f'<div class="optlab-heading">{heading}</div><div><img class="chart"' in body
    plain = rendering.static_bundle(chart, headline_table(results_frame()), heading)["text/plain"]
    assert plain.startswith("Recommendation: ort-int8: the best")


def test_importing_the_views_skips_jsonschemas_iri_grammars_and_restores_sys_modules():
    """optlab.views imports jsonschema with rfc3987_syntax hidden (3 s of grammar building per kernel);
    afterwards the module is not left blocked: it imports normally."""
    import subprocess
    import sys

    code = ("import sys, optlab.views, jsonschema; assert 'rfc3987_syntax' not in sys.modules, 'loaded'; "
            "import rfc3987_syntax; print('ok')")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]
