"""The dashboard's pages and their callbacks: thin wrappers of data.py (what is read) and
figures.py (what is drawn). Served on loopback only, without login: a local tool.

Every value a page takes from its address or its controls (an instance, a range, a metric, a
filter) is checked against what the warehouse holds before it reaches a reader, and the
readers are the analysts' sandboxed ones: a page can neither block a collection nor change
anything.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, urlencode

import pandas as pd
from dash import Dash, Input, Output, dcc, html
from dash.dash_table.DataTable import DataTable

from metrics_pipeline.analysts.load import top_load
from metrics_pipeline.analysts.query import QueryError
from metrics_pipeline.catalog import RDS_METRIC_UNITS
from metrics_pipeline.dashboard import data
from metrics_pipeline.dashboard.data import Reader
from metrics_pipeline.dashboard.figures import (
    Capacity,
    coverage_figure,
    heatmap_figure,
    metric_figure,
    rightsizing_figure,
    sparkline_figure,
    stacked_load_figure,
)
from metrics_pipeline.dashboard.healing import raw_healing_ranges
from metrics_pipeline.hours import Clock, utc_now
from metrics_pipeline.rightsizing.classes import instance_class, suggested_class
from metrics_pipeline.warehouse.instances import Instance

# The ranges an instance's page offers, as the analysts' relative times say them.
RANGES = {"hour": "now-1h", "day": "now-1d", "week": "now-7d", "month": "now-30d"}
DEFAULT_RANGE = "day"
DEFAULT_METRIC = "CPUUtilization"
HEATMAP_DAYS = 7
FLEET_PAGE_ROWS = 25
PAGES = {
    "/": "Fleet",
    "/instance": "Instance",
    "/coverage": "Coverage",
    "/rightsizing": "Rightsizing",
}
GIB = 1024**3
# A static chart draws once and never listens for the mouse: the fleet's small charts.
STATIC: dcc.Graph.Config = {"staticPlot": True, "displayModeBar": False}


def instance_key(instance: Instance) -> str:
    return f"{instance.account_id}/{instance.region}/{instance.instance_id}"


def known_instance(value: str | None, reader: Reader) -> Instance:
    """The inventory's instance a page was asked for ("account/region/id"), or a QueryError
    naming what was asked; nothing else reaches a reader."""
    keys = {instance_key(i): i for i in data.instances_of(data.fleet_inventory(reader))}
    if not value:
        raise QueryError("instance: choose one (account/region/id).")
    if value not in keys:
        shown = value if len(value) <= 80 else value[:80] + "…"
        raise QueryError(f"instance: {shown!r} is not in the inventory.")
    return keys[value]


def known_range(span: str | None) -> str:
    if span not in RANGES:
        raise QueryError(f"range: {str(span)[:40]!r} is not offered; choose {', '.join(RANGES)}.")
    return span


def message(text: str) -> html.Div:
    return html.Div(text, className="message", style={"color": "#a00", "margin": "1em 0"})


def table(frame: pd.DataFrame, table_id: str, page_size: int = 20) -> DataTable:
    shown = frame.copy()
    for column in shown.columns:
        if pd.api.types.is_datetime64_any_dtype(shown[column]):
            shown[column] = shown[column].dt.strftime("%Y-%m-%d %H:%M")
        elif pd.api.types.is_float_dtype(shown[column]):
            shown[column] = shown[column].round(3)
    shown = shown.astype(object).where(shown.notna(), None)  # an empty cell, not NaN
    return DataTable(
        id=table_id,
        data=[{str(k): v for k, v in row.items()} for row in shown.to_dict("records")],
        columns=[{"name": c, "id": c} for c in shown.columns],
        page_size=page_size,
        sort_action="native",
        style_cell={"textAlign": "left", "fontSize": 13},
    )


# --- Fleet ---------------------------------------------------------------------------------


def fleet_filters(fleet: pd.DataFrame) -> dict[str, list[str]]:
    """The values each filter offers: the fleet's accounts, regions, engines and tags."""
    tags = sorted({f"{k}={v}" for tags in fleet["tags"] for k, v in tags.items()})
    return {
        "account": sorted(fleet["account_id"].unique()),
        "region": sorted(fleet["region"].unique()),
        "engine": sorted(fleet["engine"].dropna().unique()),
        "tag": tags,
    }


def filter_fleet(fleet: pd.DataFrame, chosen: dict[str, list[str] | None]) -> pd.DataFrame:
    """The instances matching every filter given (any of a filter's values)."""
    keep = pd.Series(True, index=fleet.index)
    for name, column in (("account", "account_id"), ("region", "region"), ("engine", "engine")):
        if chosen.get(name):
            keep &= fleet[column].isin(chosen[name] or [])
    if chosen.get("tag"):
        wanted = set(chosen["tag"] or [])
        keep &= fleet["tags"].map(lambda tags: bool(wanted & {f"{k}={v}" for k, v in tags.items()}))
    return fleet[keep]


def fleet_content(
    reader: Reader,
    fleet: pd.DataFrame,
    chosen: dict[str, list[str] | None],
    metric: str | None,
    page: int | None,
    now: datetime,
) -> tuple[Any, html.Table, list[dict[str, Any]]]:
    """The heatmap, the table's page and the pages the filters leave of the fleet."""
    metric = metric if metric in RDS_METRIC_UNITS else DEFAULT_METRIC
    shown = filter_fleet(fleet, chosen)
    keys = set(zip(shown["account_id"], shown["region"], shown["instance_id"], strict=True))

    def of_shown(frame: pd.DataFrame) -> pd.DataFrame:
        held = zip(frame["account_id"], frame["region"], frame["instance_id"], strict=True)
        return frame[[key in keys for key in held]]

    heat = of_shown(data.daily_p95(metric, HEATMAP_DAYS, reader, now))
    last_day = of_shown(data.last_day(metric, reader, now))
    pages = page_options(len(shown))
    page = page if isinstance(page, int) and 0 <= page < len(pages) else 0
    return (
        heatmap_figure(heat, metric, RDS_METRIC_UNITS[metric]),
        fleet_rows(shown, last_day, page, metric),
        pages,
    )


def fleet_page(reader: Reader, now: datetime) -> html.Div:
    """The fleet drawn at once (the filters redraw it): a page in one request."""
    fleet = data.fleet_inventory(reader)
    if fleet.empty:
        return html.Div([html.H2("Fleet"), message("No instance yet: the first collection runs.")])
    options = fleet_filters(fleet)
    controls = [
        dcc.Dropdown(id=f"fleet-{name}", options=values, multi=True, placeholder=name)
        for name, values in options.items()
    ]
    heatmap, rows, pages = fleet_content(reader, fleet, {}, DEFAULT_METRIC, 0, now)
    return html.Div(
        [
            html.H2("Fleet"),
            html.Div(controls, style={"display": "grid", "gridTemplateColumns": "repeat(4, 1fr)"}),
            dcc.Dropdown(
                id="fleet-metric",
                options=sorted(RDS_METRIC_UNITS),
                value=DEFAULT_METRIC,
                clearable=False,
            ),
            dcc.Graph(id="fleet-heatmap", figure=heatmap),
            html.Div(
                [
                    html.Span("Page "),
                    dcc.Dropdown(id="fleet-page", options=pages, value=0, clearable=False),
                ],
                style={"width": "12em"},
            ),
            html.Div(rows, id="fleet-table"),
        ]
    )


def page_options(instances: int) -> list[dict[str, Any]]:
    pages = max(1, -(-instances // FLEET_PAGE_ROWS))
    return [{"label": f"{n + 1} of {pages}", "value": n} for n in range(pages)]


def fleet_rows(fleet: pd.DataFrame, last_day: pd.DataFrame, page: int, metric: str) -> html.Table:
    """One page of the fleet: each instance with its last day of the metric, small."""
    rows = fleet.iloc[page * FLEET_PAGE_ROWS : (page + 1) * FLEET_PAGE_ROWS]
    series = {
        Instance(str(a), str(r), str(i)): part
        for (a, r, i), part in last_day.groupby(["account_id", "region", "instance_id"])
    }
    header = ["instance", "account", "region", "engine", "class", "status", f"{metric}, last day"]
    body = []
    for instance, row in zip(data.instances_of(rows), rows.to_dict("records"), strict=True):
        part = series.get(instance)
        chart: Any = (
            dcc.Graph(figure=sparkline_figure(part), config=STATIC, className="sparkline")
            if part is not None
            else "no data"
        )
        link = "/instance?" + urlencode({"instance": instance_key(instance)})
        cells = [dcc.Link(instance.instance_id, href=link), instance.account_id, instance.region]
        cells += [str(row[c] or "") for c in ("engine", "instance_class", "status")]
        body.append(html.Tr([html.Td(cell) for cell in [*cells, chart]]))
    return html.Table([html.Tr([html.Th(h) for h in header]), *body], className="fleet")


# --- Instance ------------------------------------------------------------------------------


def instance_page(reader: Reader, query: dict[str, str], now: datetime) -> html.Div:
    fleet = data.fleet_inventory(reader)
    options = [
        {"label": f"{r.instance_id} ({r.account_id}, {r.region})", "value": f"{r.account_id}/"
         f"{r.region}/{r.instance_id}"}
        for r in fleet.itertuples()
    ]  # fmt: skip
    asked, refused = query.get("instance"), []
    if asked is not None:
        try:
            known_instance(asked, reader)
        except QueryError as error:
            asked, refused = None, [message(str(error))]
    span = query.get("range", DEFAULT_RANGE)
    try:
        known_range(span)
    except QueryError as error:
        span, refused = DEFAULT_RANGE, [*refused, message(str(error))]
    charts, line = ([], "") if refused else instance_charts(reader, asked, span, now)
    return html.Div(
        [
            html.H2("Instance"),
            *refused,
            dcc.Dropdown(id="instance", options=options, value=asked),
            dcc.RadioItems(id="span", options=list(RANGES), value=span, inline=True),
            html.P(line, id="read"),
            html.Div(charts, id="instance-charts"),
        ]
    )


def instance_charts(
    reader: Reader, value: str | None, span: str | None, now: datetime
) -> tuple[list[Any], str]:
    """Each collected metric of the instance over the span, then its Performance Insights load
    by wait event beside its top statements (where PI is on); and a line saying what was read,
    or why nothing could be."""
    try:
        instance = known_instance(value, reader)
        start = RANGES[known_range(span)]
        read = data.metric_series(instance, None, start, "now", reader, now)
    except QueryError as error:
        return [message(str(error))], ""
    markers = [
        m
        for m in data.inventory_markers(instance, reader)
        if read.choice.start <= m.at < read.choice.end
    ]
    charts: list[Any] = [
        dcc.Graph(
            id=f"metric-{metric}",
            figure=metric_figure(read.of(metric), metric, read.units[metric], markers),
        )
        for metric in sorted(read.units)
    ]
    if not charts:
        charts.append(message("No metric of this instance in the range."))
    charts += load_charts(reader, instance, start, now)
    return charts, read.choice.line()


def load_charts(reader: Reader, instance: Instance, start: str, now: datetime) -> list[Any]:
    try:
        load = data.wait_event_load(instance, start, "now", reader, now)
    except QueryError:
        return []  # the range is older than Performance Insights keeps
    if load.empty:
        return []
    with reader.cursor() as conn:
        top = top_load(
            start, "now", group="db.sql_tokenized", instances=[instance.instance_id],
            accounts=[instance.account_id], top=10, storage=reader.storage, now=now, reader=conn,
        )  # fmt: skip
    top = top[top["region"] == instance.region][["dimension_key", "active_sessions", "share"]]
    return [
        html.Div(
            [
                dcc.Graph(id="pi-load", figure=stacked_load_figure(load)),
                html.Div([html.H4("Top statements (SQL digest)"), table(top, "pi-statements")]),
            ],
            style={"display": "grid", "gridTemplateColumns": "2fr 1fr", "gap": "1em"},
        )
    ]


# --- Coverage ------------------------------------------------------------------------------


def coverage_page(reader: Reader, now: datetime, look_back: tuple[int, timedelta]) -> html.Div:
    backfill_days, settle_delay = look_back
    cells = data.coverage_cells(reader, now, backfill_days, settle_delay, raw_healing_ranges())
    runs = data.recent_runs(reader)
    counts = cells["cell"].value_counts()
    summary = ", ".join(f"{cell}: {counts.get(cell, 0)}" for cell in cells["cell"].unique())
    parts: list[Any] = [html.H2("Coverage")]
    if cells.empty:
        parts.append(message("No settled hour of an instance yet: the first collection runs."))
    else:
        parts += [
            html.P(f"Hours of the last {backfill_days} days, per instance: {summary}."),
            dcc.Graph(id="coverage", figure=coverage_figure(cells)),
        ]
    parts += [html.H3("Last runs"), table(runs, "runs")]
    return html.Div(parts)


# --- Rightsizing ---------------------------------------------------------------------------


def rightsizing_page(reader: Reader, query: dict[str, str]) -> html.Div:
    findings = data.rightsizing_findings(reader)
    if findings.empty:
        return html.Div(
            [html.H2("Rightsizing"), message("No rightsizing report yet: it runs hourly.")]
        )
    findings = findings.assign(
        suggested_class=[
            getattr(suggested_class(c, v), "name", "") or ""
            for c, v in zip(findings["instance_class"], findings["verdict"], strict=True)
        ]
    )
    shown = findings[
        ["account_id", "region", "instance_id", "instance_class", "verdict", "suggested_class",
         "storage_at_risk", "cpu_p95", "freeable_memory_min_mib", "reasons"]
    ]  # fmt: skip
    flagged = findings[findings["verdict"].isin(["over-provisioned", "under-provisioned"])]
    options = [
        {"label": f"{r.instance_id} ({r.account_id}, {r.region}): {r.verdict}",
         "value": f"{r.account_id}/{r.region}/{r.instance_id}"}
        for r in flagged.itertuples()
    ]  # fmt: skip
    chosen = query.get("instance") or (options[0]["value"] if options else None)
    return html.Div(
        [
            html.H2("Rightsizing"),
            html.P(f"Report of {findings['report_time'].iloc[0]:%Y-%m-%d %H:%M} UTC."),
            table(shown, "findings"),
            html.H3("Evidence"),
            dcc.Dropdown(id="finding", options=options, value=chosen),
            html.Div(id="evidence"),
        ]
    )


def evidence_chart(reader: Reader, value: str | None) -> list[Any]:
    """The chart that justifies the finding: the vCPUs and memory in use, hour by hour over
    the report's window, against the class's and the suggested class's."""
    try:
        instance = known_instance(value, reader)
    except QueryError as error:
        return [message(str(error))]
    findings = data.rightsizing_findings(reader)
    mine = findings[
        (findings["account_id"] == instance.account_id)
        & (findings["region"] == instance.region)
        & (findings["instance_id"] == instance.instance_id)
    ]
    if mine.empty:
        return [message(f"instance: {value!r} has no finding in the last report.")]
    finding = mine.iloc[0]
    current = instance_class(finding["instance_class"])
    if current is None:
        return [message(f"{finding['instance_class']}: not in the class table; no chart.")]
    suggested = suggested_class(current.name, finding["verdict"])
    hourly = data.hourly_evidence(instance, finding["window_start"], finding["window_end"], reader)
    evidence = pd.DataFrame(
        {
            "hour": hourly["hour"],
            "vcpus_used": hourly["cpu_p95"] * current.vcpus / 100,
            "memory_used_gib": current.memory_gib - hourly["freeable_memory_min"] / GIB,
        }
    )
    capacities = [Capacity(f"{current.name} (now)", current.vcpus, current.memory_gib)]
    if suggested:
        capacities.append(
            Capacity(f"{suggested.name} (suggested)", suggested.vcpus, suggested.memory_gib)
        )
    title = f"{instance.instance_id}: {finding['verdict']} ({finding['reasons']})"
    return [dcc.Graph(id="evidence-chart", figure=rightsizing_figure(evidence, capacities, title))]


# --- The app -------------------------------------------------------------------------------


def build_app(
    reader: Reader,
    look_back: tuple[int, timedelta],
    clock: Clock = utc_now,
) -> Dash:
    app = Dash(
        __name__,
        title="metrics_pipeline",
        suppress_callback_exceptions=True,  # a page's controls exist only on its page
        serve_locally=True,  # every script from this server: it works offline
        # Plotly's script loads with the page, not after the first chart's data arrives.
        eager_loading=True,
    )
    nav = html.Nav(
        [dcc.Link(name, href=path, style={"marginRight": "1.5em"}) for path, name in PAGES.items()]
    )
    app.layout = html.Div(
        [dcc.Location(id="url"), nav, html.Div(id="page")],
        style={"fontFamily": "sans-serif", "margin": "1em 2em"},
    )

    @app.callback(Output("page", "children"), Input("url", "pathname"), Input("url", "search"))
    def page(path: str | None, search: str | None) -> Any:
        query = {k: v[0] for k, v in parse_qs((search or "").lstrip("?")).items()}
        pages: dict[str, Callable[[], Any]] = {
            "/": lambda: fleet_page(reader, clock()),
            "/instance": lambda: instance_page(reader, query, clock()),
            "/coverage": lambda: coverage_page(reader, clock(), look_back),
            "/rightsizing": lambda: rightsizing_page(reader, query),
        }
        if path not in pages:
            return message(f"No page {str(path)[:80]!r}: see {', '.join(PAGES)}.")
        try:
            return pages[path]()
        except QueryError as error:
            return message(str(error))

    @app.callback(
        Output("fleet-heatmap", "figure"),
        Output("fleet-table", "children"),
        Output("fleet-page", "options"),
        Input("fleet-account", "value"),
        Input("fleet-region", "value"),
        Input("fleet-engine", "value"),
        Input("fleet-tag", "value"),
        Input("fleet-metric", "value"),
        Input("fleet-page", "value"),
        prevent_initial_call=True,  # the page came drawn
    )
    def fleet(
        accounts: list[str] | None,
        regions: list[str] | None,
        engines: list[str] | None,
        tags: list[str] | None,
        metric: str | None,
        page: int | None,
    ) -> tuple[Any, Any, list[dict[str, Any]]]:
        chosen = {"account": accounts, "region": regions, "engine": engines, "tag": tags}
        return fleet_content(reader, data.fleet_inventory(reader), chosen, metric, page, clock())

    @app.callback(
        Output("instance-charts", "children"),
        Output("read", "children"),
        Input("instance", "value"),
        Input("span", "value"),
        prevent_initial_call=True,  # the page came drawn
    )
    def instance(value: str | None, span: str | None) -> tuple[list[Any], str]:
        return instance_charts(reader, value, span, clock())

    @app.callback(Output("evidence", "children"), Input("finding", "value"))
    def evidence(value: str | None) -> list[Any]:
        return evidence_chart(reader, value)

    return app
