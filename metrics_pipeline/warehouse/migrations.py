"""The warehouse's schema version, its migrations, and the check that the tables are the ones
this build writes: a writer refuses a warehouse it does not understand before it asks AWS for
anything, rather than failing at the write or silently creating a new, empty table.

A warehouse written by a build before versioning is version 0. Each migration is a small
numbered step; a writer backs the file up, then runs the steps it lacks in one transaction.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

import duckdb

from metrics_pipeline.warehouse.schema import (
    VERSION_TABLE,
    base_tables,
    ensure_schema,
    is_lake,
    partition_lake_tables,
)
from metrics_pipeline.warehouse.sql import in_transaction
from metrics_pipeline.warehouse.tables import (
    CLUSTER_FETCHES,
    CLUSTER_METRICS,
    CLUSTER_PLACE,
    DAILY,
    DBI_RESOURCE_ID,
    DERIVED_TABLES,
    HOURLY,
    HOURLY_FETCHES,
    INSTANCE_HISTORY,
    INSTANCES,
    PERFORMANCE_INSIGHTS,
    PI_FETCHES,
    PI_LOAD,
    PI_PERSONAL_LOAD,
    PI_REQUESTS,
    RIGHTSIZING,
    RIGHTSIZING_AURORA,
    RIGHTSIZING_DB_LOAD,
    RUN_PARTS,
    RUNS,
    TABLES,
    VERSIONS,
    Column,
)

SCHEMA_VERSION = 6


class SchemaError(Exception):
    """The warehouse's tables are not the ones this build writes; the message names the table
    (and the column) and what to do."""


@dataclass(frozen=True)
class Migration:
    version: int  # the version the warehouse has after this step
    does: str
    apply: Callable[[duckdb.DuckDBPyConnection], None]


def _create_missing_derived_tables(conn: duckdb.DuckDBPyConnection) -> None:
    """Builds before versioning created the rollup, run and report tables lazily: a warehouse
    from one of them may lack some. They hold only what can be computed again."""
    ensure_schema(conn, views=False)


def _add_instance_history(conn: duckdb.DuckDBPyConnection) -> None:
    """The inventory gains each instance's DbiResourceId, and its history begins with the
    version the inventory knows (its identifier learnt at the next discovery)."""
    conn.execute(
        f"ALTER TABLE {INSTANCES.name} ADD COLUMN IF NOT EXISTS "
        f"{DBI_RESOURCE_ID.name} {DBI_RESOURCE_ID.type}"
    )
    ensure_schema(conn, views=False)
    # The columns the inventory had then: those of an instance's cluster came in version 5.
    then = [c for c in INSTANCE_HISTORY.column_names if c not in _names(CLUSTER_PLACE)]
    columns = ", ".join(then)
    known = ", ".join("first_seen" if name == "valid_from" else name for name in then)
    conn.execute(
        f"INSERT INTO {INSTANCE_HISTORY.name} ({columns}) SELECT {known} FROM {INSTANCES.name}"
    )


def _add_hourly_tier(conn: duckdb.DuckDBPyConnection) -> None:
    """rds_metrics_hourly and rds_metrics_daily were rollups of the raw periods (percentiles of
    period averages, kept as long as the raw rows). They become the hourly tier, CloudWatch's
    own hourly statistics fetched for the 455 days it keeps, and the days made from it: the
    old rows are dropped (the raw rows they came from stay) and the tier backfills."""
    for table in (DAILY.name, HOURLY.name):
        conn.execute(f"DROP TABLE IF EXISTS {table}")
    ensure_schema(conn)
    if is_lake(conn):
        partition_lake_tables(conn, [HOURLY.name, HOURLY_FETCHES.name, DAILY.name])


def _add_aurora_and_performance_insights(conn: duckdb.DuckDBPyConnection) -> None:
    """The inventory gains each instance's Aurora cluster and role and its Performance
    Insights settings (learnt at the next discovery); the clusters get their own table, and
    their metrics theirs with its fetch log; the rightsizing report, Aurora's evidence."""
    for table, columns in (
        (INSTANCES, (*CLUSTER_PLACE, *PERFORMANCE_INSIGHTS)),
        (INSTANCE_HISTORY, CLUSTER_PLACE),
        (RIGHTSIZING, RIGHTSIZING_AURORA),
    ):
        for column in columns:
            conn.execute(
                f"ALTER TABLE {table.name} ADD COLUMN IF NOT EXISTS {column.name} {column.type}"
            )
    ensure_schema(conn, views=False)
    if is_lake(conn):
        partition_lake_tables(conn, [CLUSTER_METRICS.name, CLUSTER_FETCHES.name])
    _key_runs_by_asset(conn)


def _key_runs_by_asset(conn: duckdb.DuckDBPyConnection) -> None:
    """A run's figures become one row per asset it collected (the fresh run collects the
    instances and the clusters): pipeline_run_parts gains the asset, its run's. A DuckDB file's
    keys cannot change in place: its two tables are built again with the new keys, rows and
    all; a lake's tables have no keys."""
    asset = f"coalesce((SELECT r.asset FROM {RUNS.name} r WHERE r.run_id = p.run_id), "
    asset += "'rds_metrics')"
    if is_lake(conn):
        conn.execute(f"ALTER TABLE {RUN_PARTS.name} ADD COLUMN IF NOT EXISTS asset VARCHAR")
        conn.execute(f"UPDATE {RUN_PARTS.name} p SET asset = {asset} WHERE asset IS NULL")
        return
    for table in (RUNS, RUN_PARTS):
        conn.execute(f"ALTER TABLE {table.name} RENAME TO {table.name}{REKEYED_SUFFIX}")
        conn.execute(table.create_sql(keys=True))
    # The columns the runs had then: PI's requests came in version 6.
    runs = ", ".join(c for c in RUNS.column_names if c != PI_REQUESTS.name)
    conn.execute(f"INSERT INTO {RUNS.name} ({runs}) SELECT {runs} FROM {RUNS.name}{REKEYED_SUFFIX}")
    parts = ", ".join(RUN_PARTS.column_names)
    known = ", ".join(
        asset.replace(f"{RUNS.name} r", f"{RUNS.name}{REKEYED_SUFFIX} r") if c == "asset" else c
        for c in RUN_PARTS.column_names
    )
    conn.execute(
        f"INSERT INTO {RUN_PARTS.name} ({parts}) "
        f"SELECT {known} FROM {RUN_PARTS.name}{REKEYED_SUFFIX} p"
    )
    for table in (RUN_PARTS, RUNS):
        conn.execute(f"DROP TABLE {table.name}{REKEYED_SUFFIX}")


def _add_performance_insights_load(conn: duckdb.DuckDBPyConnection) -> None:
    """Performance Insights' load per dimension key, its SQL digests and its fetch log; the
    runs' figures gain PI's requests, the rightsizing report the DB load per vCPU."""
    for table, column in ((RUNS, PI_REQUESTS), (RIGHTSIZING, RIGHTSIZING_DB_LOAD)):
        conn.execute(
            f"ALTER TABLE {table.name} ADD COLUMN IF NOT EXISTS {column.name} {column.type}"
        )
    ensure_schema(conn, views=False)
    if is_lake(conn):
        partition_lake_tables(conn, [PI_LOAD.name, PI_PERSONAL_LOAD.name, PI_FETCHES.name])


# The old tables a migration builds again under the name of, until it drops them.
REKEYED_SUFFIX = "__before_v5"


def _names(columns: tuple[Column, ...]) -> set[str]:
    return {column.name for column in columns}


MIGRATIONS = [
    Migration(1, "records the schema version; creates derived tables older builds lacked",
              _create_missing_derived_tables),
    Migration(2, "adds pipeline_run_parts, each run's figures per account and region",
              _create_missing_derived_tables),
    Migration(3, "adds rds_instances.dbi_resource_id and rds_instance_history",
              _add_instance_history),
    Migration(4, "rds_metrics_hourly becomes CloudWatch's hourly tier, rds_metrics_daily its days",
              _add_hourly_tier),
    Migration(5, "adds the instances' Aurora cluster, role and Performance Insights settings, "
                 "rds_clusters and rds_cluster_metrics", _add_aurora_and_performance_insights),
    Migration(6, "adds Performance Insights' load (rds_pi_load, rds_pi_load_personal), its SQL "
                 "digests (rds_pi_statements) and its fetch log", _add_performance_insights_load),
]  # fmt: skip


def warehouse_version(conn: duckdb.DuckDBPyConnection) -> int | None:
    """The schema version; None for a new, empty warehouse; 0 for one from before versioning."""
    tables = set(base_tables(conn))
    if VERSION_TABLE in tables:
        row = conn.execute(f"SELECT max(version) FROM {VERSION_TABLE}").fetchone()
        return int(row[0]) if row and row[0] is not None else 0
    return 0 if tables else None


def structure_problems(conn: duckdb.DuckDBPyConnection) -> list[str]:
    """What differs between the warehouse's tables and this build's: missing tables, missing or
    extra columns, other types. Empty when they match."""
    actual: dict[str, dict[str, str]] = {}
    for table, column, data_type in conn.execute(
        "SELECT c.table_name, c.column_name, c.data_type FROM information_schema.columns c "
        "JOIN information_schema.tables t USING (table_catalog, table_schema, table_name) "
        "WHERE t.table_type = 'BASE TABLE' AND c.table_catalog = current_database() "
        "ORDER BY c.table_name, c.ordinal_position"
    ).fetchall():
        actual.setdefault(table, {})[column] = data_type
    problems = []
    for table, declared in TABLES.items():
        if table not in actual:
            others = sorted(set(actual) - set(TABLES) - {VERSION_TABLE})
            found = f" (the warehouse has {', '.join(others)})" if others else ""
            problems.append(f"table {table} is missing{found}")
            continue
        have = actual[table]
        for column in declared.columns:
            if column.name not in have:
                problems.append(f"column {table}.{column.name} is missing")
            elif have[column.name] != column.type:
                problems.append(
                    f"column {table}.{column.name} is {have[column.name]}, expected {column.type}"
                )
        problems += [
            f"column {table}.{name} is unknown"
            for name in have
            if name not in declared.column_names
        ]
    return problems


def prepare_schema(
    conn: duckdb.DuckDBPyConnection, back_up: Callable[[int], object], now: datetime
) -> int | None:
    """Creates a new warehouse's tables, or migrates an older one after `back_up(version)`,
    then checks the structure. Returns the version migrated from (None when nothing was).
    Raises SchemaError, changing nothing, for a newer or an unrecognised warehouse."""
    version = warehouse_version(conn)
    if version is None:

        def create() -> None:
            if warehouse_version(conn) is not None:  # another writer just created it
                return
            ensure_schema(conn)
            if is_lake(conn):
                partition_lake_tables(conn)
            _record_version(conn, SCHEMA_VERSION, now)

        in_transaction(conn, create)
        return None
    if version > SCHEMA_VERSION:
        raise SchemaError(
            f"the warehouse has schema version {version}, newer than this build's "
            f"({SCHEMA_VERSION}): upgrade metrics_pipeline to write it."
        )
    # A core table that is gone would otherwise be created again, empty, with its history
    # stranded under another name: refuse before migrating anything.
    problems = structure_problems(conn)
    missing_core = [
        problem
        for problem in problems
        if problem.startswith("table ")
        and (table := TABLES[problem.split()[1]]).name not in DERIVED_TABLES
        and table.added_in <= version
    ]
    if missing_core:
        raise SchemaError(f"{missing_core[0]}; restore it (or a backup) before collecting.")
    migrated_from = None
    if version < SCHEMA_VERSION:
        back_up(version)

        def migrate() -> None:
            since = warehouse_version(conn) or 0  # another writer may have migrated it
            for migration in MIGRATIONS:
                if migration.version > since:
                    migration.apply(conn)
                    _record_version(conn, migration.version, now)

        in_transaction(conn, migrate)
        migrated_from = version
        problems = structure_problems(conn)
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise SchemaError(
            f"{problems[0]}{more}: the warehouse's tables are not the ones this build writes; "
            "restore them (or a backup) before collecting."
        )
    # The views, which follow the build. On a lake that would be a commit per connection:
    # its views come with its tables (a change to them comes with a schema version).
    if not is_lake(conn):
        ensure_schema(conn)
    return migrated_from


def _record_version(conn: duckdb.DuckDBPyConnection, version: int, now: datetime) -> None:
    conn.execute(VERSIONS.create_sql(keys=not is_lake(conn)))
    conn.execute(f"INSERT INTO {VERSION_TABLE} VALUES (?, ?)", [version, now])
