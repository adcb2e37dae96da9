"""Asks Performance Insights for an instance's hours: which hours it still keeps, the window
of each request, and the pages of each answer."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import duckdb

from metrics_pipeline.catalog import PI_GROUPS, PI_SQL_GROUP, PI_STATEMENT_BYTES, PiGroup
from metrics_pipeline.hours import HOUR
from metrics_pipeline.insights.answers import MAX_RESULTS, SqlText, metric_queries
from metrics_pipeline.insights.store import HourFetched
from metrics_pipeline.warehouse.instances import Instance
from metrics_pipeline.warehouse.tables import INSTANCES

# Performance Insights' API price (billed with CloudWatch Database Insights): USD per 1,000
# requests beyond the free ones, from AWS's Performance Insights pricing page.
USD_PER_1000_PI_REQUESTS = 0.01
PI_SERVICE_TYPE = "RDS"
WHOLE_TEXT_DIMENSION = "db.sql.statement"


@dataclass(frozen=True)
class PiInstance:
    """An instance with PI on: its identifier for PI (DbiResourceId) and how long PI keeps
    its data."""

    instance: Instance
    resource_id: str
    retention_days: int


def read_pi_instances(
    conn: duckdb.DuckDBPyConnection, targets: Sequence[Instance]
) -> dict[Instance, PiInstance]:
    """Those of `targets` the inventory says have PI on."""
    rows = conn.execute(
        f"""
        SELECT account_id, region, instance_id, dbi_resource_id,
               coalesce(performance_insights_retention_days, 7)
        FROM {INSTANCES.name}
        WHERE performance_insights_enabled AND dbi_resource_id IS NOT NULL
        """
    ).fetchall()
    wanted = set(targets)
    found = {Instance(*row[:3]): PiInstance(Instance(*row[:3]), row[3], row[4]) for row in rows}
    return {instance: pi for instance, pi in found.items() if instance in wanted}


@dataclass(frozen=True)
class HourRequest:
    hour: HourFetched
    # The window asked of PI, or None: an hour PI no longer keeps, or not begun.
    window: tuple[datetime, datetime] | None


def plan_hours(
    hours: Sequence[datetime], now: datetime, retention_days: int, period_seconds: int
) -> list[HourRequest]:
    """A request per hour, within what PI keeps (its StartTime may not be older than the
    retention) and what has happened (whole periods until `now`)."""
    period = timedelta(seconds=period_seconds)
    kept_from = now - timedelta(days=retention_days)
    epoch = datetime(1970, 1, 1)
    first_kept = epoch + -((epoch - kept_from) // period) * period  # rounded up to a period
    happened = epoch + ((now - epoch) // period) * period
    planned = []
    for hour in hours:
        if hour + HOUR <= kept_from:
            planned.append(HourRequest(HourFetched(hour, kept=False), None))
            continue
        start, end = max(hour, first_kept), min(hour + HOUR, happened)
        planned.append(HourRequest(HourFetched(hour), (start, end) if start < end else None))
    return planned


def fetch_load(
    client: Any,
    resource_id: str,
    start: datetime,
    end: datetime,
    period_seconds: int,
    groups: Sequence[PiGroup] = PI_GROUPS,
) -> list[dict[str, Any]]:
    """Every page's MetricList of one GetResourceMetrics request, periods aligned to their
    start as CloudWatch's are."""
    entries: list[dict[str, Any]] = []
    request: dict[str, Any] = {
        "ServiceType": PI_SERVICE_TYPE,
        "Identifier": resource_id,
        "MetricQueries": metric_queries(groups),
        "StartTime": start,
        "EndTime": end,
        "PeriodInSeconds": period_seconds,
        "PeriodAlignment": "START_TIME",
        "MaxResults": MAX_RESULTS,
    }
    while True:
        answer = client.get_resource_metrics(**request)
        entries += answer.get("MetricList", [])
        token = answer.get("NextToken")
        if not token:
            return entries
        request["NextToken"] = token


def cut_statements(sql: Sequence[SqlText], whole: Mapping[str, int]) -> list[SqlText]:
    """The statements PI cut at its 500 bytes whose whole text the warehouse lacks (`whole`:
    the bytes stored of each)."""
    return [
        text
        for text in sql
        if text.statement is not None
        and len(text.statement.encode()) >= PI_STATEMENT_BYTES
        and whole.get(text.sql_id, 0) <= PI_STATEMENT_BYTES
    ]


def fetch_whole_text(client: Any, resource_id: str, sql_id: str) -> str | None:
    """A statement's whole text (GetDimensionKeyDetails); None while PI has it not ready."""
    answer = client.get_dimension_key_details(
        ServiceType=PI_SERVICE_TYPE,
        Identifier=resource_id,
        Group=PI_SQL_GROUP.name,
        GroupIdentifier=sql_id,
        RequestedDimensions=[WHOLE_TEXT_DIMENSION],
    )
    return next(
        (
            dimension["Value"]
            for dimension in answer.get("Dimensions", [])
            if dimension.get("Dimension") == WHOLE_TEXT_DIMENSION
            and dimension.get("Status") == "AVAILABLE"
            and dimension.get("Value")
        ),
        None,
    )


def estimated_pi_cost_usd(requests: int) -> float:
    return round(requests * USD_PER_1000_PI_REQUESTS / 1000, 6)
