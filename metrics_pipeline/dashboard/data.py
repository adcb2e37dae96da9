"""What the dashboard reads, through the analysts' sandboxed reader only (never the writers'
lock): an instance's metric over a range from the tier that holds it, and the moments its
inventory history records."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Hashable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from itertools import pairwise
from typing import Any, TypeVar, cast

import duckdb
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

T = TypeVar("T")


class Reader:
    """How the dashboard reads the warehouse: a new sandboxed reader (the analysts' `connect`)
    for each read, which sees the warehouse as it is then."""

    def __init__(self, storage: StorageSettings) -> None:
        self.storage = storage

    @contextmanager
    def cursor(self) -> Iterator[duckdb.DuckDBPyConnection]:
        with connect(self.storage) as conn:
            yield conn

    def remembered(self, key: Hashable, read: Callable[[], T]) -> T:
        """What `read` returns; a shared reader keeps it as long as the reader it read."""
        return read()


@dataclass
class _Opened:
    at: float
    conn: duckdb.DuckDBPyConnection
    closing: ExitStack
    database: str
    remembered: dict[Hashable, Any]


class SharedReader(Reader):
    """One sandboxed reader for every request, opened again once it is older than `max_age`.
    Opening one costs about a third of a second on a lake (its catalog copied and attached),
    more than most of a page's queries; a page sees what the warehouse held at most `max_age`
    ago, and what it asks again of the same reader (the inventory) is answered from memory.
    Each read gets its own cursor: DuckDB's connections are one per thread."""

    def __init__(
        self,
        storage: StorageSettings,
        max_age: timedelta = timedelta(seconds=30),
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(storage)
        self.max_age, self.clock = max_age.total_seconds(), clock
        self._lock = threading.Lock()
        self._opened: _Opened | None = None

    def _current(self) -> _Opened:
        """The reader, opened again if it is too old (the caller holds the lock)."""
        if self._opened is None or self.clock() - self._opened.at > self.max_age:
            self.close()
            closing = ExitStack()
            conn = closing.enter_context(connect(self.storage))
            [(database,)] = conn.execute("SELECT current_database()").fetchall()
            self._opened = _Opened(self.clock(), conn, closing, database, {})
        return self._opened

    @contextmanager
    def cursor(self) -> Iterator[duckdb.DuckDBPyConnection]:
        with self._lock:
            opened = self._current()
            cursor = opened.conn.cursor()
            quoted = opened.database.replace('"', '""')
            cursor.execute(f'USE "{quoted}"')  # the database its parent reads
        try:
            yield cursor
        finally:
            cursor.close()

    def remembered(self, key: Hashable, read: Callable[[], T]) -> T:
        with self._lock:
            remembered = self._current().remembered
            if key in remembered:
                return cast(T, remembered[key])
        value = read()
        with self._lock:
            if self._opened is not None and self._opened.remembered is remembered:
                remembered[key] = value
        return value

    def close(self) -> None:
        """Closes the shared reader (a cursor in use keeps the database it reads open)."""
        if self._opened is not None:
            self._opened.closing.close()
            self._opened = None


def has_table(reader: Reader, table: str) -> bool:
    def read() -> bool:
        with reader.cursor() as conn:
            return table_exists(conn, table)

    return reader.remembered(("table", table), read)


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


# A chart draws at most about this many points of a line: a chart is some 1,000 pixels wide,
# and the browser's time grows with the points.
MAX_POINTS = 600
# The steps a long range of the raw tier is drawn at: multiples of every CloudWatch period the
# pipeline collects at (60 s, 300 s), so that a step holds whole periods.
STEPS = tuple(timedelta(minutes=m) for m in (5, 10, 15, 30, 60, 120, 360))


def drawn_step(start: datetime, end: datetime) -> timedelta | None:
    """None to draw every stored period (a range of at most MAX_POINTS minutes); else the
    smallest step that draws the range in at most MAX_POINTS points."""
    if end - start <= MAX_POINTS * timedelta(minutes=1):
        return None
    return next((step for step in STEPS if (end - start) / step <= MAX_POINTS), STEPS[-1])


def metric_series(
    instance: Instance,
    metric: str | None,
    start: str | datetime,
    end: str | datetime,
    reader: Reader,
    now: datetime | None = None,
) -> MetricSeries:
    """The metric (every metric when None) of the instance over [start, end) from the tier the
    analysts' extract would read (raw within its retention, else hourly); refused by name like
    the extract. A long range of the raw tier is drawn in steps (drawn_step): each step's mean
    of the averages, and the least minimum and greatest maximum."""
    now = naive_utc(now) if now else utc_now()
    choice = choose_tier(
        parse_time("start", start, now), parse_time("end", end, now), None, reader.storage, now
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
    with reader.cursor() as conn:
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


def inventory_markers(instance: Instance, reader: Reader) -> list[Marker]:
    """The instance's creation and each change of its class, from the inventory's history."""
    where = "account_id = $account_id AND region = $region AND instance_id = $instance_id"
    with reader.cursor() as conn:
        rows = conn.execute(
            f"""
            SELECT 0 AS version, create_time AS moment, NULL AS instance_class
            FROM {INSTANCES.name} WHERE {where}
            UNION ALL
            SELECT 1, valid_from, instance_class FROM {INSTANCE_HISTORY.name} WHERE {where}
            ORDER BY version, moment
            """,
            vars(instance),
        ).fetchall()
    created = [(at,) for version, at, _ in rows if version == 0]
    versions = [(at, instance_class) for version, at, instance_class in rows if version == 1]
    markers = [Marker(at, "created") for (at,) in created if at is not None]
    for (_, before), (at, after) in pairwise(versions):
        if before != after:
            markers.append(Marker(at, f"{before} → {after}"))
    return markers


def daily_p95(
    metric: str,
    days: int,
    reader: Reader,
    now: datetime | None = None,
) -> pd.DataFrame:
    """Per instance and UTC day of the last `days` (today included), the p95 of the metric's
    period averages in the raw tier: the fleet's heatmap. Columns account_id, region,
    instance_id, day, p95."""
    now = naive_utc(now) if now else utc_now()
    first_day = now.replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=days - 1)
    choice = choose_tier(first_day, now, "raw", reader.storage, now)
    with reader.cursor() as conn:
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


def fleet_inventory(reader: Reader) -> pd.DataFrame:
    """Every instance the inventory knows, with what the fleet page filters by: account,
    region, engine, class, status and tags (a dict)."""

    def read() -> pd.DataFrame:
        with reader.cursor() as conn:
            rows = conn.execute(
                f"""
                SELECT account_id, region, instance_id, engine, instance_class, status, tags
                FROM {INSTANCES.name} ORDER BY account_id, region, instance_id
                """
            ).fetchall()
        columns = ["account_id", "region", "instance_id", "engine", "instance_class", "status"]
        return pd.DataFrame(
            [
                {**dict(zip(columns, row, strict=False)), "tags": dict(row[-1] or {})}
                for row in rows
            ],
            columns=[*columns, "tags"],
        )

    return reader.remembered("fleet", read)


def instances_of(frame: pd.DataFrame) -> list[Instance]:
    """The instances of a frame's account_id, region and instance_id columns, in its order."""
    return [
        Instance(str(a), str(r), str(i))
        for a, r, i in zip(frame["account_id"], frame["region"], frame["instance_id"], strict=True)
    ]


def last_day(metric: str, reader: Reader, now: datetime | None = None) -> pd.DataFrame:
    """Each instance's hourly mean of the metric's period averages over the last 24 hours, from
    the raw tier: the fleet page's small charts. Columns account_id, region, instance_id, hour,
    average."""
    now = naive_utc(now) if now else utc_now()
    choice = choose_tier(now - timedelta(days=1), now, "raw", reader.storage, now)
    with reader.cursor() as conn:
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
    reader: Reader,
    now: datetime | None = None,
) -> pd.DataFrame:
    """The instance's Performance Insights load by wait event over [start, end), within PI's
    retention: columns ts, dimension_key (the wait event), key_type, active_sessions. Empty
    for an instance without PI."""
    now = naive_utc(now) if now else utc_now()
    first, last = check_range(
        parse_time("start", start, now),
        parse_time("end", end, now),
        reader.storage.pi_retention_days,
        now,
        "METRICS_PI_RETENTION_DAYS",
    )
    if not has_table(reader, PI_LOAD.name):  # a warehouse the pipeline has not migrated
        return pd.DataFrame(columns=["ts", "dimension_key", "key_type", "active_sessions"])
    with reader.cursor() as conn:
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
    reader: Reader,
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
    with reader.cursor() as conn:
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


def recent_runs(reader: Reader, limit: int = 20) -> pd.DataFrame:
    """The last runs' figures, newest first."""
    with reader.cursor() as conn:
        return conn.execute(
            f"""
            SELECT finished_at, asset, window_start, window_end, instances, rows_written,
                   datapoints, cloudwatch_requests, pi_requests, throttled_calls,
                   estimated_cost_usd, run_id
            FROM {RUNS.name} ORDER BY finished_at DESC LIMIT $limit
            """,
            {"limit": limit},
        ).df()


def rightsizing_findings(reader: Reader) -> pd.DataFrame:
    """The last rightsizing report, the instances to act on first (under-provisioned, then
    over-provisioned, then storage at risk)."""
    if not has_table(reader, RIGHTSIZING.name):  # a warehouse the pipeline has not migrated
        return pd.DataFrame(columns=RIGHTSIZING.column_names)
    with reader.cursor() as conn:
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
    reader: Reader,
) -> pd.DataFrame:
    """Per hour of [start, end) of the raw tier: the p95 of the CPU's period averages (%) and
    the least freeable memory (bytes), the two figures a rightsizing verdict rests on most.
    Columns hour, cpu_p95, freeable_memory_min."""
    with reader.cursor() as conn:
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
