"""Moving a DuckDB file's warehouse into a DuckLake: what a deployment does once when it
outgrows one machine (`metrics-pipeline migrate-to-lake`).

It reads the file's published snapshot, so the pipeline may go on collecting into the file
meanwhile (what it writes after the snapshot stays behind: stop it first for a clean cut, or
let the gap sensor on the lake collect those hours again). Every table is copied in one lake
transaction, into a lake that holds no rows yet, then compared table by table.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import duckdb

from metrics_pipeline.warehouse.migrations import SCHEMA_VERSION, warehouse_version
from metrics_pipeline.warehouse.schema import expected_columns
from metrics_pipeline.warehouse.sql import in_transaction, sql_literal

SOURCE_ALIAS = "file_snapshot"


class LakeMigrationError(ValueError):
    """The file cannot be moved into this lake as things are; the message says why."""


@dataclass(frozen=True)
class TableFingerprint:
    rows: int
    checksum: int  # order-free: the sum of every row's hash


def fingerprints(conn: duckdb.DuckDBPyConnection, database: str) -> dict[str, TableFingerprint]:
    """Each of this build's tables in `database`: its row count and a checksum of its rows."""
    found = {}
    for table in expected_columns():
        [(rows, checksum)] = conn.execute(
            f"SELECT count(*), coalesce(sum(hash(t)), 0) FROM {database}.main.{table} t"
        ).fetchall()
        found[table] = TableFingerprint(int(rows), int(checksum))
    return found


def copy_snapshot_into_lake(
    conn: duckdb.DuckDBPyConnection, snapshot: Path, progress: Callable[[str], object] = print
) -> dict[str, TableFingerprint]:
    """Copies every table of the snapshot into the lake `conn` is using, in one transaction,
    and returns the source's fingerprints once the lake's are found equal to them."""
    if not snapshot.exists():
        raise LakeMigrationError(
            f"no snapshot of the DuckDB warehouse at {snapshot}: point METRICS_DUCKDB_PATH "
            "(or --warehouse) at the file to move."
        )
    [(lake,)] = conn.execute("SELECT current_database()").fetchall()
    conn.execute(f"ATTACH {sql_literal(snapshot)} AS {SOURCE_ALIAS} (READ_ONLY)")
    try:
        conn.execute(f"USE {SOURCE_ALIAS}")
        version = warehouse_version(conn)
        conn.execute(f"USE {lake}")
        if version != SCHEMA_VERSION:
            raise LakeMigrationError(
                f"the DuckDB warehouse has schema version {version}, this build writes "
                f"{SCHEMA_VERSION}: let the pipeline run once on the file (it migrates it), "
                "then move it."
            )
        source = fingerprints(conn, SOURCE_ALIAS)

        def copy() -> None:
            held = {t: f.rows for t, f in fingerprints(conn, lake).items() if f.rows}
            if held:
                listed = ", ".join(f"{table} {rows}" for table, rows in held.items())
                raise LakeMigrationError(
                    f"the lake already holds rows ({listed}); nothing was copied. Move a file "
                    "into a new, empty lake."
                )
            for table in expected_columns():  # the schema version is the lake's own
                progress(f"copying {table} ({source[table].rows:,} row(s))")
                conn.execute(
                    f"INSERT INTO {table} BY NAME SELECT * FROM {SOURCE_ALIAS}.main.{table}"
                )

        in_transaction(conn, copy)
        progress("comparing every table's row count and checksum")
        copied = fingerprints(conn, lake)
    finally:
        conn.execute(f"USE {lake}")
        conn.execute(f"DETACH {SOURCE_ALIAS}")
    differing = sorted(table for table in source if copied[table] != source[table])
    if differing:
        raise LakeMigrationError(
            f"the lake's {', '.join(differing)} differ from the file's after the copy: "
            "compare them before relying on the lake."
        )
    return source
