"""Moving a DuckDB file's warehouse into a DuckLake: what a deployment does once when it
outgrows one machine (`metrics-pipeline migrate-to-lake`).

It reads the file's published snapshot, so the pipeline may go on collecting into the file
meanwhile (what it writes after the snapshot stays behind: stop it first for a clean cut, or
let the gap sensor on the lake collect those hours again). Every table is copied in one lake
transaction, into a lake that holds no rows yet, then compared table by table.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path

import duckdb

from metrics_pipeline.warehouse.migrations import SCHEMA_VERSION, warehouse_version
from metrics_pipeline.warehouse.sql import in_transaction, sql_literal
from metrics_pipeline.warehouse.tables import TABLES

SOURCE_ALIAS = "file_snapshot"
# Rows copied per statement (see _copy_table).
COPY_CHUNK_ROWS = 250_000


class LakeMigrationError(ValueError):
    """The file cannot be moved into this lake as things are; the message says why."""


@dataclass(frozen=True)
class TableFingerprint:
    rows: int
    checksum: int  # order-free: the sum of every row's hash


def fingerprints(conn: duckdb.DuckDBPyConnection, database: str) -> dict[str, TableFingerprint]:
    """Each of this build's tables in `database`: its row count and a checksum of its rows."""
    found = {}
    for table in TABLES:
        [(rows, checksum)] = conn.execute(
            f"SELECT count(*), coalesce(sum(hash(t)), 0) FROM {database}.main.{table} t"
        ).fetchall()
        found[table] = TableFingerprint(int(rows), int(checksum))
    return found


def delete_orphaned_files(conn: duckdb.DuckDBPyConnection, lake: str) -> int:
    """Deletes the data path's files no snapshot of the lake knows: what a failed or killed
    copy wrote. Under the writers' lock (in_transaction), so no writer has files of an
    uncommitted transaction there meanwhile. Returns how many."""
    deleted = in_transaction(
        conn,
        lambda: conn.execute(
            f"CALL ducklake_delete_orphaned_files({sql_literal(lake)}, cleanup_all => true)"
        ).fetchall(),
    )
    return len(deleted)


def _copy_table(conn: duckdb.DuckDBPyConnection, table: str, rows: int) -> None:
    """One table into the lake, COPY_CHUNK_ROWS rows per statement: each statement writes
    its files and lets go of them, so memory does not grow with the table (one statement
    kept a writer per day of the table's partitions open until the end)."""
    [(last,)] = conn.execute(f"SELECT max(rowid) FROM {SOURCE_ALIAS}.main.{table}").fetchall()
    if not rows or last is None:
        return
    for first in range(0, int(last) + 1, COPY_CHUNK_ROWS):
        conn.execute(
            f"INSERT INTO {table} BY NAME SELECT * FROM {SOURCE_ALIAS}.main.{table} "
            "WHERE rowid >= $first AND rowid < $next",
            {"first": first, "next": first + COPY_CHUNK_ROWS},
        )


def copy_snapshot_into_lake(
    conn: duckdb.DuckDBPyConnection, snapshot: Path, progress: Callable[[str], object] = print
) -> dict[str, TableFingerprint]:
    """Copies every table of the snapshot into the lake `conn` is using, in one transaction,
    and returns the source's fingerprints once the lake's are found equal to them. What a
    failed or killed copy left in the data path is deleted (at once, or by the next one)."""
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
            for table in TABLES:  # the schema version is the lake's own
                progress(f"copying {table} ({source[table].rows:,} row(s))")
                _copy_table(conn, table, source[table].rows)

        left = delete_orphaned_files(conn, lake)
        if left:
            progress(f"deleted {left} file(s) an earlier, unfinished copy left")
        try:
            in_transaction(conn, copy)
        except duckdb.Error as error:
            with suppress(duckdb.Error):
                delete_orphaned_files(conn, lake)
            first_line = str(error).strip().splitlines()[0]
            raise LakeMigrationError(
                f"the copy failed ({first_line}); nothing was copied, and the files it had "
                "written were deleted. METRICS_DUCKDB_MEMORY_LIMIT sets the memory it may use."
            ) from None
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
