"""The dashboard's pages and their callbacks: thin wrappers of data.py (what is read) and
figures.py (what is drawn). Served on loopback only, without login: a local tool."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from dash import Dash, Input, Output, dcc, html

from metrics_pipeline.analysts.query import QueryError, list_instances
from metrics_pipeline.dashboard.data import inventory_markers, metric_series
from metrics_pipeline.dashboard.figures import metric_figure
from metrics_pipeline.hours import Clock, utc_now
from metrics_pipeline.settings import StorageSettings
from metrics_pipeline.warehouse.instances import Instance

# The ranges an instance's page offers, as the analysts' relative times say them.
RANGES = {"hour": "now-1h", "day": "now-1d", "week": "now-7d"}
DEFAULT_METRIC = "CPUUtilization"


def instance_options(storage: StorageSettings) -> list[dict[str, str]]:
    """Every instance of the inventory, labelled and valued account/region/id."""
    listed = list_instances(storage)
    return [
        {
            "label": f"{row.instance_id} ({row.account_id}, {row.region})",
            "value": f"{row.account_id}/{row.region}/{row.instance_id}",
        }
        for row in listed.itertuples()
    ]


def instance_of(value: str) -> Instance:
    account_id, region, instance_id = value.split("/", 2)
    return Instance(account_id, region, instance_id)


def instance_graph(
    storage: StorageSettings, value: str | None, metric: str, span: str, now: datetime
) -> tuple[Any, str]:
    """The figure of the instance's metric over the span, and a line saying what was read (or
    why nothing could be: the analysts' messages)."""
    if not value:
        return {}, "Choose an instance."
    instance = instance_of(value)
    try:
        read = metric_series(instance, metric, RANGES[span], "now", storage, now)
    except QueryError as error:
        return {}, str(error)
    markers = [
        m
        for m in inventory_markers(instance, storage)
        if read.choice.start <= m.at < read.choice.end
    ]
    return metric_figure(read.frame, metric, read.unit, markers), read.choice.line()


def build_app(storage: StorageSettings, clock: Clock = utc_now) -> Dash:
    app = Dash(__name__, title="metrics_pipeline")
    app.layout = html.Div(
        [
            html.H2("Instance"),
            dcc.Dropdown(id="instance", options=instance_options(storage)),
            dcc.RadioItems(id="span", options=list(RANGES), value="day", inline=True),
            dcc.Graph(id="metric"),
            html.P(id="read"),
        ]
    )

    @app.callback(
        Output("metric", "figure"),
        Output("read", "children"),
        Input("instance", "value"),
        Input("span", "value"),
    )
    def draw(value: str | None, span: str) -> tuple[Any, str]:
        return instance_graph(storage, value, DEFAULT_METRIC, span, clock())

    return app
