"""Backups of the warehouse: DuckDB's EXPORT DATABASE to Parquet, taken from the snapshot.

The snapshot is a committed, checkpointed copy that no writer touches, so a backup is
consistent while collection goes on and never holds the warehouse's lock. Each backup is a
folder named after its UTC time, holding DuckDB's `schema.sql`, `load.sql` (so plain
`IMPORT DATABASE` also restores it, without this package), one Parquet file per table, and a
manifest: per table its row count and columns, per file its SHA-256. A restore verifies all of
it before it changes anything. A backup appears under its final name only once complete.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb

from metrics_pipeline.scratch import hold, remove_if_abandoned
from metrics_pipeline.warehouse.lake import LakeError
from metrics_pipeline.warehouse.permissions import make_folder, protect
from metrics_pipeline.warehouse.readers import (
    ReadSource,
    SnapshotMissingError,
    open_reader_for_export,
)
from metrics_pipeline.warehouse.schema import (
    RESTORE_COPY_SUFFIX,
    VERSION_TABLE,
    base_tables,
    drop_restore_copies,
    is_lake,
)
from metrics_pipeline.warehouse.sql import in_transaction, sql_literal
from metrics_pipeline.warehouse.tables import DERIVED_TABLES

NAME_FORMAT = "%Y%m%dT%H%M%SZ"
MANIFEST = "manifest.json"
PARTIAL_SUFFIX = ".partial"  # `.NAME.partial`: a backup being made
# Rows a restore inserts at once: what DuckDB holds in memory for a chunk's keys (about
# 100 MiB for rds_metrics) stays within the smallest METRICS_DUCKDB_MEMORY_LIMIT allowed.
RESTORE_CHUNK_ROWS = 250_000


class BackupError(ValueError):
    """A backup that cannot be made or restored; the message says which and why."""


class RestoreFailed(RuntimeError):
    """A verified backup whose restore failed on the way (the disk, the memory limit): the
    warehouse is as it was."""


@dataclass(frozen=True)
class Backup:
    name: str
    path: Path
    created_at: datetime  # naive UTC
    rows: dict[str, int]
    columns: dict[str, list[list[str]]]  # per table: [name, type] in order; empty: unverified
    checksums: dict[str, str]  # per file: SHA-256; empty for backups made before checksums

    @property
    def size_bytes(self) -> int:
        return sum(f.stat().st_size for f in self.path.iterdir() if f.is_file())

    @property
    def verifiable(self) -> bool:
        return bool(self.checksums)


def _naive_utc(raw: str) -> datetime:
    moment = datetime.fromisoformat(raw)
    return moment.astimezone(UTC).replace(tzinfo=None) if moment.tzinfo else moment


def read_backup(path: Path) -> Backup:
    """The backup in `path`; raises BackupError naming what is wrong with it."""
    try:
        manifest = json.loads((path / MANIFEST).read_text())
        return Backup(
            name=path.name,
            path=path,
            created_at=_naive_utc(manifest["created_at"]),
            rows={str(table): int(count) for table, count in manifest["rows"].items()},
            columns={str(t): list(c) for t, c in manifest.get("columns", {}).items()},
            checksums={str(f): str(h) for f, h in manifest.get("sha256", {}).items()},
        )
    except FileNotFoundError:
        raise BackupError(f"{path.name}: no {MANIFEST}") from None
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as error:
        raise BackupError(f"{path.name}: unreadable {MANIFEST} ({error})") from None


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _row_count(conn: duckdb.DuckDBPyConnection, table: str) -> int:
    counted = conn.execute(f"SELECT count(*) FROM {table}").fetchone()
    return int(counted[0]) if counted else 0


def _table_columns(conn: duckdb.DuckDBPyConnection, table: str) -> list[list[str]]:
    return [
        [name, data_type]
        for name, data_type in conn.execute(
            "SELECT column_name, data_type FROM information_schema.columns "
            "WHERE table_name = ? AND table_catalog = current_database() ORDER BY ordinal_position",
            [table],
        ).fetchall()
    ]


def _reserve_name(folder: Path, now: datetime) -> tuple[Path, int]:
    """An empty, owner-only folder under a new name, held by this process (scratch.hold), and
    the descriptor holding it: the UTC time, with -2, -3... when a backup made in the same
    second took it (mkdir is atomic, so two processes never get the same one)."""
    base = now.strftime(NAME_FORMAT)
    for number in range(1, 1000):
        target = folder / (base if number == 1 else f"{base}-{number}")
        try:
            target.mkdir(mode=0o700)
        except FileExistsError:
            continue
        held = hold(target)
        if held is not None:  # else removed as abandoned before we held it: take another
            return target, held
    raise BackupError(f"no free backup name for {base} in {folder}.")


def _is_backup_name(name: str) -> bool:
    try:
        datetime.strptime(name.split("-")[0], NAME_FORMAT)
    except ValueError:
        return False
    return True


def remove_abandoned_backups(folder: Path) -> list[str]:
    """Removes what killed `backup create`s left in `folder`: their hidden `.NAME.partial`
    folders and the empty NAME folders they had reserved. A backup being made is left alone:
    its process holds NAME (scratch.hold) until it is complete. Returns the names removed."""
    if not folder.is_dir():
        return []
    names = set()
    for path in folder.iterdir():
        if path.name.startswith(".") and path.name.endswith(PARTIAL_SUFFIX):
            names.add(path.name[1 : -len(PARTIAL_SUFFIX)])
        elif _is_backup_name(path.name) and path.is_dir() and not any(path.iterdir()):
            names.add(path.name)
    removed = []
    for name in sorted(names):
        reserved, partial = folder / name, folder / f".{name}{PARTIAL_SUFFIX}"

        def remove(reserved: Path, partial: Path = partial) -> None:
            if partial.is_dir() and not partial.is_symlink():
                shutil.rmtree(partial, ignore_errors=True)
            if not any(reserved.iterdir()):
                reserved.rmdir()

        if reserved.exists() or reserved.is_symlink():
            if remove_if_abandoned(reserved, remove):
                removed.append(name)
        elif remove_if_abandoned(partial):
            removed.append(name)
    return removed


def create_backup(source: ReadSource, folder: Path, now: datetime) -> Backup:
    """Exports the snapshot (or the lake's latest commit) to a new folder named after `now`
    (naive UTC). Everything is owner-only from its creation; what a killed one left is
    removed first."""
    make_folder(folder)  # owner-only: a backup holds all the warehouse holds
    remove_abandoned_backups(folder)
    target, held_target = _reserve_name(folder, now)
    partial = folder / f".{target.name}{PARTIAL_SUFFIX}"
    try:
        partial.mkdir(mode=0o700)  # DuckDB's files in it are unreachable for others
        try:
            with open_reader_for_export(source, partial) as conn:
                tables = base_tables(conn)
                rows = {table: _row_count(conn, table) for table in tables}
                columns = {table: _table_columns(conn, table) for table in tables}
                conn.execute(f"EXPORT DATABASE {sql_literal(partial)} (FORMAT parquet)")
        except SnapshotMissingError as error:
            raise BackupError(f"nothing to back up: {error}") from None
        except LakeError as error:
            raise BackupError(f"cannot back up: {error}") from None
        # DuckDB wrote the partial folder's path into load.sql; point it at the final one.
        load_sql = partial / "load.sql"
        load_sql.write_text(load_sql.read_text().replace(str(partial), str(target)))
        checksums = {f.name: _sha256(f) for f in sorted(partial.glob("*.parquet"))}
        manifest = {
            "created_at": now.isoformat(),
            "source": str(source),
            "rows": rows,
            "columns": columns,
            "sha256": checksums,
        }
        (partial / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
        for path in (*partial.iterdir(), partial):
            protect(path)
        os.replace(partial, target)  # over the empty reserved folder, atomically
    except BaseException:
        if target.is_dir() and not any(target.iterdir()):
            target.rmdir()
        raise
    finally:
        shutil.rmtree(partial, ignore_errors=True)
        os.close(held_target)
    return Backup(target.name, target, now, rows, columns, checksums)


def list_backups(folder: Path, skipped: list[str] | None = None) -> list[Backup]:
    """Complete backups, newest first. Partial ones (hidden folders) are not listed; a folder
    named like a backup whose manifest cannot be read is left out and named in `skipped`."""
    if not folder.is_dir():
        return []
    backups = []
    for path in sorted(folder.iterdir()):
        # A link is not a backup this folder holds: never listed, followed or deleted.
        if path.is_symlink() or not path.is_dir() or path.name.startswith("."):
            continue
        if not _is_backup_name(path.name):
            continue  # another folder
        try:
            backups.append(read_backup(path))
        except BackupError as error:
            if skipped is not None and any(path.iterdir()):  # empty: one being made
                skipped.append(str(error))
    return sorted(backups, key=lambda b: b.created_at, reverse=True)


def prune_backups(folder: Path, keep_days: int, now: datetime) -> list[Backup]:
    """Deletes backups older than `keep_days`, always keeping the newest one."""
    backups = list_backups(folder)
    cutoff = now - timedelta(days=keep_days)
    expired = [b for b in backups[1:] if b.created_at < cutoff]
    for backup in expired:
        shutil.rmtree(backup.path)
    return expired


def find_backup(folder: Path, name: str) -> Backup:
    skipped: list[str] = []
    backups = list_backups(folder, skipped)
    for backup in backups:
        if backup.name == name:
            return backup
    for problem in skipped:
        if problem.startswith(f"{name}: "):
            raise BackupError(f"backup {problem}.")
    listed = ", ".join(b.name for b in backups[:10]) or "none"
    raise BackupError(f"backup: no backup named '{name}' in {folder}; the newest are: {listed}.")


def verify_backup(backup: Backup, tables: set[str]) -> None:
    """Checks the backup against its manifest before anything is changed: every file's
    checksum, every table's columns, and that it holds every table that is not derived.
    Raises BackupError naming the first thing that does not match."""

    def refuse(problem: str) -> BackupError:
        return BackupError(f"backup {backup.name}: {problem}; nothing was restored.")

    if not backup.verifiable:
        raise refuse(
            "it was made before backups carried checksums and cannot be verified "
            "(restore it with --unverified to accept that)"
        )
    unknown = sorted(set(backup.rows) - tables - {VERSION_TABLE})
    if unknown:
        raise refuse(f"it holds table(s) this warehouse does not have: {', '.join(unknown)}")
    missing = sorted(tables - set(backup.rows) - DERIVED_TABLES)
    if missing:
        raise refuse(f"its manifest lists no {', '.join(missing)}")
    for table in backup.rows:
        file = backup.path / f"{table}.parquet"
        expected = backup.checksums.get(file.name)
        if expected is None:
            raise refuse(f"its manifest has no checksum for {file.name}")
        if not file.exists():
            raise refuse(f"{file.name} is missing")
        if _sha256(file) != expected:
            raise refuse(f"{file.name} does not match its SHA-256 in the manifest")
    for file in backup.path.glob("*.parquet"):
        if file.name not in backup.checksums:
            raise refuse(f"{file.name} is not in its manifest")
    with duckdb.connect(":memory:") as conn:
        for table in backup.rows:
            file = backup.path / f"{table}.parquet"
            described = conn.execute(
                f"DESCRIBE SELECT * FROM read_parquet({sql_literal(file)})"
            ).fetchall()
            found = [[name, data_type] for name, data_type, *_ in described]
            if found != backup.columns.get(table):
                raise refuse(
                    f"{file.name} has the columns {found}, its manifest says "
                    f"{backup.columns.get(table)}"
                )


def _missing_columns(conn: duckdb.DuckDBPyConnection, backup: Backup, tables: set[str]) -> None:
    """Refuses a backup whose file lacks a column the warehouse's table has: restored, that
    column would silently be NULL in every row."""
    with duckdb.connect(":memory:") as files:
        for table in sorted(tables & set(backup.rows)):
            file = backup.path / f"{table}.parquet"
            held = {
                row[0]
                for row in files.execute(
                    f"DESCRIBE SELECT * FROM read_parquet({sql_literal(file)})"
                ).fetchall()
            }
            lacking = [name for name, _ in _table_columns(conn, table) if name not in held]
            if lacking:
                raise BackupError(
                    f"backup {backup.name}: {file.name} has no column {', '.join(lacking)}, "
                    f"which the warehouse's {table} has (it would be left empty in every "
                    "row); nothing was restored."
                )


def _first_line(error: BaseException) -> str:
    return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__


def restore_backup(
    conn: duckdb.DuckDBPyConnection, backup: Backup, verify: bool = True
) -> dict[str, int]:
    """Replaces every table's rows with the backup's, all at once: a failure or a kill leaves
    the warehouse as it was. A derived table the backup does not hold (added since) is
    emptied. Returns the rows restored per table.

    Memory stays bounded whatever the backup's size (within the connection's memory_limit):
    the rows go in by chunks of RESTORE_CHUNK_ROWS. On a DuckDB file, whose primary keys
    DuckDB keeps in memory for a transaction's new rows, each chunk is a transaction into a
    new copy of the table; one last transaction swaps the copies in. A lake has no keys: one
    transaction, the chunks one statement each, so each writes its files and lets go."""
    # The schema version is the warehouse's own: the backup's rows go into this build's tables.
    tables = set(base_tables(conn)) - {VERSION_TABLE}
    if verify:
        verify_backup(backup, tables)
    else:
        unknown = sorted(set(backup.rows) - tables - {VERSION_TABLE})
        if unknown:
            raise BackupError(
                f"backup {backup.name}: it holds table(s) this warehouse does not have: "
                f"{', '.join(unknown)}; nothing was restored."
            )
    _missing_columns(conn, backup, tables)
    try:
        if is_lake(conn):
            return in_transaction(conn, lambda: _replace_rows(conn, backup, tables))
        return _swap_in_copies(conn, backup, tables)
    except duckdb.Error as error:
        raise RestoreFailed(
            f"backup {backup.name} could not be restored ({_first_line(error)}); nothing was "
            "changed."
        ) from None


def _insert_in_chunks(
    conn: duckdb.DuckDBPyConnection,
    backup: Backup,
    table: str,
    into: str,
    each_chunk: Callable[[Callable[[], None]], None],
) -> int:
    """Inserts the backup's rows of `table` into `into`, RESTORE_CHUNK_ROWS at a time (each
    passed to `each_chunk` to run), and checks the count against the manifest."""
    source = sql_literal(backup.path / f"{table}.parquet")
    [(total,)] = conn.execute(f"SELECT count(*) FROM read_parquet({source})").fetchall()
    for first in range(0, total, RESTORE_CHUNK_ROWS):

        def chunk(first: int = first) -> None:
            conn.execute(
                f"INSERT INTO {into} BY NAME SELECT * FROM read_parquet({source}) "
                "WHERE file_row_number >= $first AND file_row_number < $last",
                {"first": first, "last": first + RESTORE_CHUNK_ROWS},
            )

        each_chunk(chunk)
    [(count,)] = conn.execute(f"SELECT count(*) FROM {into}").fetchall()
    if count != backup.rows[table]:
        raise BackupError(
            f"backup {backup.name}: {table} has {count} row(s), its manifest says "
            f"{backup.rows[table]}; nothing was restored."
        )
    return int(count)


def _replace_rows(
    conn: duckdb.DuckDBPyConnection, backup: Backup, tables: set[str]
) -> dict[str, int]:
    restored = {}
    for table in sorted(tables):
        conn.execute(f"DELETE FROM {table}")
        if table in backup.rows:
            restored[table] = _insert_in_chunks(conn, backup, table, table, lambda run: run())
    return restored


def _swap_in_copies(
    conn: duckdb.DuckDBPyConnection, backup: Backup, tables: set[str]
) -> dict[str, int]:
    drop_restore_copies(conn)  # of a restore that was killed
    try:
        restored = {}
        for table in sorted(tables):
            [(ddl,)] = conn.execute(
                "SELECT sql FROM duckdb_tables() WHERE database_name = current_database() "
                "AND schema_name = 'main' AND table_name = ?",
                [table],
            ).fetchall()
            copy = f"{table}{RESTORE_COPY_SUFFIX}"
            conn.execute(ddl.replace(f"CREATE TABLE {table}(", f"CREATE TABLE {copy}(", 1))
            if table in backup.rows:
                restored[table] = _insert_in_chunks(
                    conn, backup, table, copy, lambda run: in_transaction(conn, run)
                )

        def swap() -> None:
            for table in sorted(tables):
                conn.execute(f"DROP TABLE {table}")
                conn.execute(f"ALTER TABLE {table}{RESTORE_COPY_SUFFIX} RENAME TO {table}")

        in_transaction(conn, swap)
        return restored
    finally:
        drop_restore_copies(conn)
