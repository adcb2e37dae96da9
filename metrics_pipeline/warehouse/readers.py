"""Every reader's connection: to the DuckDB file's published snapshot (see snapshot.py), or
to a DuckLake's latest commit (through the published copy of its catalog when that is a
file), attached read-only.

Each is a sandbox, so analysts' SQL (`metrics-pipeline query`, query.connect()) can read the
warehouse and nothing else, whatever its text ("Securing DuckDB" in DuckDB's docs):
- no extension is installed or loaded behind a query's back (the config below); a lake's
  own (ducklake, postgres, httpfs) are loaded before the configuration is locked;
- no spilling: with no temp_directory a query too big for memory fails with DuckDB's
  out-of-memory error instead of writing files;
- enable_external_access=false: no files, network, ATTACH, INSTALL or LOAD, but for what is
  attached already (the snapshot, the lake's catalog) and a lake's data path, which DuckDB
  then allows for writing too: on a lake, readers' S3 credentials must be read-only
  (deploy/iam/analyst-policy.json) as their database role must. DuckDB then still
  allows the attached database's own paths, the snapshot and its .wal siblings, for writing
  too: `COPY ... TO '<snapshot>' (USE_TMP_FILE false)` overwrote the snapshot. So DuckDB's
  local file system is disabled as well (for a lake on S3 too): the snapshot, opened by
  ATTACH already, is read through its open handle. (Disabled after enable_external_access,
  which needs it.) A lake's local data folder is then read through ReadOnlyFolder
  (read_only_folder.py), which opens files there for reading only.
- lock_configuration: no SET, RESET or PRAGMA can undo any of this.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import duckdb

from metrics_pipeline.settings import snapshot_path_for
from metrics_pipeline.warehouse.lake import DuckDBConfig, Lake, LakeError, open_lake
from metrics_pipeline.warehouse.read_only_folder import ReadOnlyFolder, read_only_url
from metrics_pipeline.warehouse.schema import VERSION_TABLE, table_exists
from metrics_pipeline.warehouse.sql import sql_literal

SNAPSHOT_ALIAS = "warehouse"
# What a reader reads: the snapshot file, or the lake.
ReadSource = Path | Lake

_READER_CONFIG: DuckDBConfig = {
    "autoinstall_known_extensions": False,
    "autoload_known_extensions": False,
    "temp_directory": "",
}


class SnapshotMissingError(FileNotFoundError):
    """Nothing has been published yet (the pipeline has not written anything)."""


def _attach(source: ReadSource, sandboxed: bool = True) -> duckdb.DuckDBPyConnection:
    """A fresh in-memory database with the warehouse attached read-only and in use; a lake's
    local data folder read through ReadOnlyFolder when `sandboxed`.

    Not duckdb.connect(path): that reuses any connection this process already holds to the
    path, which would still be reading the snapshot it was opened on.
    """
    if isinstance(source, Lake):
        return _attach_lake(source, sandboxed)
    if not source.exists():
        raise SnapshotMissingError(
            f"No warehouse snapshot at {source} yet: the pipeline publishes it after its "
            "first write (check METRICS_DUCKDB_PATH, or materialize rds_instances first)."
        )
    conn = duckdb.connect(":memory:", config=_READER_CONFIG)
    try:
        conn.execute(f"ATTACH {sql_literal(source)} AS {SNAPSHOT_ALIAS} (READ_ONLY)")
        conn.execute(f"USE {SNAPSHOT_ALIAS}")
    except BaseException:
        conn.close()
        raise
    return conn


def _attach_lake(lake: Lake, sandboxed: bool) -> duckdb.DuckDBPyConnection:
    """The lake's latest commit: its catalog, or the copy its writers publish of a catalog
    file (which only one process at a time may open)."""
    missing = SnapshotMissingError(
        f"The lake {lake.label} has no warehouse tables yet: the pipeline creates "
        "them at its first write (check METRICS_WAREHOUSE, or materialize "
        "rds_instances first)."
    )
    copy = snapshot_path_for(lake.catalog_file) if lake.catalog_file else None
    if copy and not copy.exists():
        raise missing
    folder = ReadOnlyFolder(lake.data_path) if sandboxed and not lake.on_s3 else None
    try:
        conn = open_lake(
            lake, read_only=True, config=_READER_CONFIG, catalog_copy=copy, data_folder=folder
        )
    except LakeError as error:
        if "creating a new DuckLake is explicitly disabled" in str(error):
            raise missing from None  # a catalog database nothing has written yet
        raise
    if not table_exists(conn, VERSION_TABLE):
        conn.close()
        raise missing
    return conn


def _lock_down(
    conn: duckdb.DuckDBPyConnection,
    source: ReadSource,
    writable: tuple[Path, ...] = (),
    sandboxed: bool = True,
) -> None:
    """No file or network access but to `writable` and a lake's data path (its files are read
    by path: only its inlined rows live in the catalog), then the configuration locked. When
    `sandboxed`, DuckDB's local file system is off: a lake's local data folder is read
    through ReadOnlyFolder instead."""
    allowed = [str(path) for path in writable]
    local_data = isinstance(source, Lake) and not source.on_s3
    if isinstance(source, Lake):
        in_sandbox = sandboxed and local_data
        allowed.append(read_only_url(source.data_path) if in_sandbox else source.data_path)
    if allowed:
        listed = ", ".join(sql_literal(directory) for directory in allowed)
        conn.execute(f"SET allowed_directories = [{listed}]")
    conn.execute("SET enable_external_access = false")
    if sandboxed:
        conn.execute("SET disabled_filesystems = 'LocalFileSystem'")
    conn.execute("SET lock_configuration = true")


@contextmanager
def open_reader(
    source: ReadSource, memory_limit: str | None = None
) -> Iterator[duckdb.DuckDBPyConnection]:
    """A connection that sees the warehouse as it is now and nothing else of the machine;
    later writes are seen by the next connection, not by this one.

    Every reader uses it (the CLI, query.py, sensors, checks, health), and it is safe for SQL
    from anyone (see above). Registered DataFrames (`conn.register`) still work; DuckDB's
    implicit scan of Python variables by name does not.
    """
    conn = _attach(source)
    try:
        if memory_limit:
            conn.execute(f"SET memory_limit = {sql_literal(memory_limit)}")
        _lock_down(conn, source)
        yield conn
    finally:
        conn.close()


@contextmanager
def open_reader_for_export(source: ReadSource, target: Path) -> Iterator[duckdb.DuckDBPyConnection]:
    """The warehouse with writes allowed into `target` only, for the package's own
    EXPORT DATABASE (backups.py). Never hand it SQL from a user: it is not the sandbox,
    as DuckDB's file system stays on (the export needs it)."""
    conn = _attach(source, sandboxed=False)
    try:
        _lock_down(conn, source, writable=(target,), sandboxed=False)
        yield conn
    finally:
        conn.close()


@contextmanager
def open_reader_for_extract(
    source: ReadSource, spill: Path, memory_limit: str
) -> Iterator[duckdb.DuckDBPyConnection]:
    """The warehouse for statements the package builds itself (the CLI's extracts), never a
    user's: within `memory_limit`, a sort over days of a fleet spills to `spill` (a private
    temporary folder, the only path it may write) instead of growing in memory."""
    conn = _attach(source, sandboxed=False)
    try:
        conn.execute(f"SET memory_limit = {sql_literal(memory_limit)}")
        # One thread: each thread holds its own share of the sort and the pivot, which pushed
        # a week's wide extract past the limit now and then; one stays within it.
        conn.execute("SET threads = 1")
        conn.execute(f"SET temp_directory = {sql_literal(spill)}")
        _lock_down(conn, source, writable=(spill,), sandboxed=False)
        yield conn
    finally:
        conn.close()
