"""The warehouse's tables and views: their names (one place for each) and their DDL."""

from __future__ import annotations

import re
from functools import cache

import duckdb

from metrics_pipeline.catalog import WIDE_VIEW_COLUMNS

# New warehouse files are written in a storage format that older DuckDB clients read
# (analysts' CLIs and notebooks lag behind the pipeline's DuckDB); the snapshot is a copy.
STORAGE_COMPATIBILITY_VERSION = "v1.2.0"

INSTANCES_TABLE = "rds_instances"
METRICS_TABLE = "rds_metrics"
FETCHES_TABLE = "rds_metric_fetches"
RUNS_TABLE = "pipeline_runs"
RUN_PARTS_TABLE = "pipeline_run_parts"
HOURLY_TABLE = "rds_metrics_hourly"
DAILY_TABLE = "rds_metrics_daily"
RIGHTSIZING_TABLE = "rds_rightsizing"
LATEST_VIEW = "rds_latest"
WIDE_VIEW = "rds_metrics_wide"
VERSION_TABLE = "schema_version"
# Tables that hold only what can be computed again from the others.
DERIVED_TABLES = frozenset(
    {RUNS_TABLE, RUN_PARTS_TABLE, HOURLY_TABLE, DAILY_TABLE, RIGHTSIZING_TABLE}
)

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
CREATE TABLE IF NOT EXISTS {RUN_PARTS_TABLE} (
    run_id VARCHAR NOT NULL,
    account_id VARCHAR NOT NULL,
    region VARCHAR NOT NULL,
    status VARCHAR NOT NULL,
    instances INTEGER NOT NULL,
    instances_written INTEGER NOT NULL,
    rows_written BIGINT NOT NULL,
    datapoints BIGINT NOT NULL,
    cloudwatch_requests INTEGER NOT NULL,
    throttled_calls INTEGER NOT NULL,
    error VARCHAR,
    PRIMARY KEY (run_id, account_id, region)
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


# DuckLake has no keys (the writers' delete-then-insert keeps them unique) and stores each
# table in files per day of its time column, so rewriting an hour touches one day's files.
LAKE_SCHEMA_SQL = re.sub(r",\s*PRIMARY KEY \([^)]*\)| PRIMARY KEY", "", SCHEMA_SQL)
LAKE_PARTITIONS = {
    METRICS_TABLE: "ts",
    FETCHES_TABLE: "hour",
    HOURLY_TABLE: "hour",
    DAILY_TABLE: "day",
}


def is_lake(conn: duckdb.DuckDBPyConnection) -> bool:
    """Whether the connection's database in use is a DuckLake (else a DuckDB file)."""
    row = conn.execute(
        "SELECT type FROM duckdb_databases() WHERE database_name = current_database()"
    ).fetchone()
    return bool(row and row[0] == "ducklake")


def ensure_schema(conn: duckdb.DuckDBPyConnection) -> None:
    """Creates what is missing of this build's tables, and its views."""
    conn.execute(LAKE_SCHEMA_SQL if is_lake(conn) else SCHEMA_SQL)


def partition_lake_tables(conn: duckdb.DuckDBPyConnection) -> None:
    for table, column in LAKE_PARTITIONS.items():
        conn.execute(
            f"ALTER TABLE {table} SET PARTITIONED BY (year({column}), month({column}), "
            f"day({column}))"
        )


@cache
def expected_columns() -> dict[str, list[tuple[str, str, bool]]]:
    """Every table's columns (name, type, required), from the DDL run once in an in-memory
    DuckDB: the catalog and the schema check cannot drift from the warehouse."""
    with duckdb.connect(":memory:") as conn:
        conn.execute(SCHEMA_SQL)
        rows = conn.execute(
            "SELECT c.table_name, c.column_name, c.data_type, c.is_nullable = 'NO' "
            "FROM information_schema.columns c JOIN information_schema.tables t "
            "USING (table_catalog, table_schema, table_name) WHERE t.table_type = 'BASE TABLE' "
            "ORDER BY c.table_name, c.ordinal_position"
        ).fetchall()
    columns: dict[str, list[tuple[str, str, bool]]] = {}
    for table, *column in rows:
        columns.setdefault(table, []).append(tuple(column))  # type: ignore[arg-type]
    return columns


def base_tables(conn: duckdb.DuckDBPyConnection) -> list[str]:
    """The tables (not views) of the connection's current database, by name."""
    rows = conn.execute(
        "SELECT table_name FROM information_schema.tables "
        "WHERE table_catalog = current_database() AND table_type = 'BASE TABLE' ORDER BY 1"
    ).fetchall()
    return [row[0] for row in rows]


# The copies of the tables a restore fills before it swaps them in (maintenance/backups.py).
RESTORE_COPY_SUFFIX = "__restoring"


def drop_restore_copies(conn: duckdb.DuckDBPyConnection) -> None:
    """Removes the copies a failed or killed restore left (the next restore and every writer's
    first connection do), so that readers never see them for long."""
    for table in base_tables(conn):
        if table.endswith(RESTORE_COPY_SUFFIX):
            conn.execute(f"DROP TABLE {table}")


def table_exists(conn: duckdb.DuckDBPyConnection, table: str) -> bool:
    found = conn.execute(
        "SELECT count(*) FROM information_schema.tables WHERE table_name = ?", [table]
    ).fetchone()
    return bool(found and found[0])
