"""The DuckDB warehouse: table names, schema, and the transactional writes of each asset.

Every write is one transaction that replaces exactly the rows it owns (a window of hours
for a set of instances), so re-running is idempotent and a crash leaves the old rows or
the new ones, never a mix.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa

from metrics_pipeline.collection.cloudwatch import Instance
from metrics_pipeline.collection.inventory import InventoryEntry
from metrics_pipeline.hours import hour_starts, is_settled
from metrics_pipeline.settings import RDS_METRIC_UNITS, STATISTIC_COLUMNS

# New warehouse files are written in a storage format that older DuckDB clients read
# (analysts' CLIs and notebooks lag behind the pipeline's DuckDB); the snapshot is a copy.
STORAGE_COMPATIBILITY_VERSION = "v1.2.0"

INSTANCES_TABLE = "rds_instances"
METRICS_TABLE = "rds_metrics"
FETCHES_TABLE = "rds_metric_fetches"
RUNS_TABLE = "pipeline_runs"
HOURLY_TABLE = "rds_metrics_hourly"
DAILY_TABLE = "rds_metrics_daily"
RIGHTSIZING_TABLE = "rds_rightsizing"
LATEST_VIEW = "rds_latest"
WIDE_VIEW = "rds_metrics_wide"

_ROLLUP_COLUMNS = """
    account_id VARCHAR NOT NULL,
    region VARCHAR NOT NULL,
    instance_id VARCHAR NOT NULL,
    metric VARCHAR NOT NULL,
    unit VARCHAR,
    average DOUBLE,
    minimum DOUBLE,
    maximum DOUBLE,
    p50 DOUBLE,
    p95 DOUBLE,
    p99 DOUBLE,
    sample_count DOUBLE,
    periods INTEGER NOT NULL,
    completeness DOUBLE NOT NULL,
    computed_at TIMESTAMP NOT NULL,
"""

# The wide view: one column per default metric, its period average.
WIDE_VIEW_COLUMNS = {
    "CPUUtilization": "cpu_utilization",
    "DatabaseConnections": "database_connections",
    "FreeableMemory": "freeable_memory",
    "FreeStorageSpace": "free_storage_space",
    "ReadIOPS": "read_iops",
    "WriteIOPS": "write_iops",
    "ReadLatency": "read_latency",
    "WriteLatency": "write_latency",
    "ReadThroughput": "read_throughput",
    "WriteThroughput": "write_throughput",
    "NetworkReceiveThroughput": "network_receive_throughput",
    "NetworkTransmitThroughput": "network_transmit_throughput",
    "DiskQueueDepth": "disk_queue_depth",
    "SwapUsage": "swap_usage",
}
WIDE_COLUMNS = ",\n".join(
    f"    max(average) FILTER (WHERE metric = '{metric}') AS {column}"
    for metric, column in WIDE_VIEW_COLUMNS.items()
)

SCHEMA_SQL = f"""
CREATE TABLE IF NOT EXISTS {INSTANCES_TABLE} (
    account_id VARCHAR NOT NULL,
    region VARCHAR NOT NULL,
    instance_id VARCHAR NOT NULL,
    engine VARCHAR,
    engine_version VARCHAR,
    instance_class VARCHAR,
    allocated_storage_gb INTEGER,
    multi_az BOOLEAN,
    status VARCHAR,
    create_time TIMESTAMP,
    tags MAP(VARCHAR, VARCHAR),
    first_seen TIMESTAMP NOT NULL,
    last_seen TIMESTAMP NOT NULL,
    PRIMARY KEY (account_id, region, instance_id)
);
CREATE TABLE IF NOT EXISTS {METRICS_TABLE} (
    ts TIMESTAMP NOT NULL,
    account_id VARCHAR NOT NULL,
    region VARCHAR NOT NULL,
    instance_id VARCHAR NOT NULL,
    metric VARCHAR NOT NULL,
    unit VARCHAR,
    average DOUBLE,
    minimum DOUBLE,
    maximum DOUBLE,
    sum DOUBLE,
    sample_count DOUBLE,
    collected_at TIMESTAMP NOT NULL,
    PRIMARY KEY (account_id, region, instance_id, metric, ts)
);
CREATE TABLE IF NOT EXISTS {FETCHES_TABLE} (
    hour TIMESTAMP NOT NULL,
    account_id VARCHAR NOT NULL,
    region VARCHAR NOT NULL,
    instance_id VARCHAR NOT NULL,
    fetched_at TIMESTAMP NOT NULL,
    datapoints BIGINT NOT NULL,
    settled BOOLEAN NOT NULL,
    run_id VARCHAR,
    PRIMARY KEY (account_id, region, instance_id, hour)
);
CREATE TABLE IF NOT EXISTS {RUNS_TABLE} (
    run_id VARCHAR PRIMARY KEY,
    asset VARCHAR NOT NULL,
    window_start TIMESTAMP NOT NULL,
    window_end TIMESTAMP NOT NULL,
    finished_at TIMESTAMP NOT NULL,
    instances INTEGER,
    rows_written BIGINT,
    rows_replaced BIGINT,
    datapoints BIGINT,
    settled_hours INTEGER,
    cloudwatch_requests INTEGER,
    minimum_requests INTEGER,
    metrics_requested BIGINT,
    estimated_cost_usd DOUBLE,
    throttled_calls INTEGER,
    retried_calls INTEGER,
    fetch_seconds DOUBLE,
    lock_wait_seconds DOUBLE,
    write_seconds DOUBLE,
    cpu_seconds DOUBLE,
    peak_memory_mib DOUBLE,
    skipped_datapoints BIGINT
);
CREATE TABLE IF NOT EXISTS {HOURLY_TABLE} (
    hour TIMESTAMP NOT NULL,{_ROLLUP_COLUMNS}
    PRIMARY KEY (account_id, region, instance_id, metric, hour)
);
CREATE TABLE IF NOT EXISTS {DAILY_TABLE} (
    day TIMESTAMP NOT NULL,{_ROLLUP_COLUMNS}
    PRIMARY KEY (account_id, region, instance_id, metric, day)
);
CREATE TABLE IF NOT EXISTS {RIGHTSIZING_TABLE} (
    report_time TIMESTAMP NOT NULL,
    window_start TIMESTAMP NOT NULL,
    window_end TIMESTAMP NOT NULL,
    account_id VARCHAR NOT NULL,
    region VARCHAR NOT NULL,
    instance_id VARCHAR NOT NULL,
    instance_class VARCHAR,
    engine VARCHAR,
    verdict VARCHAR NOT NULL,
    storage_at_risk BOOLEAN NOT NULL,
    reasons VARCHAR NOT NULL,
    periods INTEGER NOT NULL,
    coverage DOUBLE NOT NULL,
    cpu_p95 DOUBLE,
    connections_p95 DOUBLE,
    freeable_memory_min_mib DOUBLE,
    swap_max_mib DOUBLE,
    disk_queue_p95 DOUBLE,
    free_storage_gib DOUBLE,
    storage_trend_gib_per_day DOUBLE,
    storage_days_left DOUBLE,
    PRIMARY KEY (account_id, region, instance_id)
);
CREATE OR REPLACE VIEW {LATEST_VIEW} AS
SELECT account_id, region, instance_id, metric, any_value(unit) AS unit, max(ts) AS ts,
       arg_max(average, ts) AS average, arg_max(minimum, ts) AS minimum,
       arg_max(maximum, ts) AS maximum, arg_max(sum, ts) AS sum,
       arg_max(sample_count, ts) AS sample_count
FROM {METRICS_TABLE} GROUP BY account_id, region, instance_id, metric;
CREATE OR REPLACE VIEW {WIDE_VIEW} AS
SELECT ts, account_id, region, instance_id,
{WIDE_COLUMNS}
FROM {METRICS_TABLE} GROUP BY ts, account_id, region, instance_id;
"""

INVENTORY_SCHEMA = pa.schema(
    [
        ("account_id", pa.string()),
        ("region", pa.string()),
        ("instance_id", pa.string()),
        ("engine", pa.string()),
        ("engine_version", pa.string()),
        ("instance_class", pa.string()),
        ("allocated_storage_gb", pa.int32()),
        ("multi_az", pa.bool_()),
        ("status", pa.string()),
        ("create_time", pa.timestamp("us")),
        ("tags", pa.map_(pa.string(), pa.string())),
    ]
)
INSTANCE_KEY_SCHEMA = pa.schema(
    [("account_id", pa.string()), ("region", pa.string()), ("instance_id", pa.string())]
)


def ensure_schema(conn: duckdb.DuckDBPyConnection) -> None:
    conn.execute(SCHEMA_SQL)


def base_tables(conn: duckdb.DuckDBPyConnection) -> list[str]:
    """The tables (not views) of the connection's current database, by name."""
    rows = conn.execute(
        "SELECT table_name FROM information_schema.tables "
        "WHERE table_catalog = current_database() AND table_type = 'BASE TABLE' ORDER BY 1"
    ).fetchall()
    return [row[0] for row in rows]


def table_exists(conn: duckdb.DuckDBPyConnection, table: str) -> bool:
    found = conn.execute(
        "SELECT count(*) FROM information_schema.tables WHERE table_name = ?", [table]
    ).fetchone()
    return bool(found and found[0])


def in_transaction(conn: duckdb.DuckDBPyConnection, statements: Any) -> Any:
    conn.begin()
    try:
        result = statements()
    except BaseException:
        conn.rollback()
        raise
    conn.commit()
    return result


def upsert_instances(
    conn: duckdb.DuckDBPyConnection, records: Sequence[dict[str, Any]], seen_at: datetime
) -> int:
    """Adds new instances and refreshes known ones; first_seen never moves, last_seen does."""
    ensure_schema(conn)
    discovered = pa.Table.from_pylist(
        [{**r, "tags": list(r["tags"].items())} for r in records], schema=INVENTORY_SCHEMA
    )
    conn.register("discovered", discovered)
    columns = ", ".join(INVENTORY_SCHEMA.names)
    updates = ", ".join(f"{c} = excluded.{c}" for c in INVENTORY_SCHEMA.names[3:])

    def write() -> int:
        conn.execute(
            f"""
            INSERT INTO {INSTANCES_TABLE} ({columns}, first_seen, last_seen)
            SELECT {columns}, $seen, $seen FROM discovered
            ON CONFLICT (account_id, region, instance_id)
            DO UPDATE SET {updates}, last_seen = excluded.last_seen
            """,
            {"seen": seen_at},
        )
        return len(records)

    try:
        return in_transaction(conn, write)
    finally:
        conn.unregister("discovered")


def read_inventory(
    conn: duckdb.DuckDBPyConnection, regions: Sequence[str] | None = None
) -> list[InventoryEntry]:
    """The inventory of the collected regions (all when None), oldest key first; empty before
    discovery."""
    if not table_exists(conn, INSTANCES_TABLE):
        return []
    rows = conn.execute(
        f"""
        SELECT account_id, region, instance_id, create_time, first_seen, last_seen, status
        FROM {INSTANCES_TABLE}
        WHERE $regions::VARCHAR[] IS NULL OR list_contains($regions::VARCHAR[], region)
        ORDER BY region, account_id, instance_id
        """,
        {"regions": None if regions is None else list(regions)},
    ).fetchall()
    return [InventoryEntry(Instance(*row[:3]), *row[3:]) for row in rows]


def sql_literal(value: object) -> str:
    return "'" + str(value).replace("'", "''") + "'"


def _received_sql(spool_files: Sequence[Path]) -> str:
    """Every spooled datapoint of a target instance, as CloudWatch sent it."""
    if not spool_files:
        return (
            "SELECT NULL::VARCHAR AS account_id, NULL::VARCHAR AS region, "
            "NULL::VARCHAR AS instance_id, NULL::VARCHAR AS metric, "
            "NULL::VARCHAR AS statistic, NULL::TIMESTAMP AS ts, NULL::DOUBLE AS value WHERE false"
        )
    files = ", ".join(sql_literal(path) for path in spool_files)
    return (
        f"SELECT s.* FROM read_parquet([{files}]) s "
        "JOIN targets USING (account_id, region, instance_id)"
    )


def _staged_sql(start: datetime, end: datetime) -> str:
    """The received datapoints worth storing: in the window, a number, one value per key.

    A key (instance, metric, statistic, period) that came back twice with different values
    is left out rather than guessed; exact repeats collapse to one. Written with literals
    because DuckDB views take no parameters; views are read without holding the data.
    """
    in_window = (
        f"ts >= TIMESTAMP {sql_literal(start.isoformat())} "
        f"AND ts < TIMESTAMP {sql_literal(end.isoformat())} AND value IS NOT NULL"
    )
    key = "account_id, region, instance_id, metric, statistic, ts"
    return f"""
        SELECT DISTINCT {key}, value FROM received
        ANTI JOIN (
            SELECT {key} FROM received WHERE {in_window}
            GROUP BY ALL HAVING count(DISTINCT value) > 1
        ) conflicts USING ({key})
        WHERE {in_window}
    """


@dataclass(frozen=True)
class MetricsWrite:
    rows_written: int
    rows_replaced: int
    datapoints: int
    hours: int
    settled_hours: int
    skipped: dict[str, int]  # datapoints received but not stored, by reason


def replace_metrics(
    conn: duckdb.DuckDBPyConnection,
    *,
    spool_files: Sequence[Path],
    targets: Sequence[Instance],
    start: datetime,
    end: datetime,
    fetched_at: datetime,
    settle_delay: timedelta,
    run_id: str,
) -> MetricsWrite:
    """Replaces the targets' metric rows and fetch log entries of [start, end) in one go.

    Spooled datapoints are pivoted here (one row per key, one column per statistic) and
    anything outside the window, for another instance, or NaN is left out.
    """
    ensure_schema(conn)
    hours = hour_starts(start, end)
    conn.register(
        "targets",
        pa.Table.from_pylist([vars(t) for t in targets], schema=INSTANCE_KEY_SCHEMA),
    )
    conn.register(
        "fetched_hours",
        pa.table(
            {
                "hour": pa.array(hours, pa.timestamp("us")),
                "settled": [is_settled(h, fetched_at, settle_delay) for h in hours],
            }
        ),
    )
    conn.register(
        "metric_units",
        pa.table({"metric": list(RDS_METRIC_UNITS), "unit": list(RDS_METRIC_UNITS.values())}),
    )
    received, staged = _received_sql(spool_files), _staged_sql(start, end)
    pivots = ",\n".join(
        f"any_value(value) FILTER (WHERE statistic = '{stat}') AS {column}"
        for stat, column in STATISTIC_COLUMNS.items()
    )

    def write() -> MetricsWrite:
        conn.execute(f"CREATE OR REPLACE TEMP VIEW received AS {received}")
        conn.execute(f"CREATE OR REPLACE TEMP VIEW staged AS {staged}")
        replaced = conn.execute(
            f"""
            DELETE FROM {METRICS_TABLE} m USING targets t
            WHERE m.account_id = t.account_id AND m.region = t.region
              AND m.instance_id = t.instance_id AND m.ts >= $start AND m.ts < $end
            """,
            {"start": start, "end": end},
        ).fetchone()
        written = conn.execute(
            f"""
            INSERT INTO {METRICS_TABLE}
            SELECT ts, account_id, region, instance_id, metric, u.unit,
                   {pivots},
                   $collected_at AS collected_at
            FROM staged LEFT JOIN metric_units u USING (metric)
            GROUP BY ts, account_id, region, instance_id, metric, u.unit
            """,
            {"collected_at": fetched_at},
        ).fetchone()
        conn.execute(
            f"""
            DELETE FROM {FETCHES_TABLE} f USING targets t
            WHERE f.account_id = t.account_id AND f.region = t.region
              AND f.instance_id = t.instance_id AND f.hour >= $start AND f.hour < $end
            """,
            {"start": start, "end": end},
        )
        conn.execute(
            f"""
            INSERT INTO {FETCHES_TABLE}
            SELECT h.hour, t.account_id, t.region, t.instance_id, $fetched_at,
                   coalesce(c.datapoints, 0), h.settled, $run_id
            FROM targets t CROSS JOIN fetched_hours h
            LEFT JOIN (
                SELECT account_id, region, instance_id, date_trunc('hour', ts) AS hour,
                       count(*) AS datapoints
                FROM staged GROUP BY ALL
            ) c USING (account_id, region, instance_id, hour)
            """,
            {"fetched_at": fetched_at, "run_id": run_id},
        )
        [(datapoints,)] = conn.execute("SELECT count(*) FROM staged").fetchall()
        [(nan, outside, total_in_window)] = conn.execute(
            """
            SELECT count(*) FILTER (value IS NULL),
                   count(*) FILTER (value IS NOT NULL AND (ts < $start OR ts >= $end)),
                   count(*) FILTER (value IS NOT NULL AND ts >= $start AND ts < $end)
            FROM received
            """,
            {"start": start, "end": end},
        ).fetchall()
        conn.execute("DROP VIEW staged")
        conn.execute("DROP VIEW received")
        return MetricsWrite(
            rows_written=int(written[0]) if written else 0,
            rows_replaced=int(replaced[0]) if replaced else 0,
            datapoints=int(datapoints),
            hours=len(hours),
            settled_hours=sum(is_settled(h, fetched_at, settle_delay) for h in hours),
            skipped={
                "not_a_number": int(nan),
                "outside_window": int(outside),
                "repeated_or_conflicting": int(total_in_window) - int(datapoints),
            },
        )

    try:
        return in_transaction(conn, write)
    finally:
        for name in ("targets", "fetched_hours", "metric_units"):
            conn.unregister(name)


def settled_fetches(
    conn: duckdb.DuckDBPyConnection, start: datetime, end: datetime
) -> set[tuple[Instance, datetime]]:
    """(instance, hour) pairs of [start, end) whose data was fetched after the hour settled."""
    if not table_exists(conn, FETCHES_TABLE):
        return set()
    rows = conn.execute(
        f"""
        SELECT account_id, region, instance_id, hour FROM {FETCHES_TABLE}
        WHERE settled AND hour >= $start AND hour < $end
        """,
        {"start": start, "end": end},
    ).fetchall()
    return {(Instance(*row[:3]), row[3]) for row in rows}


# Every table that holds time series, with its time column: what retention trims.
TIME_SERIES_TABLES: dict[str, str] = {
    METRICS_TABLE: "ts",
    FETCHES_TABLE: "hour",
    HOURLY_TABLE: "hour",
    DAILY_TABLE: "day",
    RUNS_TABLE: "finished_at",
}


@dataclass(frozen=True)
class TableTrim:
    table: str
    rows: int
    hours: list[datetime]


def drop_rows_before(conn: duckdb.DuckDBPyConnection, cutoff: datetime) -> list[TableTrim]:
    """Deletes what is older than `cutoff` from every time-series table, a transaction each."""
    ensure_schema(conn)
    trims = []
    for table, column in TIME_SERIES_TABLES.items():

        def trim(table: str = table, column: str = column) -> TableTrim:
            hours = [
                row[0]
                for row in conn.execute(
                    f"SELECT DISTINCT date_trunc('hour', {column}) FROM {table} "
                    f"WHERE {column} < $cutoff ORDER BY 1",
                    {"cutoff": cutoff},
                ).fetchall()
            ]
            deleted = conn.execute(
                f"DELETE FROM {table} WHERE {column} < $cutoff", {"cutoff": cutoff}
            ).fetchone()
            return TableTrim(table, int(deleted[0]) if deleted else 0, hours)

        trims.append(in_transaction(conn, trim))
    return trims


ROLLUP_TIME_COLUMNS = {HOURLY_TABLE: ("hour", "hour"), DAILY_TABLE: ("day", "day")}


def replace_rollup(
    conn: duckdb.DuckDBPyConnection,
    table: str,
    start: datetime,
    end: datetime,
    periods_per_bucket: int,
    computed_at: datetime,
) -> int:
    """Recomputes `table` for [start, end) from rds_metrics in one transaction.

    Percentiles are of the period averages; completeness is periods present over periods
    expected in the bucket (an hour or a day).
    """
    ensure_schema(conn)
    column, unit = ROLLUP_TIME_COLUMNS[table]

    def write() -> int:
        conn.execute(
            f"DELETE FROM {table} WHERE {column} >= $start AND {column} < $end",
            {"start": start, "end": end},
        )
        inserted = conn.execute(
            f"""
            INSERT INTO {table}
            SELECT date_trunc('{unit}', ts) AS {column}, account_id, region, instance_id,
                   metric, any_value(unit), avg(average), min(minimum), max(maximum),
                   quantile_cont(average, 0.5), quantile_cont(average, 0.95),
                   quantile_cont(average, 0.99), sum(sample_count), count(*),
                   count(*) / $expected, $computed_at
            FROM {METRICS_TABLE}
            WHERE ts >= $start AND ts < $end
            GROUP BY ALL
            """,
            {
                "start": start,
                "end": end,
                "expected": float(periods_per_bucket),
                "computed_at": computed_at,
            },
        ).fetchone()
        return int(inserted[0]) if inserted else 0

    return in_transaction(conn, write)


def rows_per_instance_hour(
    conn: duckdb.DuckDBPyConnection, start: datetime, end: datetime
) -> dict[tuple[Instance, datetime], int]:
    rows = conn.execute(
        f"""
        SELECT account_id, region, instance_id, date_trunc('hour', ts), count(*)
        FROM {METRICS_TABLE} WHERE ts >= $start AND ts < $end GROUP BY ALL
        """,
        {"start": start, "end": end},
    ).fetchall()
    return {(Instance(*row[:3]), row[3]): int(row[4]) for row in rows}


def empty_settled_fetches(
    conn: duckdb.DuckDBPyConnection, start: datetime, end: datetime
) -> set[tuple[Instance, datetime]]:
    rows = conn.execute(
        f"""
        SELECT account_id, region, instance_id, hour FROM {FETCHES_TABLE}
        WHERE settled AND datapoints = 0 AND hour >= $start AND hour < $end
        """,
        {"start": start, "end": end},
    ).fetchall()
    return {(Instance(*row[:3]), row[3]) for row in rows}


def sanity_counts(
    conn: duckdb.DuckDBPyConnection, start: datetime, period_seconds: int, now: datetime
) -> dict[str, int]:
    """Rows since `start` that break an invariant; every count should be 0."""
    [row] = conn.execute(
        f"""
        SELECT count(*) - count(DISTINCT (account_id, region, instance_id, metric, ts)),
               count(*) FILTER (unit = 'Percent' AND (minimum < 0 OR maximum > 100
                                                      OR average < 0 OR average > 100)),
               count(*) FILTER (least(average, minimum, maximum, sum, sample_count) < 0),
               count(*) FILTER (minimum > average + 1e-9 OR average > maximum + 1e-9),
               count(*) FILTER (epoch(ts)::BIGINT % $period <> 0 OR ts > $now)
        FROM {METRICS_TABLE} WHERE ts >= $start
        """,
        {"start": start, "period": period_seconds, "now": now},
    ).fetchall()
    names = (
        "duplicate_keys",
        "percent_out_of_range",
        "negative_values",
        "min_avg_max_disorder",
        "misplaced_timestamps",
    )
    return dict(zip(names, (int(v) for v in row), strict=True))


def record_run(conn: duckdb.DuckDBPyConnection, figures: dict[str, Any]) -> None:
    """One row of the run's own figures in pipeline_runs (a re-executed run replaces its row)."""
    ensure_schema(conn)
    columns = ", ".join(figures)
    placeholders = ", ".join(f"${name}" for name in figures)
    conn.execute(
        f"INSERT OR REPLACE INTO {RUNS_TABLE} ({columns}) VALUES ({placeholders})", figures
    )
