"""Retention: what is older than METRICS_RETENTION_DAYS leaves every time-series table."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import duckdb

from metrics_pipeline.warehouse.lake import current_database
from metrics_pipeline.warehouse.sql import in_transaction, sql_literal
from metrics_pipeline.warehouse.tables import TIME_COLUMNS


@dataclass(frozen=True)
class TableTrim:
    table: str
    rows: int
    hours: list[datetime]


def drop_rows_before(conn: duckdb.DuckDBPyConnection, cutoff: datetime) -> list[TableTrim]:
    """Deletes what is older than `cutoff` from every table with a time column, a transaction
    each."""
    trims = []
    for table, column in TIME_COLUMNS.items():

        def trim(table: str = table, column: str = column) -> TableTrim:
            hours = [
                row[0]
                for row in conn.execute(
                    f"SELECT DISTINCT date_trunc('hour', {column}) FROM {table} "
                    f"WHERE {column} < $cutoff ORDER BY 1",
                    {"cutoff": cutoff},
                ).fetchall()
            ]
            deleted = conn.execute(
                f"DELETE FROM {table} WHERE {column} < $cutoff", {"cutoff": cutoff}
            ).fetchone()
            return TableTrim(table, int(deleted[0]) if deleted else 0, hours)

        trims.append(in_transaction(conn, trim))
    return trims


# How long a DuckLake keeps what a write replaced (its snapshots and their files): a reader's
# query started before the write still finds its files, and a day can be looked back at.
LAKE_HISTORY_KEPT = timedelta(days=1)


@dataclass(frozen=True)
class LakeCompaction:
    snapshots_expired: int
    files_merged: int
    files_deleted: int
    orphans_deleted: int


def compact_lake(conn: duckdb.DuckDBPyConnection, now: datetime) -> LakeCompaction:
    """A DuckLake's own maintenance, each step one commit under the writers' lock: expire the
    snapshots older than LAKE_HISTORY_KEPT, merge the small files of many small writes,
    delete the files no kept snapshot needs (what retention dropped, what merges replaced),
    and the files older than LAKE_HISTORY_KEPT that no snapshot ever had: what a failed or
    killed write left (its transaction never committed them)."""
    before = now - LAKE_HISTORY_KEPT
    lake = sql_literal(current_database(conn))

    def call(statement: str, *parameters: object) -> list[tuple[Any, ...]]:
        return in_transaction(conn, lambda: conn.execute(statement, parameters).fetchall())

    expired = call(f"CALL ducklake_expire_snapshots({lake}, older_than => ?)", before)
    merged = call(f"CALL ducklake_merge_adjacent_files({lake})")
    deleted = call(f"CALL ducklake_cleanup_old_files({lake}, older_than => ?)", before)
    orphans = call(f"CALL ducklake_delete_orphaned_files({lake}, older_than => ?)", before)
    return LakeCompaction(
        snapshots_expired=len(expired),
        files_merged=sum(int(row[2]) for row in merged),
        files_deleted=len(deleted),
        orphans_deleted=len(orphans),
    )
