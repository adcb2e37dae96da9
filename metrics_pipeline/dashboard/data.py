"""What the dashboard reads, through the analysts' sandboxed reader only (never the writers'
lock): an instance's metric over a range from the tier that holds it, and the moments its
inventory history records."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from itertools import pairwise

import pandas as pd

from metrics_pipeline.analysts.query import (
    TierChoice,
    check_range,
    choose_tier,
    connect,
    parse_time,
)
from metrics_pipeline.dashboard.coverage import coverage
from metrics_pipeline.dashboard.figures import Marker
from metrics_pipeline.hours import HOUR, healing_hours, naive_utc, utc_now
from metrics_pipeline.settings import StorageSettings
from metrics_pipeline.warehouse.instances import Instance, read_inventory
from metrics_pipeline.warehouse.schema import table_exists
from metrics_pipeline.warehouse.tables import (
    DAILY_TIER,
    FETCHES,
    HOURLY_TIER,
    INSTANCE_HISTORY,
    INSTANCES,
    METRICS,
    PI_LOAD,
    RIGHTSIZING,
    RUNS,
)

# The columns a chart draws of each tier (the percentiles where it has them).
TIER_COLUMNS = {
    "raw": ("average", "minimum", "maximum"),
    HOURLY_TIER: ("average", "minimum", "maximum", "p95", "p99"),
    DAILY_TIER: ("average", "minimum", "maximum", "max_hourly_p95"),
}


@dataclass(frozen=True)
class MetricSeries:
    frame: pd.DataFrame  # metric, ts and the tier's drawn columns, in time order
    units: dict[str, str | None]  # each metric's unit
    choice: TierChoice  # which tier, over which range, and why

    def of(self, metric: str) -> pd.DataFrame:
        return self.frame[self.frame["metric"] == metric].drop(columns=["metric"])

    @property
    def unit(self) -> str | None:
        """The unit of the one metric read (None when it has none or several were read)."""
        return next(iter(self.units.values())) if len(self.units) == 1 else None


# The finest step a chart draws over a range this long: finer points would not show.
STEPS = ((timedelta(days=2), None), (timedelta(days=8), timedelta(minutes=10)))


def drawn_step(start: datetime, end: datetime) -> timedelta | None:
    """None to draw every stored period; else the step the raw tier is drawn at."""
    for longest, step in STEPS:
        if end - start <= longest:
            return step
    return HOUR


def metric_series(
    instance: Instance,
    metric: str | None,
    start: str | datetime,
    end: str | datetime,
    storage: StorageSettings | None = None,
    now: datetime | None = None,
) -> MetricSeries:
    """The metric (every metric when None) of the instance over [start, end) from the tier the
    analysts' extract would read (raw within its retention, else hourly); refused by name like
    the extract. A long range of the raw tier is drawn in steps (drawn_step): each step's mean
    of the averages, and the least minimum and greatest maximum."""
    storage = storage or StorageSettings.from_env()
    now = naive_utc(now) if now else utc_now()
    choice = choose_tier(
        parse_time("start", start, now), parse_time("end", end, now), None, storage, now
    )
    time_column, columns = choice.table.time_column, TIER_COLUMNS[choice.tier]
    step = drawn_step(choice.start, choice.end) if choice.tier == "raw" else None
    if step is None:
        ts = f"{time_column} AS ts"
        drawn = ", ".join(
            "max_hourly_p95 AS p95" if column == "max_hourly_p95" else column for column in columns
        )
        group = ""
    else:
        ts = f"time_bucket(INTERVAL '{int(step.total_seconds())} seconds', ts) AS ts"
        drawn = "avg(average) AS average, min(minimum) AS minimum, max(maximum) AS maximum"
        group = "GROUP BY metric, 1, unit"
    only = "AND metric = $metric" if metric else ""
    with connect(storage) as conn:
        frame = conn.execute(
            f"""
            SELECT {ts}, metric, {drawn}, unit FROM {choice.table.name}
            WHERE account_id = $account_id AND region = $region AND instance_id = $instance_id
              {only} AND {time_column} >= $start AND {time_column} < $end
            {group} ORDER BY metric, ts
            """,
            {
                **vars(instance),
                **({"metric": metric} if metric else {}),
                "start": choice.start,
                "end": choice.end,
            },
        ).df()
    units = {
        str(name): (rows["unit"].dropna().iloc[0] if rows["unit"].notna().any() else None)
        for name, rows in frame.groupby("metric")
    }
    return MetricSeries(frame.drop(columns=["unit"]), units, choice)


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


def fleet_inventory(storage: StorageSettings | None = None) -> pd.DataFrame:
    """Every instance the inventory knows, with what the fleet page filters by: account,
    region, engine, class, status and tags (a dict)."""
    with connect(storage) as conn:
        rows = conn.execute(
            f"""
            SELECT account_id, region, instance_id, engine, instance_class, status, tags
            FROM {INSTANCES.name} ORDER BY account_id, region, instance_id
            """
        ).fetchall()
    columns = ["account_id", "region", "instance_id", "engine", "instance_class", "status"]
    return pd.DataFrame(
        [{**dict(zip(columns, row, strict=False)), "tags": dict(row[-1] or {})} for row in rows],
        columns=[*columns, "tags"],
    )


def instances_of(frame: pd.DataFrame) -> list[Instance]:
    """The instances of a frame's account_id, region and instance_id columns, in its order."""
    return [
        Instance(str(a), str(r), str(i))
        for a, r, i in zip(frame["account_id"], frame["region"], frame["instance_id"], strict=True)
    ]


def last_day(
    metric: str, storage: StorageSettings | None = None, now: datetime | None = None
) -> pd.DataFrame:
    """Each instance's hourly mean of the metric's period averages over the last 24 hours, from
    the raw tier: the fleet page's small charts. Columns account_id, region, instance_id, hour,
    average."""
    storage = storage or StorageSettings.from_env()
    now = naive_utc(now) if now else utc_now()
    choice = choose_tier(now - timedelta(days=1), now, "raw", storage, now)
    with connect(storage) as conn:
        return conn.execute(
            f"""
            SELECT account_id, region, instance_id, date_trunc('hour', ts) AS hour,
                   avg(average) AS average
            FROM {choice.table.name}
            WHERE metric = $metric AND ts >= $start AND ts < $end
            GROUP BY ALL ORDER BY account_id, region, instance_id, hour
            """,
            {"metric": metric, "start": choice.start, "end": choice.end},
        ).df()


def wait_event_load(
    instance: Instance,
    start: str | datetime,
    end: str | datetime,
    storage: StorageSettings | None = None,
    now: datetime | None = None,
) -> pd.DataFrame:
    """The instance's Performance Insights load by wait event over [start, end), within PI's
    retention: columns ts, dimension_key (the wait event), key_type, active_sessions. Empty
    for an instance without PI."""
    storage = storage or StorageSettings.from_env()
    now = naive_utc(now) if now else utc_now()
    first, last = check_range(
        parse_time("start", start, now),
        parse_time("end", end, now),
        storage.pi_retention_days,
        now,
        "METRICS_PI_RETENTION_DAYS",
    )
    with connect(storage) as conn:
        if not table_exists(conn, PI_LOAD.name):
            return pd.DataFrame(columns=["ts", "dimension_key", "key_type", "active_sessions"])
        return conn.execute(
            f"""
            SELECT ts, dimension_key, key_type, active_sessions FROM {PI_LOAD.name}
            WHERE account_id = $account_id AND region = $region AND instance_id = $instance_id
              AND dimension_group = 'db.wait_event'
              AND ts >= $start AND ts < $end
            ORDER BY ts, dimension_key
            """,
            {**vars(instance), "start": first, "end": last},
        ).df()


def coverage_cells(
    storage: StorageSettings,
    now: datetime,
    backfill_days: int,
    settle_delay: timedelta,
    healing: list[tuple[datetime, datetime]],
) -> pd.DataFrame:
    """The coverage page's cells: each instance's settled hours of the look-back window as the
    gap sensor sees them (coverage.coverage), `healing` being the unfinished healing runs'
    ranges."""
    hours = healing_hours(naive_utc(now), backfill_days, settle_delay)
    if not hours:
        return coverage([], [], {}, [])
    with connect(storage) as conn:
        inventory = read_inventory(conn)
        rows = conn.execute(
            f"""
            SELECT account_id, region, instance_id, hour, datapoints FROM {FETCHES.name}
            WHERE settled AND hour >= $first AND hour < $end
            """,
            {"first": hours[0], "end": hours[-1] + HOUR},
        ).fetchall()
    settled = {(Instance(a, r, i), hour): n for a, r, i, hour, n in rows}
    return coverage(hours, inventory, settled, healing)


def recent_runs(storage: StorageSettings | None = None, limit: int = 20) -> pd.DataFrame:
    """The last runs' figures, newest first."""
    with connect(storage) as conn:
        return conn.execute(
            f"""
            SELECT finished_at, asset, window_start, window_end, instances, rows_written,
                   datapoints, cloudwatch_requests, pi_requests, throttled_calls,
                   estimated_cost_usd, run_id
            FROM {RUNS.name} ORDER BY finished_at DESC LIMIT $limit
            """,
            {"limit": limit},
        ).df()


def rightsizing_findings(storage: StorageSettings | None = None) -> pd.DataFrame:
    """The last rightsizing report, the instances to act on first (under-provisioned, then
    over-provisioned, then storage at risk)."""
    with connect(storage) as conn:
        if not table_exists(conn, RIGHTSIZING.name):
            return pd.DataFrame(columns=RIGHTSIZING.column_names)
        return conn.execute(
            f"""
            SELECT * FROM {RIGHTSIZING.name}
            ORDER BY CASE verdict WHEN 'under-provisioned' THEN 0
                                  WHEN 'over-provisioned' THEN 1 ELSE 2 END,
                     NOT storage_at_risk, account_id, region, instance_id
            """
        ).df()


def hourly_evidence(
    instance: Instance,
    start: datetime,
    end: datetime,
    storage: StorageSettings | None = None,
) -> pd.DataFrame:
    """Per hour of [start, end) of the raw tier: the p95 of the CPU's period averages (%) and
    the least freeable memory (bytes), the two figures a rightsizing verdict rests on most.
    Columns hour, cpu_p95, freeable_memory_min."""
    with connect(storage) as conn:
        return conn.execute(
            f"""
            SELECT date_trunc('hour', ts) AS hour,
                   quantile_cont(average, 0.95) FILTER (metric = 'CPUUtilization') AS cpu_p95,
                   min(minimum) FILTER (metric = 'FreeableMemory') AS freeable_memory_min
            FROM {METRICS.name}
            WHERE account_id = $account_id AND region = $region AND instance_id = $instance_id
              AND metric IN ('CPUUtilization', 'FreeableMemory') AND ts >= $start AND ts < $end
            GROUP BY ALL ORDER BY hour
            """,
            {**vars(instance), "start": start, "end": end},
        ).df()
