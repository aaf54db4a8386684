"""The RTB waterfall: a step that met the SLA at no rate has no bar and says why, never 'n/a' or inf."""
from __future__ import annotations

import json
import re

import pandas as pd

from optlab.views import rtb_charts


def test_a_step_without_a_level_says_why():
    note = "nothing meets p99 <= 10 ms: at the lowest rate tried (1,000/s) p99 14 ms: the machine is busy or the SLA"
    goodputs = pd.DataFrame({"deployment": ["naive", "reasonable", "optimized"],
                             "throughput_at_sla_per_s": [0.0, 800.0, 4000.0], "note": [note, "", ""]})
    spec = rtb_charts.waterfall(goodputs).to_dict()
    rows = next(iter(spec["datasets"].values()))
    assert [r["gain"] for r in rows] == ["not measured", "first measured", "x5.00"]  # short: one bar wide
    assert rows[0]["why"] == note  # the reason, in the tooltip
    assert "p99 14 ms" in " ".join(spec["title"]["subtitle"])
    assert not re.search(r"\b(inf|nan|n/a)\b", json.dumps(spec), re.IGNORECASE)
