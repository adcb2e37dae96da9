"""Figures from frames: no reading, no Dagster. Each takes what a reader returned and says
what to draw, so that a test compares what is plotted with what was stored."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

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
) -> dict[str, Any]:
    """A metric over time: its average as a line, the minimum to maximum as a band around it,
    the p95 and p99 (where the tier has them) as dashed and dotted lines, and the inventory's
    moments as vertical lines. `frame` has the columns ts and average, and optionally minimum,
    maximum, p95, p99. A plain figure dictionary (the tests check it against plotly's schema):
    an instance's page draws a chart per metric, and building a checked Figure takes plotly
    some 17 ms each."""
    frame = frame.sort_values("ts")
    x = list(frame["ts"])
    traces: list[dict[str, Any]] = []
    if {"minimum", "maximum"} <= set(frame.columns):
        traces += [
            {"type": "scatter", "x": x, "y": list(frame["maximum"]), "name": "maximum",
             "mode": "lines", "line": {"width": 0}, "showlegend": False, "hoverinfo": "skip"},
            {"type": "scatter", "x": x, "y": list(frame["minimum"]),
             "name": "minimum to maximum", "mode": "lines", "line": {"width": 0},
             "fill": "tonexty", "fillcolor": BAND_COLOUR},
        ]  # fmt: skip
    traces.append(
        {"type": "scatter", "x": x, "y": list(frame["average"]), "name": "average",
         "mode": "lines", "line": {"color": LINE_COLOUR}}
    )  # fmt: skip
    for percentile, dash in (("p95", "dash"), ("p99", "dot")):
        if percentile in frame.columns and frame[percentile].notna().any():
            traces.append(
                {"type": "scatter", "x": x, "y": list(frame[percentile]), "name": percentile,
                 "mode": "lines", "line": {"color": P95_COLOUR, "dash": dash}}
            )  # fmt: skip
    layout = {
        "title": {"text": metric},
        "yaxis": {"title": {"text": unit or ""}},
        "margin": {"l": 40, "r": 10, "t": 40, "b": 30},
        "shapes": [
            {"type": "line", "x0": m.at, "x1": m.at, "y0": 0, "y1": 1, "xref": "x",
             "yref": "paper", "line": {"dash": "dot", "color": "grey"}}
            for m in markers
        ],
        "annotations": [
            {"x": m.at, "y": 1, "yref": "paper", "text": m.label, "showarrow": False}
            for m in markers
        ],
    }  # fmt: skip
    return {"data": traces, "layout": layout}


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
            x=[f"{day:%Y-%m-%d}" for day in grid.columns],
            y=list(grid.index),
            colorbar={"title": unit or ""},
            hovertemplate="%{y}<br>%{x}: %{z:.1f}<extra></extra>",
        )
    )
    figure.update_layout(
        title=f"{metric}, p95 per day",
        margin={"l": 120, "r": 10, "t": 40},
        xaxis={"type": "category"},
        yaxis={"autorange": "reversed"},  # the first instance on top, as in the table
        height=max(300, 18 * len(grid.index) + 120),
    )
    return figure


def sparkline_figure(frame: pd.DataFrame) -> dict[str, Any]:
    """A small line of `frame`'s average by hour, without axes: the fleet page's last day. A
    plain figure dictionary: a page draws dozens, and plotly's checked Figure objects take
    tens of milliseconds each to build (the tests check it against plotly's schema)."""
    return {
        "data": [
            {
                "type": "scatter", "mode": "lines", "x": list(frame["hour"]),
                "y": list(frame["average"]), "line": {"color": LINE_COLOUR},
                "hovertemplate": "%{x|%H:%M}: %{y:.1f}<extra></extra>",
            }
        ],
        "layout": {
            "height": 40, "width": 220, "margin": {"l": 0, "r": 0, "t": 0, "b": 0},
            "showlegend": False, "xaxis": {"visible": False}, "yaxis": {"visible": False},
            "plot_bgcolor": "white",
        },
    }  # fmt: skip


def stacked_load_figure(frame: pd.DataFrame) -> go.Figure:
    """Performance Insights' load as areas stacked by wait event (the largest at the bottom):
    `frame` as data.wait_event_load returns it."""
    figure = go.Figure()
    order = frame.groupby("dimension_key")["active_sessions"].sum().sort_values(ascending=False)
    for key in order.index:
        rows = frame[frame["dimension_key"] == key]
        figure.add_trace(
            go.Scatter(
                x=rows["ts"], y=rows["active_sessions"], name=key, mode="lines",
                stackgroup="load", line={"width": 0.5},
            )
        )  # fmt: skip
    figure.update_layout(
        title="DB load by wait event", yaxis_title="average active sessions",
        margin={"l": 40, "r": 10, "t": 40, "b": 30},
    )  # fmt: skip
    return figure


# The coverage page's colours, in the order of the cells' codes.
CELL_COLOURS = {
    "collected": "#2ca02c",
    "empty": "#c7c7c7",
    "missing": "#d62728",
    "being healed": "#ff7f0e",
}


def coverage_figure(cells: pd.DataFrame) -> go.Figure:
    """Instances by hour, each cell coloured by what the gap sensor sees: `cells` as
    coverage.coverage returns them. A cell's value is its position in CELL_COLOURS."""
    codes = {cell: code for code, cell in enumerate(CELL_COLOURS)}
    labelled = cells.assign(
        label=cells["instance_id"] + " (" + cells["account_id"] + ", " + cells["region"] + ")",
        code=cells["cell"].map(codes),
    )
    grid = labelled.pivot_table(index="label", columns="hour", values="code", aggfunc="max")
    steps = len(CELL_COLOURS)
    scale = []
    for code, colour in enumerate(CELL_COLOURS.values()):
        scale += [[code / steps, colour], [(code + 1) / steps, colour]]
    figure = go.Figure(
        go.Heatmap(
            z=grid.to_numpy(), x=list(grid.columns), y=list(grid.index), zmin=0, zmax=steps,
            colorscale=scale, xgap=1, ygap=1,
            customdata=[[list(CELL_COLOURS)[int(v)] if v == v else "" for v in row]
                        for row in grid.to_numpy()],
            hovertemplate="%{y}<br>%{x|%Y-%m-%d %H:00}: %{customdata}<extra></extra>",
            colorbar={
                "tickvals": [code + 0.5 for code in range(steps)],
                "ticktext": list(CELL_COLOURS),
            },
        )
    )  # fmt: skip
    figure.update_layout(
        title="Coverage of the look-back window", margin={"l": 200, "r": 10, "t": 40, "b": 30},
        height=max(300, 22 * len(grid.index) + 120), yaxis={"autorange": "reversed"},
    )  # fmt: skip
    return figure


@dataclass(frozen=True)
class Capacity:
    """What an instance class offers, as a line to draw a use against."""

    label: str  # e.g. "db.r6g.large (now)"
    vcpus: int
    memory_gib: float


def rightsizing_figure(
    evidence: pd.DataFrame, capacities: Sequence[Capacity], title: str
) -> go.Figure:
    """The evidence of a rightsizing verdict, hour by hour: the vCPUs in use at the CPU's p95
    and the memory in use at its least freeable, each against what the current class and the
    suggested one offer. `evidence` has the columns hour, vcpus_used, memory_used_gib."""
    figure = make_subplots(
        rows=1, cols=2, subplot_titles=("vCPUs in use (CPU p95)", "memory in use, GiB")
    )
    for col, (column, name) in enumerate(
        (("vcpus_used", "vCPUs in use"), ("memory_used_gib", "memory in use")), start=1
    ):
        figure.add_trace(
            go.Scatter(
                x=evidence["hour"], y=evidence[column], name=name, mode="lines",
                line={"color": LINE_COLOUR},
            ),
            row=1, col=col,
        )  # fmt: skip
        for dash, capacity in zip(("solid", "dash"), capacities, strict=False):
            limit = capacity.vcpus if col == 1 else capacity.memory_gib
            figure.add_trace(
                go.Scatter(
                    x=[evidence["hour"].min(), evidence["hour"].max()], y=[limit, limit],
                    name=f"{capacity.label}: {limit:g}", mode="lines",
                    line={"color": P95_COLOUR if dash == "solid" else "grey", "dash": dash},
                ),
                row=1, col=col,
            )  # fmt: skip
    figure.update_layout(title=title, margin={"l": 40, "r": 10, "t": 60, "b": 30}, height=320)
    return figure
