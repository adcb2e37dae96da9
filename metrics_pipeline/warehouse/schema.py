"""The warehouse's DDL for each storage kind, made from the tables' declarations
(warehouse/tables.py), and its views."""

from __future__ import annotations

from collections.abc import Iterable

import duckdb

from metrics_pipeline.catalog import STATISTIC_COLUMNS, WIDE_VIEW_COLUMNS
from metrics_pipeline.warehouse.tables import (
    CLUSTER_FETCHES,
    CLUSTER_METRICS,
    CLUSTERS,
    DAILY,
    FETCHES,
    HOURLY,
    HOURLY_FETCHES,
    INSTANCE_KEY,
    INSTANCES,
    METRIC,
    METRICS,
    PI_FETCHES,
    PI_LOAD,
    PI_PERSONAL_LOAD,
    PI_STATEMENTS,
    RIGHTSIZING,
    RIGHTSIZING_WINDOWS,
    RUN_PARTS,
    RUNS,
    TABLES,
    UNIT,
    VERSIONS,
)

# New warehouse files are written in a storage format that older DuckDB clients read
# (analysts' CLIs and notebooks lag behind the pipeline's DuckDB); the snapshot is a copy.
STORAGE_COMPATIBILITY_VERSION = "v1.2.0"

INSTANCES_TABLE = INSTANCES.name
CLUSTERS_TABLE = CLUSTERS.name
CLUSTER_METRICS_TABLE = CLUSTER_METRICS.name
CLUSTER_FETCHES_TABLE = CLUSTER_FETCHES.name
PI_LOAD_TABLE = PI_LOAD.name
PI_PERSONAL_LOAD_TABLE = PI_PERSONAL_LOAD.name
PI_STATEMENTS_TABLE = PI_STATEMENTS.name
PI_FETCHES_TABLE = PI_FETCHES.name
METRICS_TABLE = METRICS.name
FETCHES_TABLE = FETCHES.name
RUNS_TABLE = RUNS.name
RUN_PARTS_TABLE = RUN_PARTS.name
HOURLY_TABLE = HOURLY.name
HOURLY_FETCHES_TABLE = HOURLY_FETCHES.name
DAILY_TABLE = DAILY.name
RIGHTSIZING_TABLE = RIGHTSIZING.name
RIGHTSIZING_WINDOWS_TABLE = RIGHTSIZING_WINDOWS.name
VERSION_TABLE = VERSIONS.name
LATEST_VIEW = "rds_latest"
WIDE_VIEW = "rds_metrics_wide"
HOURLY_HISTORY_VIEW = "rds_hourly_history"


def _views_sql() -> str:
    """The views over rds_metrics: each series' latest period, and one column per default
    metric (its period average) per instance and period."""
    ts = METRICS.time_column
    series = ", ".join((*INSTANCE_KEY, METRIC.name))
    latest = ", ".join(
        f"arg_max({column}, {ts}) AS {column}" for column in STATISTIC_COLUMNS.values()
    )
    average = STATISTIC_COLUMNS["Average"]
    wide = ",\n".join(
        f"    max({average}) FILTER (WHERE {METRIC.name} = '{metric}') AS {column}"
        for metric, column in WIDE_VIEW_COLUMNS.items()
    )
    period = ", ".join((f"{ts}", *INSTANCE_KEY))
    hour_series = ", ".join((*INSTANCE_KEY, METRIC.name, "hour"))
    tier_columns = ", ".join(HOURLY.column_names[: HOURLY.column_names.index("collected_at")])
    percentiles = ", ".join(
        f"NULL::DOUBLE AS {column}"
        for column in HOURLY.column_names
        if column.startswith("p") and column[1:].isdigit()
    )
    return f"""
CREATE OR REPLACE VIEW {LATEST_VIEW} AS
SELECT {series}, any_value({UNIT.name}) AS {UNIT.name}, max({ts}) AS {ts}, {latest}
FROM {METRICS_TABLE} GROUP BY {series};
CREATE OR REPLACE VIEW {WIDE_VIEW} AS
SELECT {period},
{wide}
FROM {METRICS_TABLE} GROUP BY {period};
CREATE OR REPLACE VIEW {HOURLY_HISTORY_VIEW} AS
SELECT {tier_columns}, 'hourly' AS tier FROM {HOURLY_TABLE}
UNION ALL BY NAME
SELECT date_trunc('hour', {ts}) AS hour, {", ".join(INSTANCE_KEY)}, {METRIC.name},
       any_value({UNIT.name}) AS {UNIT.name},
       coalesce(sum(sum) / nullif(sum(sample_count), 0), avg(average)) AS average,
       min(minimum) AS minimum, max(maximum) AS maximum, sum(sum) AS sum,
       sum(sample_count) AS sample_count, {percentiles}, 'raw' AS tier
FROM {METRICS_TABLE} r
WHERE NOT EXISTS (
    SELECT 1 FROM {HOURLY_TABLE} h
    WHERE ({", ".join(f"h.{c}" for c in hour_series.split(", "))})
        = ({", ".join(f"r.{c}" for c in INSTANCE_KEY)}, r.{METRIC.name}, date_trunc('hour', r.{ts}))
)
GROUP BY ALL;
"""


def schema_sql(*, keys: bool, views: bool = True) -> str:
    """The DDL of every table (with primary keys when `keys`: a DuckDB file has them, a
    DuckLake has none, its writers' delete-then-insert keeps the rows unique) and, with
    `views`, the views."""
    tables = "\n".join(table.create_sql(keys=keys) for table in TABLES.values())
    return tables + (_views_sql() if views else "")


def is_lake(conn: duckdb.DuckDBPyConnection) -> bool:
    """Whether the connection's database in use is a DuckLake (else a DuckDB file)."""
    row = conn.execute(
        "SELECT type FROM duckdb_databases() WHERE database_name = current_database()"
    ).fetchone()
    return bool(row and row[0] == "ducklake")


def ensure_schema(conn: duckdb.DuckDBPyConnection, views: bool = True) -> None:
    """Creates what is missing of this build's tables, and (with `views`) its views: a
    migration step before the last leaves the views to the last, as they read tables in this
    build's shape."""
    conn.execute(schema_sql(keys=not is_lake(conn), views=views))


def partition_lake_tables(
    conn: duckdb.DuckDBPyConnection, names: Iterable[str] | None = None
) -> None:
    """A DuckLake stores these tables (of `names`, all when None) in files per day of their
    time column, so rewriting an hour touches one day's files."""
    for table in TABLES.values():
        if table.lake_files_per_day and (names is None or table.name in names):
            column = table.time_column
            conn.execute(
                f"ALTER TABLE {table.name} SET PARTITIONED BY (year({column}), "
                f"month({column}), day({column}))"
            )


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


def column_names(conn: duckdb.DuckDBPyConnection, table: str) -> set[str]:
    """The columns the warehouse's table has: a snapshot from before a migration lacks the
    newest until the next writer migrates it."""
    rows = conn.execute(
        "SELECT column_name FROM information_schema.columns "
        "WHERE table_catalog = current_database() AND table_name = ?",
        [table],
    ).fetchall()
    return {row[0] for row in rows}
