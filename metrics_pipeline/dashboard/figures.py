"""Figures from frames: no reading, no Dagster. Each takes what a reader returned and says
what to draw, so that a test compares what is plotted with what was stored."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import pandas as pd
import plotly.graph_objects as go

BAND_COLOUR = "rgba(31, 119, 180, 0.18)"
LINE_COLOUR = "rgb(31, 119, 180)"
P95_COLOUR = "rgb(214, 39, 40)"


@dataclass(frozen=True)
class Marker:
    """A moment the inventory records: the instance's creation, a class change."""

    at: datetime
    label: str


def metric_figure(
    frame: pd.DataFrame, metric: str, unit: str | None, markers: Sequence[Marker] = ()
) -> go.Figure:
    """A metric over time: its average as a line, the minimum to maximum as a band around it, the
    p95 (where the tier has it) as a dashed line, and the inventory's moments as vertical
    lines. `frame` has the columns ts and average, and optionally minimum, maximum, p95."""
    frame = frame.sort_values("ts")
    figure = go.Figure()
    if {"minimum", "maximum"} <= set(frame.columns):
        figure.add_trace(
            go.Scatter(
                x=frame["ts"], y=frame["maximum"], name="maximum", mode="lines",
                line={"width": 0}, showlegend=False, hoverinfo="skip",
            )
        )  # fmt: skip
        figure.add_trace(
            go.Scatter(
                x=frame["ts"], y=frame["minimum"], name="minimum to maximum", mode="lines",
                line={"width": 0}, fill="tonexty", fillcolor=BAND_COLOUR,
            )
        )  # fmt: skip
    figure.add_trace(
        go.Scatter(
            x=frame["ts"], y=frame["average"], name="average", mode="lines",
            line={"color": LINE_COLOUR},
        )
    )  # fmt: skip
    if "p95" in frame.columns and frame["p95"].notna().any():
        figure.add_trace(
            go.Scatter(
                x=frame["ts"], y=frame["p95"], name="p95", mode="lines",
                line={"color": P95_COLOUR, "dash": "dash"},
            )
        )  # fmt: skip
    for marker in markers:
        figure.add_vline(x=marker.at, line_dash="dot", line_color="grey")
        figure.add_annotation(x=marker.at, y=1, yref="paper", text=marker.label, showarrow=False)
    figure.update_layout(
        title=metric, yaxis_title=unit or "", margin={"l": 40, "r": 10, "t": 40, "b": 30}
    )
    return figure
