"""The read-only copy of the warehouse that every reader opens.

DuckDB lets one process write a file, or many processes read it, never both at once. So
nobody reads the warehouse itself: after each committed write the writer checkpoints and
copies the file to a snapshot next to it, swapped in with an atomic rename. A reader that
opened the previous snapshot keeps reading that one undisturbed (the old file lives until it
closes it); the next reader gets the new one. Only committed, checkpointed files are copied,
so no reader can see a half-written hour, and no reader can block a writer.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import duckdb

from metrics_pipeline.warehouse import ensure_schema, sql_literal

SNAPSHOT_ALIAS = "warehouse"


class SnapshotMissingError(FileNotFoundError):
    """No snapshot has been published yet (the pipeline has not written anything)."""


def publish_snapshot(conn: duckdb.DuckDBPyConnection, database: Path, snapshot: Path) -> int:
    """Checkpoints the writer's connection and atomically replaces the snapshot with a copy.

    Returns the bytes copied. Must be called with no transaction open on `conn`.
    """
    ensure_schema(conn)
    conn.execute("CHECKPOINT")
    partial = snapshot.with_name(f".{snapshot.name}.{os.getpid()}.partial")
    try:
        shutil.copyfile(database, partial)
        with open(partial, "rb+") as copied:
            os.fsync(copied.fileno())
        os.replace(partial, snapshot)
    finally:
        partial.unlink(missing_ok=True)
    return snapshot.stat().st_size


@contextmanager
def open_snapshot(snapshot: Path) -> Iterator[duckdb.DuckDBPyConnection]:
    """A read-only connection to the current snapshot; newer snapshots are seen by the next
    connection, not by this one.

    The snapshot is attached to a fresh in-memory database rather than opened with
    duckdb.connect(path): the latter reuses any connection this process already holds to
    the path, which would still be reading the snapshot it was opened on.
    """
    if not snapshot.exists():
        raise SnapshotMissingError(
            f"No warehouse snapshot at {snapshot} yet: the pipeline publishes it after its "
            "first write (check METRICS_DUCKDB_PATH, or materialize rds_instances first)."
        )
    conn = duckdb.connect(":memory:")
    try:
        conn.execute(f"ATTACH {sql_literal(snapshot)} AS {SNAPSHOT_ALIAS} (READ_ONLY)")
        conn.execute(f"USE {SNAPSHOT_ALIAS}")
        yield conn
    finally:
        conn.close()
