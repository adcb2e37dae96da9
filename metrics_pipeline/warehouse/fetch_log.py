"""A source's fetch log: per subject and hour, when it was fetched, how many datapoints came
back and whether the hour had settled. Every source keeps one table of this shape, so the gap
sensor and the checks read any source's the same way."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import duckdb

from metrics_pipeline.warehouse.instances import Instance
from metrics_pipeline.warehouse.schema import FETCHES_TABLE, table_exists


@dataclass(frozen=True)
class FetchLog:
    """The fetch log table `table`, keyed by (account_id, region, `subject_column`, hour)."""

    table: str
    subject_column: str = "instance_id"

    def settled(
        self, conn: duckdb.DuckDBPyConnection, start: datetime, end: datetime
    ) -> set[tuple[Instance, datetime]]:
        """(subject, hour) pairs of [start, end) fetched after the hour settled: final, even
        when nothing came back."""
        return self._pairs(conn, start, end, "settled")

    def empty_settled(
        self, conn: duckdb.DuckDBPyConnection, start: datetime, end: datetime
    ) -> set[tuple[Instance, datetime]]:
        """Settled (subject, hour) pairs of [start, end) whose fetch found nothing."""
        return self._pairs(conn, start, end, "settled AND datapoints = 0")

    def _pairs(
        self, conn: duckdb.DuckDBPyConnection, start: datetime, end: datetime, condition: str
    ) -> set[tuple[Instance, datetime]]:
        if not table_exists(conn, self.table):
            return set()
        rows = conn.execute(
            f"""
            SELECT account_id, region, {self.subject_column}, hour FROM {self.table}
            WHERE {condition} AND hour >= $start AND hour < $end
            """,
            {"start": start, "end": end},
        ).fetchall()
        return {(Instance(*row[:3]), row[3]) for row in rows}


# The CloudWatch source's fetch log, which the progress line and the analysts' API read too.
RDS_FETCH_LOG = FetchLog(FETCHES_TABLE)
