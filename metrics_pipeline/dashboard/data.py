"""What the dashboard reads, through the analysts' sandboxed reader only (never the writers'
lock): an instance's metric over a range from the tier that holds it, and the moments its
inventory history records."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from itertools import pairwise

import pandas as pd

from metrics_pipeline.analysts.query import TierChoice, choose_tier, connect, parse_time
from metrics_pipeline.dashboard.figures import Marker
from metrics_pipeline.hours import naive_utc, utc_now
from metrics_pipeline.settings import StorageSettings
from metrics_pipeline.warehouse.instances import Instance
from metrics_pipeline.warehouse.tables import (
    DAILY_TIER,
    HOURLY_TIER,
    INSTANCE_HISTORY,
    INSTANCES,
)

# Each tier's time column and the columns a chart draws (the percentiles where it has them).
TIER_COLUMNS = {
    "raw": ("ts", ("average", "minimum", "maximum")),
    HOURLY_TIER: ("hour", ("average", "minimum", "maximum", "p95", "p99")),
    DAILY_TIER: ("day", ("average", "minimum", "maximum", "max_hourly_p95")),
}


@dataclass(frozen=True)
class MetricSeries:
    frame: pd.DataFrame  # ts and the tier's drawn columns, in time order
    unit: str | None
    choice: TierChoice  # which tier, over which range, and why


def metric_series(
    instance: Instance,
    metric: str,
    start: str | datetime,
    end: str | datetime,
    storage: StorageSettings | None = None,
    now: datetime | None = None,
) -> MetricSeries:
    """The metric of the instance over [start, end) from the tier the analysts' extract would
    read (raw within its retention, else hourly); refused by name like the extract."""
    storage = storage or StorageSettings.from_env()
    now = naive_utc(now) if now else utc_now()
    choice = choose_tier(
        parse_time("start", start, now), parse_time("end", end, now), None, storage, now
    )
    time_column, columns = TIER_COLUMNS[choice.tier]
    drawn = ", ".join(
        "max_hourly_p95 AS p95" if column == "max_hourly_p95" else column for column in columns
    )
    with connect(storage) as conn:
        frame = conn.execute(
            f"""
            SELECT {time_column} AS ts, {drawn}, unit FROM {choice.table.name}
            WHERE account_id = $account_id AND region = $region AND instance_id = $instance_id
              AND metric = $metric AND {time_column} >= $start AND {time_column} < $end
            ORDER BY ts
            """,
            {**vars(instance), "metric": metric, "start": choice.start, "end": choice.end},
        ).df()
    unit = frame["unit"].dropna().iloc[0] if frame["unit"].notna().any() else None
    return MetricSeries(frame.drop(columns=["unit"]), unit, choice)


def inventory_markers(instance: Instance, storage: StorageSettings | None = None) -> list[Marker]:
    """The instance's creation and each change of its class, from the inventory's history."""
    storage = storage or StorageSettings.from_env()
    key = vars(instance)
    where = "account_id = $account_id AND region = $region AND instance_id = $instance_id"
    with connect(storage) as conn:
        created = conn.execute(
            f"SELECT create_time FROM {INSTANCES.name} WHERE {where}", key
        ).fetchall()
        versions = conn.execute(
            f"SELECT valid_from, instance_class FROM {INSTANCE_HISTORY.name} WHERE {where} "
            "ORDER BY valid_from",
            key,
        ).fetchall()
    markers = [Marker(at, "created") for (at,) in created if at is not None]
    for (_, before), (at, after) in pairwise(versions):
        if before != after:
            markers.append(Marker(at, f"{before} → {after}"))
    return markers


def daily_p95(
    metric: str,
    days: int,
    storage: StorageSettings | None = None,
    now: datetime | None = None,
) -> pd.DataFrame:
    """Per instance and UTC day of the last `days` (today included), the p95 of the metric's
    period averages in the raw tier: the fleet's heatmap. Columns account_id, region,
    instance_id, day, p95."""
    storage = storage or StorageSettings.from_env()
    now = naive_utc(now) if now else utc_now()
    first_day = now.replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=days - 1)
    choice = choose_tier(first_day, now, "raw", storage, now)
    with connect(storage) as conn:
        return conn.execute(
            f"""
            SELECT account_id, region, instance_id, date_trunc('day', ts) AS day,
                   quantile_cont(average, 0.95) AS p95
            FROM {choice.table.name}
            WHERE metric = $metric AND ts >= $start AND ts < $end
            GROUP BY ALL ORDER BY account_id, region, instance_id, day
            """,
            {"metric": metric, "start": choice.start, "end": choice.end},
        ).df()
