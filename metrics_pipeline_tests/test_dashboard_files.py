"""Chart files drawn without a browser: an SVG whose line has a vertex per stored period, a PNG
that is one, and formats refused by name."""

import io
import re
from datetime import datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest

from metrics_pipeline.dashboard.files import chart_format, write_metric_chart

START = datetime(2026, 12, 1)


def test_an_svg_draws_a_vertex_per_period_and_names_the_metric() -> None:
    frame = pd.DataFrame(
        {
            "ts": [START + timedelta(minutes=5 * n) for n in range(7)],
            "average": [1.0, 3.0, 2.0, 5.0, 4.0, 6.0, 2.0],
            "minimum": [0.0] * 7,
            "maximum": [9.0] * 7,
        }
    )
    out = io.BytesIO()
    write_metric_chart(frame, "orders-db CPUUtilization", "Percent", out, "svg")
    svg = out.getvalue().decode()
    assert "orders-db CPUUtilization" in svg and "Percent" in svg
    [line] = re.findall(r'<g id="average">\s*<path d="([^"]+)"', svg)
    assert len(re.findall(r"[ML] ", line)) == len(frame)
    png = io.BytesIO()
    write_metric_chart(frame, "orders-db CPUUtilization", "Percent", png, "png")
    assert png.getvalue().startswith(b"\x89PNG\r\n\x1a\n")


def test_the_format_comes_from_the_suffix_or_is_refused_by_name() -> None:
    assert chart_format(Path("cpu.SVG"), None) == "svg"
    assert chart_format(Path("cpu.csv"), "png") == "png"
    with pytest.raises(ValueError, match=r"cannot tell a chart format from 'cpu.csv'"):
        chart_format(Path("cpu.csv"), None)
