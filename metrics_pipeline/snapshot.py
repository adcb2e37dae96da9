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
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import duckdb

from metrics_pipeline.warehouse import ensure_schema, sql_literal

SNAPSHOT_ALIAS = "warehouse"


class SnapshotMissingError(FileNotFoundError):
    """No snapshot has been published yet (the pipeline has not written anything)."""


# The copy runs in a child process: DuckDB holds its write lock with POSIX fcntl locks,
# which a process loses on *every* handle to the file as soon as it closes *any* handle to
# it, so opening and closing the warehouse in the writer's own process would let a second
# writer in while the first still has the file open.
_COPY = """
import os, shutil, sys
shutil.copyfile(sys.argv[1], sys.argv[2])
with open(sys.argv[2], "rb+") as copied:
    os.fsync(copied.fileno())
"""


def publish_snapshot(conn: duckdb.DuckDBPyConnection, database: Path, snapshot: Path) -> None:
    """Checkpoints the writer's connection and atomically replaces the snapshot with a copy.

    Called with no transaction open on `conn`, while it holds the warehouse's write lock, so
    no other writer can publish at the same time.
    """
    ensure_schema(conn)
    conn.execute("CHECKPOINT")
    for stale in snapshot.parent.glob(f".{snapshot.name}.*.partial"):  # a publish killed midway
        stale.unlink(missing_ok=True)
    partial = snapshot.with_name(f".{snapshot.name}.{os.getpid()}.partial")
    try:
        subprocess.run(
            [sys.executable, "-c", _COPY, str(database), str(partial)],
            check=True,
            capture_output=True,
            text=True,
        )
        os.replace(partial, snapshot)
    except subprocess.CalledProcessError as error:
        raise OSError(f"could not copy {database} to {partial}: {error.stderr.strip()}") from None
    finally:
        partial.unlink(missing_ok=True)
    folder = os.open(snapshot.parent, os.O_RDONLY)
    try:
        os.fsync(folder)  # the rename itself survives a power cut
    finally:
        os.close(folder)


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
