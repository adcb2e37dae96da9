"""Retention: what is older than METRICS_RETENTION_DAYS leaves every time-series table."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import duckdb

from metrics_pipeline.warehouse.schema import (
    DAILY_TABLE,
    FETCHES_TABLE,
    HOURLY_TABLE,
    METRICS_TABLE,
    RUNS_TABLE,
)
from metrics_pipeline.warehouse.sql import in_transaction

# Every table that holds time series, with its time column: what retention trims.
TIME_SERIES_TABLES: dict[str, str] = {
    METRICS_TABLE: "ts",
    FETCHES_TABLE: "hour",
    HOURLY_TABLE: "hour",
    DAILY_TABLE: "day",
    RUNS_TABLE: "finished_at",
}


@dataclass(frozen=True)
class TableTrim:
    table: str
    rows: int
    hours: list[datetime]


def drop_rows_before(conn: duckdb.DuckDBPyConnection, cutoff: datetime) -> list[TableTrim]:
    """Deletes what is older than `cutoff` from every time-series table, a transaction each."""
    trims = []
    for table, column in TIME_SERIES_TABLES.items():

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
