"""Chart files drawn without a browser: an SVG whose line has a vertex per stored period, a PNG
that is one, and formats refused by name."""

import io
import re
from datetime import timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from metrics_pipeline.analysts.charts import chart_format, write_chart
from metrics_pipeline.analysts.cli import main
from metrics_pipeline.warehouse.resources import WarehouseResource
from metrics_pipeline_tests.known_data import FIRST_HOUR, INSTANCES, Period, seed

START = f"{FIRST_HOUR:%Y-%m-%dT%H:%M}"
END = f"{FIRST_HOUR + timedelta(hours=6):%Y-%m-%dT%H:%M}"


def test_an_svg_draws_a_vertex_per_period_and_names_the_metric() -> None:
    frame = pd.DataFrame(
        {
            "ts": [FIRST_HOUR + timedelta(minutes=5 * n) for n in range(7)],
            "average": [1.0, 3.0, 2.0, 5.0, 4.0, 6.0, 2.0],
            "minimum": [0.0] * 7,
            "maximum": [9.0] * 7,
        }
    )
    out = io.BytesIO()
    write_chart({"orders-db": frame}, "CPUUtilization", "Percent", out, "svg")
    svg = out.getvalue().decode()
    assert "CPUUtilization" in svg and "Percent" in svg
    [line] = re.findall(r'<g id="orders-db">\s*<path d="([^"]+)"', svg)
    assert len(re.findall(r"[ML] ", line)) == len(frame)
    png = io.BytesIO()
    write_chart({"orders-db": frame}, "CPUUtilization", "Percent", png, "png")
    assert png.getvalue().startswith(b"\x89PNG\r\n\x1a\n")


def test_the_format_comes_from_the_suffix_or_is_refused_by_name() -> None:
    assert chart_format(Path("cpu.SVG"), None) == "svg"
    assert chart_format(Path("cpu.csv"), "png") == "png"
    with pytest.raises(ValueError, match=r"cannot tell a chart format from 'cpu.csv'"):
        chart_format(Path("cpu.csv"), None)


@pytest.fixture
def stored(warehouse: WarehouseResource, monkeypatch: pytest.MonkeyPatch) -> list[Period]:
    """The known warehouse, as the command's settings name it."""
    monkeypatch.setenv("METRICS_DUCKDB_PATH", warehouse.database)
    if warehouse.lake:
        monkeypatch.setenv("METRICS_WAREHOUSE", warehouse.lake_catalog)
        monkeypatch.setenv("METRICS_LAKE_DATA_PATH", warehouse.lake_data_path)
    else:
        monkeypatch.delenv("METRICS_WAREHOUSE", raising=False)
    return seed(warehouse)


def vertices(svg: str, label: str) -> np.ndarray:
    [path] = re.findall(rf'<g id="{re.escape(label)}">\s*<path d="([^"]+)"', svg)
    return np.array(
        [[float(x), float(y)] for x, y in re.findall(r"[ML] ([-\d.]+) ([-\d.]+)", path)]
    )


@pytest.mark.storage_neutral
def test_plot_draws_each_instances_stored_averages(
    stored: list[Period], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "cpu.svg"

    code = main(["plot", "-m", "CPUUtilization", "--start", START, "--end", END, "-o", str(out)])

    assert code == 0, capsys.readouterr().err
    svg = out.read_text()
    assert out.stat().st_mode & 0o777 == 0o600
    for instance_id in INSTANCES:
        known = [
            p.average
            for p in stored
            if p.instance_id == instance_id and p.metric == "CPUUtilization"
        ]
        drawn = vertices(svg, instance_id)
        assert len(drawn) == len(known)
        # Drawn upside down (an SVG's y grows downwards), in proportion to the stored values.
        slope, offset = np.polyfit(known, drawn[:, 1], 1)
        assert slope < 0
        assert np.allclose(drawn[:, 1], slope * np.array(known) + offset, atol=0.05)
    assert "wrote" in capsys.readouterr().err


@pytest.mark.storage_neutral
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["-m", "CPUUtilization", "-o", "{tmp}/cpu.csv"],
            "cannot tell a chart format from 'cpu.csv'",
        ),
        (["-m", "Nope", "-o", "{tmp}/a.svg"], "metric: unknown 'Nope'"),
        (
            ["-m", "CPUUtilization", "-i", "x'; DROP TABLE rds_metrics; --", "-o", "{tmp}/a.svg"],
            "instance: unknown",
        ),
        (["-m", "CPUUtilization", "-o", "{tmp}/missing/a.svg"], "does not exist"),
        (["-m", "CPUUtilization", "--start", "now-1h", "-o", "{tmp}/a.svg"], "nothing to draw"),
        (["-m", "CPUUtilization", "--start", "yesterday", "-o", "{tmp}/a.svg"], "start:"),
    ],
)
def test_plot_refuses_bad_input_in_one_line_and_writes_nothing(
    stored: list[Period],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    args: list[str],
    message: str,
) -> None:
    charts = tmp_path / "charts"
    charts.mkdir()
    argv = [a.replace("{tmp}", str(charts)) for a in args]
    if "--start" not in argv:
        argv += ["--start", START, "--end", END]

    code = main(["plot", *argv])

    error = capsys.readouterr().err.strip()
    assert code == 2
    assert message in error
    assert len(error.splitlines()) == 1 and error.startswith("metrics-pipeline: error:")
    assert list(charts.iterdir()) == []


@pytest.mark.storage_neutral
def test_plot_never_writes_over_an_existing_file_without_force(
    stored: list[Period], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "cpu.png"
    out.write_text("mine")
    argv = ["plot", "-m", "CPUUtilization", "--start", START, "--end", END, "-o", str(out)]

    assert main(argv) == 2
    assert "exists; add --force" in capsys.readouterr().err
    assert out.read_text() == "mine"
    assert main([*argv, "--force"]) == 0
    assert out.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
