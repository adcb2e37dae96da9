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


def heatmap_figure(frame: pd.DataFrame, metric: str, unit: str | None) -> go.Figure:
    """Instances by day, coloured by the day's p95: `frame` as data.daily_p95 returns it. An
    instance is labelled by its id, with its account and region when the id repeats."""
    repeated = frame.groupby("instance_id")[["account_id", "region"]].nunique().max(axis=1) > 1
    labels = pd.Series(
        [
            f"{instance_id} ({account_id}, {region})" if repeated.get(instance_id, False)
            else str(instance_id)
            for account_id, region, instance_id in zip(
                frame["account_id"], frame["region"], frame["instance_id"], strict=True
            )
        ],
        index=frame.index,
        dtype="string",
    )  # fmt: skip
    grid = frame.assign(label=labels).pivot_table(
        index="label", columns="day", values="p95", aggfunc="max"
    )
    figure = go.Figure(
        go.Heatmap(
            z=grid.to_numpy(),
            x=list(grid.columns),
            y=list(grid.index),
            colorbar={"title": unit or ""},
            hovertemplate="%{y}<br>%{x|%Y-%m-%d}: %{z:.1f}<extra></extra>",
        )
    )
    figure.update_layout(title=f"{metric}, p95 per day", margin={"l": 120, "r": 10, "t": 40})
    return figure
