"""The warehouse as a Dagster resource: the writer's connection (to the DuckDB file, with its
lock wait and the snapshot it publishes; or to a DuckLake) and the readers' sandboxed one."""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, nullcontext, suppress
from pathlib import Path

import duckdb
from dagster import Failure
from dagster_duckdb import DuckDBResource
from pydantic import PrivateAttr

from metrics_pipeline.hours import utc_now
from metrics_pipeline.scratch import private_folder
from metrics_pipeline.settings import (
    DEFAULT_CHUNK_DATAPOINTS,
    ConfigError,
    default_backup_dir,
    duckdb_memory_limit_for,
    resource_field,
    snapshot_path_for,
    variable,
)
from metrics_pipeline.warehouse.lake import (
    CATALOG_CHECKPOINT,
    DuckDBSetting,
    Lake,
    LakeError,
    WriteLock,
    lake_bytes,
    open_lake,
)
from metrics_pipeline.warehouse.migrations import SCHEMA_VERSION, SchemaError, prepare_schema
from metrics_pipeline.warehouse.permissions import (
    check_writable,
    make_folder,
    protect,
    share_tree,
)
from metrics_pipeline.warehouse.readers import ReadSource, SnapshotMissingError, open_reader
from metrics_pipeline.warehouse.schema import STORAGE_COMPATIBILITY_VERSION, drop_restore_copies
from metrics_pipeline.warehouse.snapshot import copy_checkpointed, publish_snapshot
from metrics_pipeline.warehouse.sql import writes_locked_by

# Runs that write the warehouse share this pool; DuckDB takes one writing process at a time.
WAREHOUSE_POOL = "duckdb_warehouse"
# Bytes of DuckDB's log or file per byte of spooled Parquet (six days of 40 simulated
# instances: 36 MB spooled grew the file by 133 MB), and room kept free besides.
WRITE_GROWTH = 4
SPACE_MARGIN_BYTES = 8 * 2**20
# A lake writes the rows as Parquet, about their spooled size; twice it, for the margin.
LAKE_WRITE_GROWTH = 2
# A lake writer's folder for what DuckDB spills past its memory limit (temporary folder).
SPILL_PREFIX = "metrics-pipeline-spill-"


class WarehouseResource(DuckDBResource):
    """The warehouse: the DuckDB file `database`, or the DuckLake of `lake_catalog`.

    On top of dagster-duckdb's resource: a writable-path check at run start, connections that
    are always closed, and a lock wait with a stated budget that ends in one clear failure
    (dagster-duckdb retries a fixed ten times and then re-raises DuckDB's IO error).
    """

    lake_catalog: str = resource_field("warehouse")
    lake_data_path: str = resource_field("lake_data_path")
    retention_days: int = resource_field("retention_days")
    lock_timeout_seconds: float = resource_field("lock_timeout_seconds")
    backup_dir: str = resource_field("backup_dir")
    backup_keep_days: int = resource_field("backup_keep_days")
    shared_group: str = resource_field("shared_group")
    _unpublished: str | None = PrivateAttr(default=None)
    _publish_seconds: float = PrivateAttr(default=0.0)

    @property
    def publish_seconds(self) -> float:
        """How long the last write's snapshot took to publish (checkpoint and copy)."""
        return self._publish_seconds

    @property
    def unpublished(self) -> str | None:
        """Why the last write's snapshot could not be published (None when it was)."""
        return self._unpublished

    @property
    def lake(self) -> Lake | None:
        return Lake(self.lake_catalog, self.lake_data_path) if self.lake_catalog else None

    @property
    def read_source(self) -> ReadSource:
        return self.lake or self.snapshot_path

    def require_writable(self) -> None:
        """Fails at once, never retried, when the file cannot be written: a step calls it
        before asking AWS for anything."""
        if self.database != ":memory:" and not self.lake:
            try:
                check_writable(Path(self.database), self.shared_group or None)
            except ConfigError as error:
                raise Failure(description=str(error), allow_retries=False) from None

    @property
    def snapshot_path(self) -> Path:
        return snapshot_path_for(Path(self.database))

    @property
    def backups_path(self) -> Path:
        return Path(self.backup_dir) if self.backup_dir else default_backup_dir(Path(self.database))

    @contextmanager
    def connect(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """The writer's connection. When the block ends, the readers' snapshot is republished
        from it (see snapshot.py), after an error too: what was committed is whole, and
        readers such as the gap sensor must see it. On a lake, each commit is what readers
        see; on a lake whose catalog is a file, readers see a copy of the catalog, which is
        republished the same way."""
        if self.lake:
            with self._connect_lake() as conn:
                yield conn
            return
        conn = self._connect_waiting_for_lock()
        try:
            self._prepare_schema(conn)  # once per connection, so no write has to
            yield conn
        except BaseException:
            self._publish_after_error(conn)
            raise
        else:
            self._publish_after_success(conn)
        finally:
            conn.close()

    def _publish_after_error(self, conn: duckdb.DuckDBPyConnection) -> None:
        if self._publishes:
            with suppress(Exception):  # the original error is the one to report
                self._publish(conn)

    def _publish_after_success(self, conn: duckdb.DuckDBPyConnection) -> None:
        self._unpublished = None
        if not self._publishes:
            return
        began = time.monotonic()
        try:
            self._publish(conn)
        except (OSError, duckdb.Error) as error:
            # Committed is committed: the run reports its rows as written, and this as a
            # warning; the next writer publishes a snapshot that holds them.
            self._unpublished = f"{type(error).__name__}: {error}".splitlines()[0]
        self._publish_seconds = time.monotonic() - began

    @property
    def _publishes(self) -> bool:
        """Whether readers read a copy that each writer republishes."""
        if self.lake:
            return self.lake.catalog_file is not None
        return self.database != ":memory:"

    def require_space(self, incoming_bytes: int) -> None:
        """Fails before a write the disk cannot hold, naming what it needs: the new rows in the
        write-ahead log and then in the file (each about WRITE_GROWTH times their spooled
        Parquet size), and a new snapshot, a copy of the whole file."""
        if self.lake:
            if not self.lake.on_s3:
                self._require_lake_space(incoming_bytes)
            return
        if self.database == ":memory:":
            return
        database = Path(self.database)
        current = self._file_bytes()
        growth = WRITE_GROWTH * incoming_bytes
        needed = 2 * growth + current + growth + SPACE_MARGIN_BYTES
        free = shutil.disk_usage(database.parent).free
        if free < needed:
            raise Failure(
                description=(
                    f"Not enough free space for this write next to {database}: it needs about "
                    f"{needed / 2**20:,.0f} MiB (the new rows, then a new snapshot of the "
                    f"{current / 2**20:,.0f} MiB warehouse), {free / 2**20:,.0f} MiB are free; "
                    "nothing was written. Free some space or move METRICS_DUCKDB_PATH, then the "
                    "gap sensor collects these hours."
                ),
                allow_retries=False,
            )

    def _require_lake_space(self, incoming_bytes: int) -> None:
        """A lake on this machine: the new rows' data files in its data folder, and a new copy
        of its catalog file beside it (the whole catalog, as a snapshot of the file is)."""
        assert self.lake is not None
        data = Path(self.lake.data_path)
        needs = [(data, LAKE_WRITE_GROWTH * incoming_bytes)]
        catalog = self.lake.catalog_file
        catalog_bytes = catalog.stat().st_size if catalog and catalog.exists() else 0
        if catalog:
            needs.append((catalog.parent, 2 * catalog_bytes))
        by_device: dict[int, tuple[Path, int]] = {}
        for path, needed in needs:
            existing = next(p for p in (path, *path.parents) if p.exists())
            device = existing.stat().st_dev
            place, before = by_device.get(device, (existing, 0))
            by_device[device] = (place, before + needed)
        for place, needed in by_device.values():
            free = shutil.disk_usage(place).free
            if free < needed + SPACE_MARGIN_BYTES:
                raise Failure(
                    description=(
                        f"Not enough free space for this write next to {place}: it needs about "
                        f"{(needed + SPACE_MARGIN_BYTES) / 2**20:,.0f} MiB (the new rows' data "
                        f"files, then a new copy of the {catalog_bytes / 2**20:,.0f} MiB lake "
                        f"catalog), {free / 2**20:,.0f} MiB are free; nothing was written. Free "
                        "some space or move METRICS_WAREHOUSE or METRICS_LAKE_DATA_PATH, then the "
                        "gap sensor collects these hours."
                    ),
                    allow_retries=False,
                )

    def _publish(self, conn: duckdb.DuckDBPyConnection) -> None:
        shared_with = self.shared_group or None
        catalog = self.lake.catalog_file if self.lake else None
        if catalog:
            publish_snapshot(
                conn, catalog, snapshot_path_for(catalog), shared_with, CATALOG_CHECKPOINT
            )
            if shared_with and self.lake and not self.lake.on_s3:
                share_tree(Path(self.lake.data_path), shared_with)
        else:
            publish_snapshot(conn, Path(self.database), self.snapshot_path, shared_with)

    def prepare(self) -> None:
        """A run's first step, before AWS is asked anything: the file can be written and its
        tables are this build's (an older warehouse is backed up and migrated). Failures are
        final: no retry can fix them."""
        if self.lake:
            self._refuse_to_hide_an_earlier_file()
            with self._connect_lake():
                return
        if self.database == ":memory:":
            return
        conn = self._connect_waiting_for_lock()  # which checks that the file can be written
        try:
            self._prepare_schema(conn)
        finally:
            conn.close()

    def _refuse_to_hide_an_earlier_file(self) -> None:
        """A new lake on this machine next to the DuckDB file of METRICS_DUCKDB_PATH (the
        default warehouse before the lake): its history must be moved first, or it would
        stay in the file, unread."""
        assert self.lake is not None
        catalog, earlier = self.lake.catalog_file, Path(self.database)
        if catalog and not catalog.exists() and self.database != ":memory:" and earlier.exists():
            raise Failure(
                description=(
                    f"The DuckDB warehouse {earlier} holds the history of an earlier version, "
                    f"and the lake {self.lake.label} is new: move the history first with "
                    f"`metrics-pipeline migrate-to-lake --warehouse {earlier}` (scripts/start.sh "
                    f"does it itself), or set {variable('duckdb_path')} to keep writing the "
                    "file. Nothing was written."
                ),
                allow_retries=False,
            )

    def _prepare_schema(self, conn: duckdb.DuckDBPyConnection) -> None:
        def back_up(version: int) -> None:
            if self.database == ":memory:" or self.lake:  # DuckLake keeps earlier snapshots
                return
            make_folder(self.backups_path)
            target = self.backups_path / (
                f"before-schema-v{SCHEMA_VERSION}-from-v{version}-{utc_now():%Y%m%dT%H%M%S}.duckdb"
            )
            copy_checkpointed(conn, Path(self.database), target)

        try:
            prepare_schema(conn, back_up, utc_now())
            if not self.lake:
                drop_restore_copies(conn)
        except SchemaError as error:
            raise Failure(
                description=f"The warehouse {self.database}: {error}", allow_retries=False
            ) from None

    def _memory_config(self) -> dict[str, str]:
        # What a write of the default chunk needs (build_resources passes the configured
        # chunk's); DuckDB spills past it.
        return {
            "memory_limit": duckdb_memory_limit_for(DEFAULT_CHUNK_DATAPOINTS),
            **self.connection_config,
        }

    @contextmanager
    def _connect_lake(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """The lake attached, its schema ready, each transaction under the writers' lock (a
        catalog file is locked by DuckDB for as long as it is attached: one writer at a time,
        as with the DuckDB file)."""
        assert self.lake is not None
        lake = self.lake
        # An in-memory DuckDB spills into `.tmp` under the working directory unless told
        # otherwise: into a private folder instead, which the next writer removes if killed.
        with private_folder(SPILL_PREFIX) as spill:
            config = {**self._memory_config(), "temp_directory": str(spill)}
            try:
                if lake.catalog_file:
                    conn = self._waiting_for_lock(
                        lambda: self._open_catalog_file(lake, config), str(lake.catalog_file)
                    )
                else:
                    conn = open_lake(lake, read_only=False, config=config)
            except LakeError as error:
                raise Failure(description=str(error), allow_retries=True) from None
            try:
                lock = WriteLock(lake, self.lock_timeout_seconds) if lake.postgres_dsn else None
            except LakeError as error:
                conn.close()
                raise Failure(description=str(error), allow_retries=True) from None
            try:
                with writes_locked_by(conn, lock.held) if lock else nullcontext():
                    self._prepare_schema(conn)
                    yield conn
            except BaseException:
                self._publish_after_error(conn)
                raise
            else:
                self._publish_after_success(conn)
            finally:
                conn.close()
                if lock:
                    lock.close()

    def _open_catalog_file(
        self, lake: Lake, config: Mapping[str, DuckDBSetting]
    ) -> duckdb.DuckDBPyConnection:
        assert lake.catalog_file is not None
        try:
            check_writable(lake.catalog_file, self.shared_group or None, "warehouse")
            check_writable(Path(lake.data_path) / "-", self.shared_group or None, "lake_data_path")
        except ConfigError as error:
            raise Failure(description=str(error), allow_retries=False) from None
        conn = open_lake(lake, read_only=False, config=config)
        protect(lake.catalog_file)  # DuckDB created it with the umask's mode
        return conn

    def _connect_waiting_for_lock(self) -> duckdb.DuckDBPyConnection:
        self.require_writable()

        def connect() -> duckdb.DuckDBPyConnection:
            conn = duckdb.connect(
                self.database,
                config={
                    "custom_user_agent": "dagster",
                    "storage_compatibility_version": STORAGE_COMPATIBILITY_VERSION,
                    **self._memory_config(),
                },
            )
            if self.database != ":memory:":
                protect(Path(self.database))  # DuckDB created it with the umask's mode
            return conn

        return self._waiting_for_lock(connect, self.database)

    def _waiting_for_lock(
        self, connect: Callable[[], duckdb.DuckDBPyConnection], what: str
    ) -> duckdb.DuckDBPyConnection:
        """`connect()`, tried again while another process holds the file `what`, for at most
        the lock's budget."""
        deadline = time.monotonic() + self.lock_timeout_seconds
        delay = 0.1
        while True:
            try:
                return connect()
            except (duckdb.IOException, LakeError) as error:
                if "lock" not in str(error).lower():
                    raise
                if time.monotonic() + delay > deadline:
                    raise Failure(
                        description=(
                            f"The warehouse {what} is locked by another process and "
                            f"was not released within {self.lock_timeout_seconds:g} s "
                            f"({variable('lock_timeout_seconds')}); nothing was written. "
                            f"DuckDB said: {error}"
                        ),
                        # The budget was the wait: retrying the step would only wait again.
                        allow_retries=False,
                    ) from None
                time.sleep(delay)
                delay = min(delay * 2, 5.0)

    @contextmanager
    def get_connection(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """dagster-duckdb's entry point, made the writer's connection: code written for
        DuckDBResource gets the lock wait and the snapshot publish too."""
        with self.connect() as conn:
            yield conn

    @contextmanager
    def reader(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """A reader's connection to the latest snapshot, or the lake's latest commit: never
        waits for, nor blocks, a writer. Raises SnapshotMissingError until the first write."""
        with open_reader(self.read_source) as conn:
            yield conn

    def stored_bytes(self, conn: duckdb.DuckDBPyConnection) -> int:
        """The warehouse's size: the file and its write-ahead log, or the lake's data files."""
        return lake_bytes(conn) if self.lake else self._file_bytes()

    def _file_bytes(self) -> int:
        paths = [Path(self.database), Path(f"{self.database}.wal")]
        return sum(p.stat().st_size for p in paths if p.exists())

    def has_data(self) -> bool:
        """Whether a first write has happened (readers have something to read)."""
        if not self.lake:
            return self.snapshot_path.exists()
        try:
            with self.reader():
                return True
        except SnapshotMissingError:
            return False
