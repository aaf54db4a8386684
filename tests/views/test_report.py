"""optlab.views.report: a self-contained HTML report and the headline table."""
import base64
import re
from html.parser import HTMLParser

import pandas as pd
import pytest

from optlab.testing import results_frame
from optlab.views import report


class _Checker(HTMLParser):
    """Collects tags and checks that every opened (non-void) element is closed in order."""

    VOID = {"meta", "img", "br", "hr", "link", "input"}

    def __init__(self):
        super().__init__()
        self.stack, self.tags, self.imgs, self.errors = [], [], [], []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        if tag == "img":
            self.imgs.append(dict(attrs))
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag, attrs):
        self.handle_starttag(tag, attrs)
        if tag not in self.VOID:
            self.stack.pop()

    def handle_endtag(self, tag):
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"unexpected </{tag}> (open: {self.stack[-3:]})")
        else:
            self.stack.pop()


def test_headline_table_is_compact_and_numeric():
    table = report.headline_table(results_frame())
    assert list(table.columns) == ["candidate", "p50_ms", "p99_ms", "throughput_per_s", "size_mb", "quality",
                                   "quality_drop", "agreement", "cost_per_1m_usd", "status"]
    assert "broken-int4" not in set(table["candidate"])
    assert table.set_index("candidate").loc["trt-fp16 [H100]", "status"] == "reference"
    assert pd.api.types.is_float_dtype(table["p99_ms"])
    only_ok = report.headline_table(results_frame().iloc[:4])
    assert "status" not in only_ok.columns


def test_report_is_self_contained_valid_html(tmp_path):
    df = results_frame()
    df.loc[0, "candidate"] = "base<script>alert(1)</script>"
    other = results_frame().iloc[:4]
    path = report.write_report({"digits": df, "bids & co": other}, tmp_path / "out" / "report.html",
                               title="Quantization <study>", sla={"max_p99_ms": 2.6, "max_quality_drop": 0.03},
                               environment={"note": "<b>shared</b> 2-core box"})
    text = path.read_text(encoding="utf-8")
    checker = _Checker()
    checker.feed(text)
    checker.close()
    assert text.startswith("<!DOCTYPE html>") and not checker.errors and not checker.stack
    # no network: no scripts at all, no http(s) resources
    assert "script" not in checker.tags
    assert not re.search(r"""(src|href)\s*=\s*["']?https?:""", text)
    # user strings escaped
    assert "<script>alert" not in text and "&lt;script&gt;alert(1)" in text
    assert "Quantization &lt;study&gt;" in text and "bids &amp; co" in text
    assert "&lt;b&gt;shared&lt;/b&gt;" in text and "&lt;b&gt;no INC&lt;/b&gt;" in text  # env + error message
    # two Pareto charts as embedded SVG images
    assert len(checker.imgs) == 2
    for img in checker.imgs:
        assert img["src"].startswith("data:image/svg+xml;base64,")
        assert b"<svg" in base64.b64decode(img["src"].split(",", 1)[1])
    # the table, with units, the recommendation and the environment
    assert "p99 (ms)" in text and "cost per 1M ($)" in text and "ort-int8" in text
    assert "Recommendation:" in text and "ort-int8: the best" in text
    assert "AMD EPYC" in text and "avx512_vnni" in text and "cpu_model" in text


def test_report_accepts_a_single_frame_and_rejects_bad_input(tmp_path):
    path = report.write_report(results_frame(), tmp_path / "one.html")
    assert "<h2>results</h2>" in path.read_text()
    with pytest.raises(TypeError, match="DataFrame, a Study"):
        report.write_report(42, tmp_path / "bad.html")
    with pytest.raises(ValueError, match="unknown key"):
        report.write_report(results_frame(), tmp_path / "bad.html", sla={"p99": 3})


def test_report_says_when_nothing_meets_the_sla(tmp_path):
    text = report.write_report(results_frame(), tmp_path / "r.html", sla={"max_p99_ms": 0.1}).read_text()
    assert "No candidate meets" in text
