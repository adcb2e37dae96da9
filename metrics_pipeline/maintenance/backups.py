"""Backups of the warehouse: DuckDB's EXPORT DATABASE to Parquet, taken from the snapshot.

The snapshot is a committed, checkpointed copy that no writer touches, so a backup is
consistent while collection goes on and never holds the warehouse's lock. Each backup is a
folder named after its UTC time, holding DuckDB's `schema.sql`, `load.sql` (so plain
`IMPORT DATABASE` also restores it, without this package), one Parquet file per table, and a
manifest of row counts. It appears under its final name only once complete.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import duckdb

from metrics_pipeline.warehouse.schema import base_tables
from metrics_pipeline.warehouse.snapshot import open_snapshot_for_export
from metrics_pipeline.warehouse.sql import in_transaction, sql_literal

NAME_FORMAT = "%Y%m%dT%H%M%SZ"
MANIFEST = "manifest.json"


class BackupError(ValueError):
    """A backup that cannot be made or restored; the message says which and why."""


@dataclass(frozen=True)
class Backup:
    name: str
    path: Path
    created_at: datetime
    rows: dict[str, int]

    @property
    def size_bytes(self) -> int:
        return sum(f.stat().st_size for f in self.path.iterdir() if f.is_file())


def _read(path: Path) -> Backup | None:
    """The backup in `path`, or None for anything else (another folder, a partial backup)."""
    try:
        datetime.strptime(path.name, NAME_FORMAT)
        manifest = json.loads((path / MANIFEST).read_text())
        return Backup(
            name=path.name,
            path=path,
            created_at=datetime.fromisoformat(manifest["created_at"]),
            rows={str(table): int(count) for table, count in manifest["rows"].items()},
        )
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def create_backup(snapshot: Path, folder: Path, now: datetime) -> Backup:
    """Exports the snapshot to folder/<UTC time>; `now` is naive UTC."""
    if not snapshot.exists():
        raise BackupError(
            f"nothing to back up: no snapshot at {snapshot} yet (the pipeline publishes it "
            "after its first write)."
        )
    name = now.strftime(NAME_FORMAT)
    target = folder / name
    if target.exists():
        raise BackupError(f"a backup named {name} already exists in {folder}.")
    partial = folder / f".{name}.partial"
    shutil.rmtree(partial, ignore_errors=True)
    folder.mkdir(parents=True, exist_ok=True)
    try:
        with open_snapshot_for_export(snapshot, partial) as conn:
            tables = base_tables(conn)
            rows = {t: conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in tables}
            conn.execute(f"EXPORT DATABASE {sql_literal(partial)} (FORMAT parquet)")
        # DuckDB wrote the partial folder's path into load.sql; point it at the final one.
        load_sql = partial / "load.sql"
        load_sql.write_text(load_sql.read_text().replace(str(partial), str(target)))
        manifest = {"created_at": now.isoformat(), "source": str(snapshot), "rows": rows}
        (partial / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
        partial.rename(target)
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return Backup(name=name, path=target, created_at=now, rows=rows)


def list_backups(folder: Path) -> list[Backup]:
    """Complete backups, newest first (a partial one has no manifest yet)."""
    if not folder.is_dir():
        return []
    found = (_read(path) for path in folder.iterdir() if path.is_dir())
    return sorted((b for b in found if b is not None), key=lambda b: b.created_at, reverse=True)


def prune_backups(folder: Path, keep_days: int, now: datetime) -> list[Backup]:
    """Deletes backups older than `keep_days`, always keeping the newest one."""
    backups = list_backups(folder)
    cutoff = now - timedelta(days=keep_days)
    expired = [b for b in backups[1:] if b.created_at < cutoff]
    for backup in expired:
        shutil.rmtree(backup.path)
    return expired


def find_backup(folder: Path, name: str) -> Backup:
    backups = list_backups(folder)
    for backup in backups:
        if backup.name == name:
            return backup
    listed = ", ".join(b.name for b in backups[:10]) or "none"
    raise BackupError(f"backup: no backup named '{name}' in {folder}; the newest are: {listed}.")


def restore_backup(conn: duckdb.DuckDBPyConnection, backup: Backup) -> dict[str, int]:
    """Replaces every table's rows with the backup's, in one transaction: a failure leaves the
    warehouse as it was. A table the backup does not hold (added since) is emptied, so the
    warehouse is as it was when the backup was taken. Returns the rows restored per table."""
    tables = set(base_tables(conn))
    unknown = sorted(set(backup.rows) - tables)
    if unknown:
        raise BackupError(
            f"backup {backup.name} holds table(s) this warehouse does not have: "
            f"{', '.join(unknown)}; nothing was restored."
        )

    def replace_all() -> dict[str, int]:
        restored = {}
        for table in sorted(tables):
            conn.execute(f"DELETE FROM {table}")
            if table not in backup.rows:
                continue
            source = backup.path / f"{table}.parquet"
            conn.execute(
                f"INSERT INTO {table} BY NAME SELECT * FROM read_parquet({sql_literal(source)})"
            )
            [(count,)] = conn.execute(f"SELECT count(*) FROM {table}").fetchall()
            if count != backup.rows[table]:
                raise BackupError(
                    f"backup {backup.name}: {table} has {count} row(s), its manifest says "
                    f"{backup.rows[table]}; nothing was restored."
                )
            restored[table] = count
        return restored

    try:
        return in_transaction(conn, replace_all)
    except duckdb.Error as error:
        raise BackupError(
            f"backup {backup.name} could not be restored ({error}); nothing was changed."
        ) from None
