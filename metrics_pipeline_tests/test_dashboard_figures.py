"""The dashboard's figures draw what they are given: the average, the band between minimum and
maximum, the p95 where the tier has one, and the inventory's moments."""

from datetime import datetime, timedelta

import pandas as pd
import plotly.graph_objects as go

from metrics_pipeline.dashboard.figures import Marker, metric_figure

START = datetime(2026, 12, 1)


def checked(figure: dict[str, object]) -> go.Figure:
    """The figure as plotly reads it: a key or value its schema does not know is an error."""
    return go.Figure(figure)


def frame(**columns: list[float]) -> pd.DataFrame:
    count = len(next(iter(columns.values())))
    # Out of order, as a reader may return them: drawn in time order.
    stamps = [START + timedelta(minutes=5 * n) for n in reversed(range(count))]
    return pd.DataFrame({"ts": stamps, **{k: list(reversed(v)) for k, v in columns.items()}})


def test_the_average_is_drawn_between_its_minimum_and_maximum() -> None:
    figure = checked(
        metric_figure(
            frame(average=[2.0, 3.0, 4.0], minimum=[1.0, 2.5, 3.0], maximum=[5.0, 3.5, 9.0]),
            "CPUUtilization",
            "Percent",
        )
    )
    drawn = {trace.name: (list(trace.x), list(trace.y)) for trace in figure.data}
    stamps = [START + timedelta(minutes=5 * n) for n in range(3)]
    assert drawn == {
        "maximum": (stamps, [5.0, 3.5, 9.0]),
        "minimum to maximum": (stamps, [1.0, 2.5, 3.0]),
        "average": (stamps, [2.0, 3.0, 4.0]),
    }
    # The band fills from the minimum up to the maximum drawn just before it.
    assert [trace.fill for trace in figure.data] == [None, "tonexty", None]
    assert figure.layout.title.text == "CPUUtilization"
    assert figure.layout.yaxis.title.text == "Percent"


def test_a_tier_with_percentiles_adds_its_p95_and_p99_and_the_inventory_its_moments() -> None:
    created = START - timedelta(hours=1)
    figure = checked(
        metric_figure(
            frame(average=[2.0, 3.0], p95=[2.5, 3.5], p99=[2.9, 3.9]),
            "DatabaseConnections",
            None,
            [Marker(created, "created"), Marker(START, "db.r6g.large → db.r6g.xlarge")],
        )
    )
    assert [(t.name, list(t.y)) for t in figure.data] == [
        ("average", [2.0, 3.0]),
        ("p95", [2.5, 3.5]),
        ("p99", [2.9, 3.9]),
    ]
    assert [t.line.dash for t in figure.data[1:]] == ["dash", "dot"]
    assert [(shape.x0, shape.type) for shape in figure.layout.shapes] == [
        (created, "line"),
        (START, "line"),
    ]
    assert [a.text for a in figure.layout.annotations] == [
        "created",
        "db.r6g.large → db.r6g.xlarge",
    ]
