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
from pathlib import Path

import duckdb

from metrics_pipeline.warehouse.permissions import protect

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
    checkpoint: str = "CHECKPOINT",
) -> None:
    """Checkpoints the writer's connection and atomically replaces the snapshot with a copy.

    Called with no transaction open on `conn`, while it holds the warehouse's write lock, so
    no other writer can publish at the same time.
    """
    copy_checkpointed(conn, database, snapshot, shared_with, checkpoint)


def copy_checkpointed(
    conn: duckdb.DuckDBPyConnection,
    database: Path,
    target: Path,
    shared_with: str | None = None,
    checkpoint: str = "CHECKPOINT",
) -> None:
    """Checkpoints the writer's connection (`checkpoint`, the statement that writes the file's
    log into `database`), then atomically replaces `target` with a durable copy of the file
    (the snapshot, or a backup before a migration), owner-only or readable by the group
    `shared_with`."""
    conn.execute(checkpoint)
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
