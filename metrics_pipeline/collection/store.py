"""What collection writes and reads: the inventory, the metrics of a window with their fetch
log, and each run's own figures.

Every write is one transaction that replaces exactly the rows it owns (a window of hours for
a set of instances), so re-running is idempotent and a crash leaves the old rows or the new
ones, never a mix.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa

from metrics_pipeline.catalog import (
    CLUSTER_METRIC_UNITS,
    HOURLY_STATISTIC_COLUMNS,
    RDS_METRIC_UNITS,
    STATISTIC_COLUMNS,
)
from metrics_pipeline.collection.cloudwatch import SPOOL_SCHEMA
from metrics_pipeline.hours import hour_starts, is_settled
from metrics_pipeline.warehouse.instances import Instance
from metrics_pipeline.warehouse.schema import (
    RUN_PARTS_TABLE,
    RUNS_TABLE,
)
from metrics_pipeline.warehouse.sql import in_transaction, sql_literal
from metrics_pipeline.warehouse.tables import (
    ARROW_TYPES,
    CLUSTER_FETCHES,
    CLUSTER_KEY,
    CLUSTER_METRICS,
    CLUSTERS,
    DBI_RESOURCE_ID,
    FETCHES,
    HISTORY_TRACKED,
    HOURLY,
    HOURLY_FETCHES,
    INSTANCE_HISTORY,
    INSTANCE_KEY,
    INSTANCES,
    METRICS,
    RUN_PARTS,
    RUNS,
    Table,
)


@dataclass(frozen=True)
class Destination:
    """Where a collection writes: a table with a row per subject (an instance, a cluster),
    metric and period and a column per statistic, and its fetch log."""

    table: Table
    fetches: Table
    statistic_columns: Mapping[str, str]  # CloudWatch statistic -> column
    units: Mapping[str, str] = field(default_factory=lambda: RDS_METRIC_UNITS)  # metric -> unit
    subject_column: str = "instance_id"  # what names the subject beside account and region

    @property
    def time_column(self) -> str:
        return self.table.time_column or ""


# The raw tier (the collection period) and the hourly tier (CloudWatch's hourly statistics),
# and the Aurora clusters' metrics at the collection period.
RAW_DESTINATION = Destination(METRICS, FETCHES, STATISTIC_COLUMNS)
HOURLY_DESTINATION = Destination(HOURLY, HOURLY_FETCHES, HOURLY_STATISTIC_COLUMNS)
CLUSTER_DESTINATION = Destination(
    CLUSTER_METRICS, CLUSTER_FETCHES, STATISTIC_COLUMNS, CLUSTER_METRIC_UNITS, "cluster_id"
)

# What discovery reports: every column but those the warehouse keeps itself.
SEEN_COLUMNS = ("first_seen", "last_seen")
INSTANCE_KEY_SCHEMA = INSTANCES.arrow_schema(INSTANCE_KEY)


def discovered_schema(table: Table) -> pa.Schema:
    return table.arrow_schema(name for name in table.column_names if name not in SEEN_COLUMNS)


def _merge_seen(
    conn: duckdb.DuckDBPyConnection, table: Table, key: Sequence[str], seen_at: datetime
) -> None:
    """Adds the new rows of the registered `discovered` and refreshes the known ones;
    first_seen never moves, last_seen does."""
    names = discovered_schema(table).names
    keys = " AND ".join(f"i.{c} = d.{c}" for c in key)
    updates = ", ".join(f"{c} = d.{c}" for c in names if c not in key)
    columns = ", ".join((*names, *SEEN_COLUMNS))
    values = ", ".join(f"d.{c}" for c in names)
    # MERGE rather than INSERT ... ON CONFLICT: a DuckLake table has no key to conflict on.
    conn.execute(
        f"""
        MERGE INTO {table.name} i USING discovered d ON ({keys})
        WHEN MATCHED THEN UPDATE SET {updates}, last_seen = $seen
        WHEN NOT MATCHED THEN INSERT ({columns}) VALUES ({values}, $seen, $seen)
        """,
        {"seen": seen_at},
    )


def _discovered(table: Table, records: Sequence[dict[str, Any]]) -> pa.Table:
    return pa.Table.from_pylist(
        [{**r, "tags": list(r["tags"].items())} for r in records], schema=discovered_schema(table)
    )


def upsert_instances(
    conn: duckdb.DuckDBPyConnection,
    instances: Sequence[dict[str, Any]],
    seen_at: datetime,
    clusters: Sequence[dict[str, Any]] = (),
) -> int:
    """Adds new instances and clusters and refreshes known ones, and extends the instances'
    history, in one transaction; returns the instances written."""

    def write() -> int:
        for table, key, records in (
            (INSTANCES, INSTANCE_KEY, instances),
            (CLUSTERS, CLUSTER_KEY, clusters),
        ):
            conn.register("discovered", _discovered(table, records))
            try:
                _merge_seen(conn, table, key, seen_at)
                if table is INSTANCES:
                    record_history(conn, seen_at)
            finally:
                conn.unregister("discovered")
        return len(instances)

    return in_transaction(conn, write)


def record_history(conn: duckdb.DuckDBPyConnection, seen_at: datetime) -> None:
    """Extends the latest version of each instance in `discovered` that RDS still describes
    the same way to `seen_at`, and starts a new version for the others (new instances, a class
    or engine change, a name used again by another database). A version from before
    identifiers were kept takes the identifier it is seen with."""
    history = INSTANCE_HISTORY.name
    keys = " AND ".join(f"h.{c} = d.{c}" for c in INSTANCE_KEY)
    latest = (
        f"h.valid_from = (SELECT max(x.valid_from) FROM {history} x WHERE "
        + " AND ".join(f"x.{c} = h.{c}" for c in INSTANCE_KEY)
        + ")"
    )
    same = " AND ".join(
        f"(h.{c} IS NULL OR h.{c} = d.{c})"
        if c == DBI_RESOURCE_ID.name
        else f"h.{c} IS NOT DISTINCT FROM d.{c}"
        for c in HISTORY_TRACKED
    )
    conn.execute(
        f"""
        UPDATE {history} h
        SET last_seen = $seen, {DBI_RESOURCE_ID.name} = d.{DBI_RESOURCE_ID.name}
        FROM discovered d
        WHERE {keys} AND {latest} AND {same}
        """,
        {"seen": seen_at},
    )
    columns = ", ".join(INSTANCE_HISTORY.column_names)
    values = ", ".join(
        "$seen" if c in ("valid_from", "last_seen") else f"d.{c}"
        for c in INSTANCE_HISTORY.column_names
    )
    conn.execute(
        f"""
        INSERT INTO {history} ({columns})
        SELECT {values} FROM discovered d
        WHERE NOT EXISTS (SELECT 1 FROM {history} h WHERE {keys} AND h.last_seen = $seen)
        """,
        {"seen": seen_at},
    )


def _received_sql(spool_files: Sequence[Path]) -> str:
    """Every spooled datapoint of a target instance, as CloudWatch sent it."""
    if not spool_files:
        duckdb_types = {arrow: name for name, arrow in ARROW_TYPES.items()}
        nulls = ", ".join(
            f"NULL::{duckdb_types[field.type]} AS {field.name}" for field in SPOOL_SCHEMA
        )
        return f"SELECT {nulls} WHERE false"
    files = ", ".join(sql_literal(path) for path in spool_files)
    return (
        f"SELECT s.* FROM read_parquet([{files}]) s "
        "JOIN targets USING (account_id, region, instance_id)"
    )


def _window_filter(start: datetime, end: datetime) -> str:
    """Written with literals: DuckDB views take no parameters."""
    return (
        f"ts >= TIMESTAMP {sql_literal(start.isoformat())} "
        f"AND ts < TIMESTAMP {sql_literal(end.isoformat())}"
    )


def _pivot_sql(start: datetime, end: datetime, statistic_columns: Mapping[str, str]) -> str:
    """The received datapoints worth storing, one row per key (instance, metric, period) and a
    column per statistic, in one pass: in the window, a number, one value per cell.

    A cell that came back twice with different values (min and max differ) is left out rather
    than guessed; exact repeats collapse to one; a key with no cell left is no row.
    """
    cells = []
    for stat, column in statistic_columns.items():
        low = f"min(value) FILTER (WHERE statistic = '{stat}')"
        high = f"max(value) FILTER (WHERE statistic = '{stat}')"
        cells.append(f"CASE WHEN {low} = {high} THEN {low} END AS {column}")
    any_cell = " OR ".join(f"{column} IS NOT NULL" for column in statistic_columns.values())
    return f"""
        SELECT ts, account_id, region, instance_id, metric, {", ".join(cells)}
        FROM received
        WHERE {_window_filter(start, end)} AND value IS NOT NULL
        GROUP BY ts, account_id, region, instance_id, metric
        HAVING {any_cell}
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
    destination: Destination = RAW_DESTINATION,
) -> MetricsWrite:
    """Replaces the targets' metric rows and fetch log entries of [start, end) in one go.

    Spooled datapoints are pivoted here (one row per key, one column per statistic) and
    anything outside the window, for another instance, or NaN is left out.
    """
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
    units = destination.units
    conn.register("metric_units", pa.table({"metric": list(units), "unit": list(units.values())}))
    statistic_columns = destination.statistic_columns
    columns = ", ".join(statistic_columns.values())
    cells = " + ".join(f"({column} IS NOT NULL)::INT" for column in statistic_columns.values())
    table, fetches, ts = destination.table.name, destination.fetches.name, destination.time_column
    # The spool and the targets name every subject instance_id; the tables, their own way.
    subject = destination.subject_column

    def write() -> MetricsWrite:
        conn.execute(f"CREATE OR REPLACE TEMP VIEW received AS {_received_sql(spool_files)}")
        conn.execute(
            "CREATE OR REPLACE TEMP TABLE chunk_rows AS "
            + _pivot_sql(start, end, statistic_columns)
        )
        replaced = conn.execute(
            f"""
            DELETE FROM {table} m USING targets t
            WHERE m.account_id = t.account_id AND m.region = t.region
              AND m.{subject} = t.instance_id AND m.{ts} >= $start AND m.{ts} < $end
            """,
            {"start": start, "end": end},
        ).fetchone()
        written = conn.execute(
            f"""
            INSERT INTO {table}
                ({ts}, account_id, region, {subject}, metric, unit, {columns}, collected_at)
            SELECT ts, account_id, region, instance_id, metric, u.unit, {columns}, $collected_at
            FROM chunk_rows LEFT JOIN metric_units u USING (metric)
            """,
            {"collected_at": fetched_at},
        ).fetchone()
        conn.execute(
            f"""
            DELETE FROM {fetches} f USING targets t
            WHERE f.account_id = t.account_id AND f.region = t.region
              AND f.{subject} = t.instance_id AND f.hour >= $start AND f.hour < $end
            """,
            {"start": start, "end": end},
        )
        # Each stored datapoint is one statistic cell of one row just written.
        conn.execute(
            f"""
            INSERT INTO {fetches}
            SELECT h.hour, t.account_id, t.region, t.instance_id, $fetched_at,
                   coalesce(c.datapoints, 0), h.settled, $run_id
            FROM targets t CROSS JOIN fetched_hours h
            LEFT JOIN (
                SELECT account_id, region, instance_id, date_trunc('hour', ts) AS hour,
                       sum({cells})::BIGINT AS datapoints
                FROM chunk_rows GROUP BY ALL
            ) c USING (account_id, region, instance_id, hour)
            """,
            {"fetched_at": fetched_at, "run_id": run_id},
        )
        [(datapoints,)] = conn.execute(
            f"SELECT coalesce(sum({cells}), 0)::BIGINT FROM chunk_rows"
        ).fetchall()
        [(nan, outside, total_in_window)] = conn.execute(
            """
            SELECT count(*) FILTER (value IS NULL),
                   count(*) FILTER (value IS NOT NULL AND (ts < $start OR ts >= $end)),
                   count(*) FILTER (value IS NOT NULL AND ts >= $start AND ts < $end)
            FROM received
            """,
            {"start": start, "end": end},
        ).fetchall()
        conn.execute("DROP TABLE chunk_rows")
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


def record_run(conn: duckdb.DuckDBPyConnection, figures: dict[str, Any]) -> None:
    """One row of the run's own figures for one asset in pipeline_runs (a re-executed run
    replaces its row); a figure the table has no column for is refused rather than lost."""
    RUNS.check_row(figures)
    columns = ", ".join(figures)
    placeholders = ", ".join(f"${name}" for name in figures)

    def replace() -> None:
        conn.execute(
            f"DELETE FROM {RUNS_TABLE} WHERE run_id = $run_id AND asset = $asset",
            {"run_id": figures["run_id"], "asset": figures["asset"]},
        )
        conn.execute(f"INSERT INTO {RUNS_TABLE} ({columns}) VALUES ({placeholders})", figures)

    in_transaction(conn, replace)


def record_run_parts(
    conn: duckdb.DuckDBPyConnection, run_id: str, asset: str, parts: Sequence[dict[str, Any]]
) -> None:
    """The run's figures for `asset` per account and region in pipeline_run_parts (replacing a
    re-executed run's)."""
    for part in parts:
        RUN_PARTS.check_row(part)
    rows = pa.Table.from_pylist(
        [{"run_id": run_id, "asset": asset, **part} for part in parts],
        schema=RUN_PARTS.arrow_schema(),
    )
    conn.register("run_parts", rows)
    columns = ", ".join(RUN_PARTS.column_names)

    def replace() -> None:
        conn.execute(
            f"DELETE FROM {RUN_PARTS_TABLE} WHERE run_id = ? AND asset = ?", [run_id, asset]
        )
        conn.execute(f"INSERT INTO {RUN_PARTS_TABLE} ({columns}) SELECT {columns} FROM run_parts")

    try:
        in_transaction(conn, replace)
    finally:
        conn.unregister("run_parts")


def fully_written_by_run(
    conn: duckdb.DuckDBPyConnection,
    run_id: str,
    start: datetime,
    end: datetime,
    destination: Destination = RAW_DESTINATION,
) -> set[Instance]:
    """The instances whose every hour of [start, end) this run has already written: a step
    retried after a partial failure does not fetch them again."""
    hours = len(hour_starts(start, end))
    rows = conn.execute(
        f"""
        SELECT account_id, region, {destination.subject_column} FROM {destination.fetches.name}
        WHERE run_id = $run_id AND hour >= $start AND hour < $end
        GROUP BY ALL HAVING count(*) = $hours
        """,
        {"run_id": run_id, "start": start, "end": end, "hours": hours},
    ).fetchall()
    return {Instance(*row) for row in rows}
