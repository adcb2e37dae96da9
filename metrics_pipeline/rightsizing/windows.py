"""The rightsizing report's longer evidence: each serving instance over the trailing 14, 30 and
90 days of the hourly tier (AWS Compute Optimizer looks at 14 days by default, up to 93),
saying how much of each window the tier actually holds.

The 3-day verdicts (assets.py) stay on the raw periods; these windows show whether what the
last 3 days say holds over weeks: the busiest hour, the high percentiles, the weekly shape.
No Dagster here: `rightsizing_report` calls these after its own report.
"""

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import duckdb
import pyarrow as pa

from metrics_pipeline.metadata import markdown_table
from metrics_pipeline.rightsizing.serving import NOT_SERVING, SERVING_CTE
from metrics_pipeline.warehouse.schema import HOURLY_TABLE, RIGHTSIZING_WINDOWS_TABLE
from metrics_pipeline.warehouse.sql import in_transaction
from metrics_pipeline.warehouse.tables import RIGHTSIZING_WINDOWS

WINDOW_DAYS: tuple[int, ...] = (14, 30, 90)
MIB = 1024**2
ISO_WEEKDAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")  # 1 to 7


@dataclass(frozen=True)
class WindowEvidence:
    """One instance's figures over one trailing window of the hourly tier: a row of
    `rds_rightsizing_windows` (the column descriptions in warehouse/tables.py say each)."""

    report_time: datetime
    account_id: str
    region: str
    instance_id: str
    window_days: int
    window_start: datetime
    history_days: float  # hours with CPU data / 24
    cpu_p95: float | None  # % (p95 of the hourly p95 values)
    cpu_p99_max: float | None  # % (highest hourly p99)
    peak_hour: datetime  # the hour of the highest hourly CPU average
    peak_hour_cpu: float  # % (that average)
    busiest_weekday: int  # ISO, in the report's time zone, by the mean of the hourly CPU averages
    quietest_weekday: int
    connections_p95: float | None  # p95 of the hourly p95 values
    freeable_memory_min_mib: float | None


def read_windows(
    conn: duckdb.DuckDBPyConnection,
    report_time: datetime,
    windows: Sequence[int] = WINDOW_DAYS,
    time_zone: str = "UTC",
) -> list[WindowEvidence]:
    """The evidence of every serving instance (as the 3-day report counts them) over each
    window of `windows` days ending at `report_time`: the hours of the hourly tier that start
    in [report_time - days, report_time).

    Only windows with at least one hour of CPUUtilization data (an average) make a row; a
    window longer than the history present still does, its `history_days` saying how much it
    held. Ties go to the earliest hour and the lowest weekday, so a report is reproducible.
    Weekdays are those of `time_zone` (METRICS_TIME_ZONE): a Monday in Tokyo starts on
    Sunday in UTC.
    """
    cursor = conn.execute(
        f"""
        WITH {SERVING_CTE},
        spans AS (
            SELECT window_days, $end - to_days(window_days) AS window_start
            FROM (SELECT unnest($windows)::INTEGER AS window_days)
        ), hours AS (
            SELECT h.account_id, h.region, h.instance_id, w.window_days, w.window_start,
                   h.metric, h.hour, h.average, h.minimum, h.p95, h.p99
            FROM spans w
            JOIN {HOURLY_TABLE} h ON h.hour >= w.window_start AND h.hour < $end
            JOIN serving s USING (account_id, region, instance_id)
            WHERE h.metric IN ('CPUUtilization', 'DatabaseConnections', 'FreeableMemory')
        ), cpu AS (
            SELECT * FROM hours WHERE metric = 'CPUUtilization' AND average IS NOT NULL
        ), cpu_figures AS (
            SELECT account_id, region, instance_id, window_days,
                   any_value(window_start) AS window_start,
                   count(DISTINCT hour) / 24.0 AS history_days,
                   quantile_cont(p95, 0.95) AS cpu_p95,
                   max(p99) AS cpu_p99_max,
                   first(hour ORDER BY average DESC, hour) AS peak_hour,
                   max(average) AS peak_hour_cpu
            FROM cpu GROUP BY account_id, region, instance_id, window_days
        ), weekdays AS (
            SELECT account_id, region, instance_id, window_days,
                   isodow((hour AT TIME ZONE 'UTC') AT TIME ZONE $time_zone) AS weekday,
                   avg(average) AS mean
            FROM cpu GROUP BY ALL
        ), shape AS (
            SELECT account_id, region, instance_id, window_days,
                   first(weekday ORDER BY mean DESC, weekday) AS busiest_weekday,
                   first(weekday ORDER BY mean, weekday) AS quietest_weekday
            FROM weekdays GROUP BY ALL
        ), others AS (
            SELECT account_id, region, instance_id, window_days,
                   quantile_cont(p95, 0.95) FILTER (metric = 'DatabaseConnections')
                       AS connections_p95,
                   min(coalesce(minimum, average)) FILTER (metric = 'FreeableMemory') / $mib
                       AS freeable_memory_min_mib
            FROM hours WHERE metric <> 'CPUUtilization' GROUP BY ALL
        )
        SELECT $end AS report_time, account_id, region, instance_id, window_days,
               c.window_start, c.history_days, c.cpu_p95, c.cpu_p99_max, c.peak_hour,
               c.peak_hour_cpu, s.busiest_weekday, s.quietest_weekday, o.connections_p95,
               o.freeable_memory_min_mib
        FROM cpu_figures c
        JOIN shape s USING (account_id, region, instance_id, window_days)
        LEFT JOIN others o USING (account_id, region, instance_id, window_days)
        ORDER BY region, account_id, instance_id, window_days
        """,
        {
            "end": report_time,
            "windows": list(windows),
            "not_serving": list(NOT_SERVING),
            "mib": float(MIB),
            "time_zone": time_zone,
        },
    )
    names = [column[0] for column in cursor.description]
    return [WindowEvidence(**dict(zip(names, row, strict=True))) for row in cursor.fetchall()]


def replace_windows(conn: duckdb.DuckDBPyConnection, rows: Sequence[WindowEvidence]) -> None:
    """The table holds the latest report's windows only; readers never see half of them."""
    records = [asdict(row) for row in rows]
    for record in records:
        RIGHTSIZING_WINDOWS.check_row(record)
    conn.register(
        "window_rows", pa.Table.from_pylist(records, schema=RIGHTSIZING_WINDOWS.arrow_schema())
    )

    def write() -> None:
        conn.execute(f"DELETE FROM {RIGHTSIZING_WINDOWS_TABLE}")
        conn.execute(f"INSERT INTO {RIGHTSIZING_WINDOWS_TABLE} BY NAME SELECT * FROM window_rows")

    try:
        in_transaction(conn, write)
    finally:
        conn.unregister("window_rows")


def _number(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def windows_markdown(rows: Sequence[WindowEvidence], time_zone: str = "UTC") -> str:
    """One row per instance and window, its evidence and how much history it rests on; the
    peak hour and the weekday as read by the clock of `time_zone`."""
    zone = ZoneInfo(time_zone)
    header = (
        "instance", "region", "window days", "history days", "CPU p95 %", "CPU p99 max %",
        f"peak hour ({time_zone})", "peak hour CPU %", f"busiest weekday ({time_zone})",
    )  # fmt: skip
    return markdown_table(
        header,
        (
            (
                w.instance_id,
                w.region,
                w.window_days,
                _number(w.history_days),
                _number(w.cpu_p95),
                _number(w.cpu_p99_max),
                f"{w.peak_hour.replace(tzinfo=UTC).astimezone(zone):%Y-%m-%d %H:%M}",
                _number(w.peak_hour_cpu),
                ISO_WEEKDAYS[w.busiest_weekday - 1],
            )
            for w in rows
        ),
    )
