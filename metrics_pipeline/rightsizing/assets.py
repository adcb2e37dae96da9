"""The rightsizing report: which databases are too big, too small, or filling their storage.

The old system collected metrics to recommend changes to databases from a reliable 3-day
window; this is that recommendation. The evidence of each instance is computed in DuckDB
over the trailing 3 days; the verdicts are pure functions of it (`assess`,
`days_until_full`), so every flag carries the numbers it rests on.
"""

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import Any

import duckdb
import pyarrow as pa
from dagster import (
    AssetExecutionContext,
    AssetSelection,
    Config,
    MaterializeResult,
    MetadataValue,
    asset,
)
from pydantic import Field

from metrics_pipeline.automation import on_cron_and_once_inputs_exist
from metrics_pipeline.catalog import READER
from metrics_pipeline.collection.keys import RDS_INSTANCES, RDS_METRICS
from metrics_pipeline.collection.resources import CollectionResource
from metrics_pipeline.history.keys import RDS_METRICS_HOURLY
from metrics_pipeline.hours import utc_now
from metrics_pipeline.metadata import markdown_table, table_asset
from metrics_pipeline.rightsizing.serving import NOT_SERVING, SERVING_CTE
from metrics_pipeline.rightsizing.verdicts import Verdict
from metrics_pipeline.rightsizing.windows import (
    WINDOW_DAYS,
    read_windows,
    replace_windows,
    windows_markdown,
)
from metrics_pipeline.warehouse.resources import WarehouseResource
from metrics_pipeline.warehouse.schema import (
    CLUSTERS_TABLE,
    METRICS_TABLE,
    RIGHTSIZING_TABLE,
    RIGHTSIZING_WINDOWS_TABLE,
)
from metrics_pipeline.warehouse.sql import in_transaction
from metrics_pipeline.warehouse.tables import RIGHTSIZING

WINDOW = timedelta(days=3)
MIB = 1024**2
GIB = 1024**3


class RightsizingConfig(Config):
    """The thresholds, in the launchpad so operators can tune them without a deploy."""

    min_coverage: float = Field(
        default=0.8,
        description=(
            "Share of the window's periods that must have CPU data; below it the verdict is "
            "'insufficient data' rather than a guess."
        ),
    )
    cpu_low_pct: float = Field(
        default=20.0, description="Over-provisioned needs CPU p95 below this (%)."
    )
    connections_low: float = Field(
        default=20.0, description="Over-provisioned also needs connections p95 below this."
    )
    cpu_high_pct: float = Field(
        default=80.0, description="Under-provisioned when CPU p95 is above this (%)."
    )
    freeable_memory_low_mib: float = Field(
        default=256.0, description="Under-provisioned when freeable memory fell below this (MiB)."
    )
    swap_high_mib: float = Field(
        default=256.0, description="Under-provisioned when swap usage rose above this (MiB)."
    )
    disk_queue_high: float = Field(
        default=10.0, description="Under-provisioned when disk queue depth p95 is above this."
    )
    storage_horizon_days: float = Field(
        default=14.0,
        description="Storage is at risk when, at the window's trend, it fills within these days.",
    )
    acu_high_pct: float = Field(
        default=90.0,
        description=(
            "An Aurora Serverless v2 instance is under-provisioned when its ACU utilization "
            "p95 (capacity used of the cluster's maximum) is above this (%)."
        ),
    )
    db_load_high_per_vcpu: float = Field(
        default=1.0,
        description=(
            "An instance with Performance Insights on is under-provisioned when its DB load "
            "p95 is above this many active sessions per vCPU (sessions wait for a CPU)."
        ),
    )
    reader_idle_connections: float = Field(
        default=1.0,
        description=(
            "An Aurora reader takes no load when its connections p95 is below this (and its "
            "CPU p95 below cpu_low_pct)."
        ),
    )


def days_until_full(free_gib: float | None, trend_gib_per_day: float | None) -> float | None:
    """Days until free storage reaches zero if it keeps falling as it did; None if it is not
    falling (or unknown), since a flat or growing free space never runs out."""
    if free_gib is None or trend_gib_per_day is None or trend_gib_per_day >= 0:
        return None
    return free_gib / -trend_gib_per_day


@dataclass(frozen=True)
class Evidence:
    """One instance's figures over the window; None where the metric has no data."""

    account_id: str
    region: str
    instance_id: str
    instance_class: str | None
    engine: str | None
    periods: int  # periods with CPU data
    coverage: float  # periods / periods the window holds
    cpu_p95: float | None  # % (of the period averages, as every p95 here)
    connections_p95: float | None
    freeable_memory_min_mib: float | None
    swap_max_mib: float | None
    disk_queue_p95: float | None
    free_storage_gib: float | None  # the newest period's
    storage_trend_gib_per_day: float | None  # least-squares slope; negative when filling
    cluster_role: str | None = None  # writer or reader in an Aurora cluster
    serverless_min_acu: float | None = None  # its Serverless v2 cluster's range
    serverless_max_acu: float | None = None
    acu_p95: float | None = None  # ServerlessDatabaseCapacity
    acu_utilization_p95: float | None = None  # ACUUtilization, % of the maximum
    # DBLoadRelativeToNumVCPUs (Performance Insights on), a period without load counting 0.
    db_load_per_vcpu_p95: float | None = None

    @property
    def serverless(self) -> bool:
        """A db.serverless instance has no fixed size: its range is what can change."""
        return self.serverless_max_acu is not None

    @property
    def storage_days_left(self) -> float | None:
        return days_until_full(self.free_storage_gib, self.storage_trend_gib_per_day)


@dataclass(frozen=True)
class Finding:
    verdict: Verdict
    storage_at_risk: bool
    reasons: tuple[str, ...]  # each flag with the number that raised it


def _above(label: str, value: float | None, limit: float, unit: str = "") -> str | None:
    if value is None or value <= limit:
        return None
    return f"{label} {value:.1f}{unit} > {limit:g}{unit}"


def _below(label: str, value: float | None, limit: float, unit: str = "") -> str | None:
    if value is None or value >= limit:
        return None
    return f"{label} {value:.1f}{unit} < {limit:g}{unit}"


def _filling(e: Evidence, horizon_days: float) -> str | None:
    free, trend = e.free_storage_gib, e.storage_trend_gib_per_day
    if free is None or trend is None:
        return None
    days_left = days_until_full(free, trend)
    if days_left is None or days_left > horizon_days:
        return None
    return (
        f"free storage {free:.1f} GiB falling {-trend:.2f} GiB/day: "
        f"full in {days_left:.1f} days <= {horizon_days:g}"
    )


def assess(evidence: Evidence, thresholds: RightsizingConfig) -> Finding:
    """The verdict and its reasons.

    Any sign of pressure makes an instance under-provisioned, even when its CPU is idle (a
    memory-starved database is not too big). Over-provisioned needs both CPU and connections
    known and low. Storage at risk is a separate flag. Too little data decides nothing.
    """
    e, t = evidence, thresholds
    if e.coverage < t.min_coverage:
        reason = f"CPU data for {e.coverage:.0%} of the window < {t.min_coverage:.0%}"
        return Finding(Verdict.INSUFFICIENT_DATA, False, (reason,))
    pressure = [
        reason
        for reason in (
            _above("CPU p95", e.cpu_p95, t.cpu_high_pct, "%"),
            _below(
                "freeable memory min", e.freeable_memory_min_mib, t.freeable_memory_low_mib, " MiB"
            ),
            _above("swap max", e.swap_max_mib, t.swap_high_mib, " MiB"),
            _above("disk queue p95", e.disk_queue_p95, t.disk_queue_high),
            _above(
                "DB load p95", e.db_load_per_vcpu_p95, t.db_load_high_per_vcpu, " sessions/vCPU"
            ),
        )
        if reason
    ]
    at_max = _above("ACU utilization p95", e.acu_utilization_p95, t.acu_high_pct, "%")
    if at_max:
        pressure.append(f"{at_max}: raise the maximum ACU ({e.serverless_max_acu:g})")
    idle_cpu = _below("CPU p95", e.cpu_p95, t.cpu_low_pct, "%")
    few_connections = _below("connections p95", e.connections_p95, t.connections_low)
    idle = aurora_idle(e, t, idle_cpu) if e.cluster_role or e.serverless else None
    if pressure:
        verdict, reasons = Verdict.UNDER, pressure
    elif idle is not None:
        verdict, reasons = Verdict.OVER, [idle]
    elif idle_cpu and few_connections and not e.serverless:
        verdict, reasons = Verdict.OVER, [idle_cpu, few_connections]
    else:
        verdict, reasons = Verdict.OK, []
    filling = _filling(e, t.storage_horizon_days)
    if filling:
        reasons.append(filling)
    return Finding(verdict, filling is not None, tuple(reasons))


def aurora_idle(e: Evidence, t: RightsizingConfig, idle_cpu: str | None) -> str | None:
    """What an Aurora instance's idleness says to change: a reader that takes no load is not
    needed (or not used: reads go elsewhere); a Serverless v2 instance that never rises above
    its minimum capacity could have a lower one. A db.serverless instance has no class to make
    smaller, so idle CPU alone says nothing of it."""
    if e.cluster_role == READER and idle_cpu:
        unused = _below("connections p95", e.connections_p95, t.reader_idle_connections)
        if unused:
            return f"reader takes no load: {unused}, {idle_cpu}"
    floor = e.serverless_min_acu or MIN_ACU
    if idle_cpu and floor > MIN_ACU and e.acu_p95 is not None and e.acu_p95 <= floor:
        return f"ACU p95 {e.acu_p95:g} at its minimum {floor:g}: lower the minimum ACU"
    return None


# The lowest minimum capacity of Aurora Serverless v2 that keeps an instance running.
MIN_ACU = 0.5


def read_evidence(
    conn: duckdb.DuckDBPyConnection, start: datetime, end: datetime, period_seconds: int
) -> list[Evidence]:
    """The evidence of every serving instance for [start, end).

    Only instances the latest discovery listed (a deleted one keeps an older last_seen) and
    that are not stopped count. Extremes fall back to the period averages when the Minimum
    or Maximum statistic was not collected.
    """
    cursor = conn.execute(
        f"""
        WITH {SERVING_CTE}, windowed AS (
            SELECT * FROM {METRICS_TABLE} WHERE ts >= $start AND ts < $end
        ), vcpu_load AS (
            -- DB load is published only while there is some: a CPU period without it is 0.
            SELECT c.account_id, c.region, c.instance_id,
                   quantile_cont(coalesce(l.average, 0), 0.95) AS db_load_per_vcpu_p95
            FROM windowed c LEFT JOIN windowed l
              ON l.metric = 'DBLoadRelativeToNumVCPUs' AND l.account_id = c.account_id
             AND l.region = c.region AND l.instance_id = c.instance_id AND l.ts = c.ts
            WHERE c.metric = 'CPUUtilization'
            GROUP BY ALL HAVING count(l.average) > 0
        )
        SELECT s.account_id, s.region, s.instance_id, s.instance_class, s.engine,
               count(m.average) FILTER (m.metric = 'CPUUtilization') AS periods,
               count(m.average) FILTER (m.metric = 'CPUUtilization') / $expected AS coverage,
               quantile_cont(m.average, 0.95) FILTER (m.metric = 'CPUUtilization') AS cpu_p95,
               quantile_cont(m.average, 0.95) FILTER (m.metric = 'DatabaseConnections')
                   AS connections_p95,
               min(coalesce(m.minimum, m.average)) FILTER (m.metric = 'FreeableMemory') / $mib
                   AS freeable_memory_min_mib,
               max(coalesce(m.maximum, m.average)) FILTER (m.metric = 'SwapUsage') / $mib
                   AS swap_max_mib,
               quantile_cont(m.average, 0.95) FILTER (m.metric = 'DiskQueueDepth')
                   AS disk_queue_p95,
               arg_max(m.average, m.ts)
                   FILTER (m.metric = 'FreeStorageSpace' AND m.average IS NOT NULL) / $gib
                   AS free_storage_gib,
               regr_slope(m.average, date_diff('second', $start, m.ts))
                   FILTER (m.metric = 'FreeStorageSpace') * 86400 / $gib
                   AS storage_trend_gib_per_day,
               s.cluster_role, c.serverless_min_acu, c.serverless_max_acu,
               quantile_cont(m.average, 0.95) FILTER (m.metric = 'ServerlessDatabaseCapacity')
                   AS acu_p95,
               quantile_cont(m.average, 0.95) FILTER (m.metric = 'ACUUtilization')
                   AS acu_utilization_p95,
               v.db_load_per_vcpu_p95
        FROM serving s LEFT JOIN windowed m USING (account_id, region, instance_id)
        LEFT JOIN vcpu_load v USING (account_id, region, instance_id)
        LEFT JOIN {CLUSTERS_TABLE} c USING (account_id, region, cluster_id)
        GROUP BY ALL ORDER BY s.region, s.account_id, s.instance_id
        """,
        {
            "start": start,
            "end": end,
            "not_serving": list(NOT_SERVING),
            "expected": (end - start).total_seconds() / period_seconds,
            "mib": float(MIB),
            "gib": float(GIB),
        },
    )
    names = [column[0] for column in cursor.description]
    return [Evidence(**dict(zip(names, row, strict=True))) for row in cursor.fetchall()]


def replace_report(conn: duckdb.DuckDBPyConnection, rows: Sequence[dict[str, Any]]) -> None:
    """The table holds the latest report only; readers never see half of one."""
    for row in rows:
        RIGHTSIZING.check_row(row)
    conn.register(
        "report_rows", pa.Table.from_pylist(list(rows), schema=RIGHTSIZING.arrow_schema())
    )

    def write() -> None:
        conn.execute(f"DELETE FROM {RIGHTSIZING_TABLE}")
        conn.execute(f"INSERT INTO {RIGHTSIZING_TABLE} BY NAME SELECT * FROM report_rows")

    try:
        in_transaction(conn, write)
    finally:
        conn.unregister("report_rows")


def _number(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def flagged_markdown(assessed: Sequence[tuple[Evidence, Finding]]) -> str:
    """One row per instance with something to act on, its evidence beside its flags."""
    header = (
        "instance", "region", "class", "verdict", "storage at risk", "CPU p95 %",
        "connections p95", "freeable memory min MiB", "swap max MiB", "disk queue p95",
        "free storage GiB", "GiB/day", "days left", "reasons",
    )  # fmt: skip
    rows = [
        (
            e.instance_id,
            e.region,
            e.instance_class or "-",
            f.verdict,
            "yes" if f.storage_at_risk else "no",
            _number(e.cpu_p95),
            _number(e.connections_p95),
            _number(e.freeable_memory_min_mib),
            _number(e.swap_max_mib),
            _number(e.disk_queue_p95),
            _number(e.free_storage_gib),
            _number(e.storage_trend_gib_per_day, 2),
            _number(e.storage_days_left),
            "; ".join(f.reasons),
        )
        for e, f in assessed
        if f.verdict in (Verdict.OVER, Verdict.UNDER) or f.storage_at_risk
    ]
    return markdown_table(header, rows)


@asset(
    **table_asset(RIGHTSIZING_TABLE),
    deps=[RDS_INSTANCES, RDS_METRICS, RDS_METRICS_HOURLY],
    # The hourly tier lands a settled day at a time: neither the first report nor the hourly
    # one waits for it (the windows use what it holds); a history run recomputes the report.
    automation_condition=on_cron_and_once_inputs_exist(
        "10 * * * *", slow_inputs=AssetSelection.assets(RDS_METRICS_HOURLY)
    ),
    description=(
        f"Rightsizing from the trailing {WINDOW.days} days (DuckDB table `{RIGHTSIZING_TABLE}`, "
        "one row per serving instance): over-provisioned (low CPU p95 and connections), "
        "under-provisioned (high CPU p95, low freeable memory, swap, high disk queue), "
        "storage that fills within the horizon at its trend, each with its evidence. "
        "Aurora: a Serverless v2 instance (db.serverless, no fixed size) is judged by its "
        "capacity range (ACU utilization p95 near the maximum; never above a minimum that "
        "could be lower), a reader by whether it takes load; Aurora's instances have no "
        "storage of their own (the cluster volume is in rds_cluster_metrics). "
        f"Beside it, table `{RIGHTSIZING_WINDOWS_TABLE}`: each serving instance's evidence over "
        f"the trailing {', '.join(map(str, WINDOW_DAYS))} days of the hourly tier (CPU p95 and "
        "p99, peak hour, busiest and quietest weekday), with the days of history each holds. "
        "Hourly, after the next collection; thresholds are run config."
    ),
)
def rightsizing_report(
    context: AssetExecutionContext,
    config: RightsizingConfig,
    collection: CollectionResource,
    warehouse: WarehouseResource,
) -> MaterializeResult:
    report_time = utc_now()
    # A warehouse keeping fewer days than the window is judged on what it keeps.
    start = report_time - min(WINDOW, timedelta(days=warehouse.retention_days))
    with warehouse.reader() as conn:
        evidence = read_evidence(conn, start, report_time, collection.period_seconds)
        windows = read_windows(conn, report_time, time_zone=collection.time_zone)
    assessed = [(e, assess(e, config)) for e in evidence]
    rows = [
        {
            "report_time": report_time,
            "window_start": start,
            "window_end": report_time,
            **asdict(e),
            "verdict": str(f.verdict),
            "storage_at_risk": f.storage_at_risk,
            "reasons": "; ".join(f.reasons),
            "storage_days_left": e.storage_days_left,
        }
        for e, f in assessed
    ]
    with warehouse.connect() as conn:
        replace_report(conn, rows)
        replace_windows(conn, windows)
    counts = {
        "instances_assessed": len(assessed),
        "over_provisioned": sum(f.verdict is Verdict.OVER for _, f in assessed),
        "under_provisioned": sum(f.verdict is Verdict.UNDER for _, f in assessed),
        "storage_at_risk": sum(f.storage_at_risk for _, f in assessed),
        "insufficient_data": sum(f.verdict is Verdict.INSUFFICIENT_DATA for _, f in assessed),
    }
    context.log.info(", ".join(f"{name}: {count}" for name, count in counts.items()))
    return MaterializeResult(
        metadata={
            "dagster/row_count": len(rows),  # the report replaces the whole table
            # Each finding with the chart that justifies it.
            "dashboard": MetadataValue.url(f"{collection.dashboard_url}/rightsizing"),
            **counts,
            "window_start": start.isoformat(),
            "window_end": report_time.isoformat(),
            "flagged": MetadataValue.md(flagged_markdown(assessed)),
            "window_rows": len(windows),
            "windows": MetadataValue.md(windows_markdown(windows, collection.time_zone)),
        }
    )
