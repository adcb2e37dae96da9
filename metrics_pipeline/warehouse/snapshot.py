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

from metrics_pipeline.warehouse.permissions import protect
from metrics_pipeline.warehouse.sql import sql_literal

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


def publish_snapshot(
    conn: duckdb.DuckDBPyConnection,
    database: Path,
    snapshot: Path,
    shared_with: str | None = None,
) -> None:
    """Checkpoints the writer's connection and atomically replaces the snapshot with a copy.

    Called with no transaction open on `conn`, while it holds the warehouse's write lock, so
    no other writer can publish at the same time.
    """
    copy_checkpointed(conn, database, snapshot, shared_with)


def copy_checkpointed(
    conn: duckdb.DuckDBPyConnection,
    database: Path,
    target: Path,
    shared_with: str | None = None,
) -> None:
    """Checkpoints the writer's connection, then atomically replaces `target` with a durable
    copy of the file (the snapshot, or a backup before a migration), owner-only or readable
    by the group `shared_with`."""
    conn.execute("CHECKPOINT")
    for stale in target.parent.glob(f".{target.name}.*.partial"):  # a copy killed midway
        stale.unlink(missing_ok=True)
    partial = target.with_name(f".{target.name}.{os.getpid()}.partial")
    try:
        subprocess.run(
            [sys.executable, "-c", _COPY, str(database), str(partial)],
            check=True,
            capture_output=True,
            text=True,
        )
        protect(partial, shared_with)
        os.replace(partial, target)
    except subprocess.CalledProcessError as error:
        raise OSError(f"could not copy {database} to {partial}: {error.stderr.strip()}") from None
    finally:
        partial.unlink(missing_ok=True)
    folder = os.open(target.parent, os.O_RDONLY)
    try:
        os.fsync(folder)  # the rename itself survives a power cut
    finally:
        os.close(folder)


# Every reader's connection is a sandbox, so analysts' SQL (`metrics-pipeline query`,
# query.connect()) can read the snapshot and nothing else, whatever its text ("Securing
# DuckDB" in DuckDB's docs):
# - no extension is installed or loaded behind a query's back (the config below);
# - no spilling: with no temp_directory a query too big for memory fails with DuckDB's
#   out-of-memory error instead of writing files;
# - enable_external_access=false: no files, network, ATTACH, INSTALL or LOAD. But DuckDB then
#   still allows the attached database's own paths, the snapshot and its .wal siblings, for
#   writing too: `COPY ... TO '<snapshot>' (USE_TMP_FILE false)` overwrote the snapshot. So
#   DuckDB's local file system is disabled as well: the snapshot, opened by ATTACH already,
#   is read through its open handle. (Disabled after enable_external_access, which needs it.)
# - lock_configuration: no SET, RESET or PRAGMA can undo any of this.
_READER_CONFIG = {
    "autoinstall_known_extensions": False,
    "autoload_known_extensions": False,
    "temp_directory": "",
}
_SANDBOX = (
    "SET enable_external_access = false",
    "SET disabled_filesystems = 'LocalFileSystem'",
    "SET lock_configuration = true",
)


def _attach(snapshot: Path) -> duckdb.DuckDBPyConnection:
    """A fresh in-memory database with the snapshot attached read-only and in use.

    Not duckdb.connect(path): that reuses any connection this process already holds to the
    path, which would still be reading the snapshot it was opened on.
    """
    if not snapshot.exists():
        raise SnapshotMissingError(
            f"No warehouse snapshot at {snapshot} yet: the pipeline publishes it after its "
            "first write (check METRICS_DUCKDB_PATH, or materialize rds_instances first)."
        )
    conn = duckdb.connect(":memory:", config=_READER_CONFIG)
    try:
        conn.execute(f"ATTACH {sql_literal(snapshot)} AS {SNAPSHOT_ALIAS} (READ_ONLY)")
        conn.execute(f"USE {SNAPSHOT_ALIAS}")
    except BaseException:
        conn.close()
        raise
    return conn


@contextmanager
def open_snapshot(
    snapshot: Path, memory_limit: str | None = None
) -> Iterator[duckdb.DuckDBPyConnection]:
    """A connection that sees the current snapshot and nothing else of the machine; newer
    snapshots are seen by the next connection, not by this one.

    Every reader uses it (the CLI, query.py, sensors, checks, health), and it is safe for SQL
    from anyone: no file or network access, no extensions, configuration locked (see above).
    Registered DataFrames (`conn.register`) still work; DuckDB's implicit scan of Python
    variables by name does not.
    """
    conn = _attach(snapshot)
    try:
        if memory_limit:
            conn.execute(f"SET memory_limit = {sql_literal(memory_limit)}")
        for statement in _SANDBOX:
            conn.execute(statement)
        yield conn
    finally:
        conn.close()


@contextmanager
def open_snapshot_for_export(snapshot: Path, target: Path) -> Iterator[duckdb.DuckDBPyConnection]:
    """The snapshot with writes allowed into `target` only, for the package's own
    EXPORT DATABASE (backups.py). Never hand it SQL from a user: it is not the sandbox,
    as DuckDB's file system stays on (the export needs it)."""
    conn = _attach(snapshot)
    try:
        conn.execute(f"SET allowed_directories = [{sql_literal(target)}]")
        conn.execute("SET enable_external_access = false")
        conn.execute("SET lock_configuration = true")
        yield conn
    finally:
        conn.close()


@contextmanager
def open_snapshot_for_extract(
    snapshot: Path, spill: Path, memory_limit: str
) -> Iterator[duckdb.DuckDBPyConnection]:
    """The snapshot for statements the package builds itself (the CLI's extracts), never a
    user's: within `memory_limit`, a sort over days of a fleet spills to `spill` (a private
    temporary folder, the only path it may write) instead of growing in memory."""
    conn = _attach(snapshot)
    try:
        conn.execute(f"SET memory_limit = {sql_literal(memory_limit)}")
        # One thread: each thread holds its own share of the sort and the pivot, which pushed
        # a week's wide extract past the limit now and then; one stays within it.
        conn.execute("SET threads = 1")
        conn.execute(f"SET temp_directory = {sql_literal(spill)}")
        conn.execute(f"SET allowed_directories = [{sql_literal(spill)}]")
        conn.execute("SET enable_external_access = false")
        conn.execute("SET lock_configuration = true")
        yield conn
    finally:
        conn.close()
