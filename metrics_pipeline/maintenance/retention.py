"""Retention, tier by tier: the raw tier's rows older than METRICS_RETENTION_DAYS leave, the
hourly tier's older than METRICS_HOURLY_RETENTION_DAYS (when set); the daily tier stays."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import duckdb

from metrics_pipeline.warehouse.lake import current_database
from metrics_pipeline.warehouse.sql import in_transaction, sql_literal
from metrics_pipeline.warehouse.tables import tier_tables


@dataclass(frozen=True)
class TableTrim:
    table: str
    rows: int
    hours: list[datetime]


def drop_rows_before(
    conn: duckdb.DuckDBPyConnection, cutoffs: Mapping[str, datetime]
) -> list[TableTrim]:
    """Deletes what is older than its tier's cutoff (`cutoffs`, by tier; a tier not named is
    kept) from every table of the tier with a time column, a transaction each."""
    trims = []
    for table, column, cutoff in (
        (table, column, cutoff)
        for tier, cutoff in cutoffs.items()
        for table, column in tier_tables(tier).items()
    ):

        def trim(table: str = table, column: str = column, cutoff: datetime = cutoff) -> TableTrim:
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
