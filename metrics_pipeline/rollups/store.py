"""The daily tier's write: a window of the hourly tier aggregated per UTC day, in one
transaction."""

from __future__ import annotations

from datetime import datetime

import duckdb

from metrics_pipeline.warehouse.schema import DAILY_TABLE, HOURLY_TABLE
from metrics_pipeline.warehouse.sql import in_transaction


def replace_days(
    conn: duckdb.DuckDBPyConnection, start: datetime, end: datetime, computed_at: datetime
) -> int:
    """Recomputes rds_metrics_daily for the days of [start, end) from rds_metrics_hourly.

    The day's average weighs each hour's average by its sample count (CloudWatch's average of
    the day's samples); a day's percentiles cannot be made from its hours', so the day keeps
    the highest hourly p95 and p99 instead.
    """

    def write() -> int:
        conn.execute(
            f"DELETE FROM {DAILY_TABLE} WHERE day >= $start AND day < $end",
            {"start": start, "end": end},
        )
        inserted = conn.execute(
            f"""
            INSERT INTO {DAILY_TABLE}
            SELECT date_trunc('day', hour) AS day, account_id, region, instance_id, metric,
                   any_value(unit),
                   sum(average * sample_count)
                       / nullif(sum(sample_count) FILTER (WHERE average IS NOT NULL), 0),
                   min(minimum), max(maximum), sum(sum), sum(sample_count), max(average),
                   max(p95), max(p99), count(*), $computed_at
            FROM {HOURLY_TABLE}
            WHERE hour >= $start AND hour < $end
            GROUP BY ALL
            """,
            {"start": start, "end": end, "computed_at": computed_at},
        ).fetchone()
        return int(inserted[0]) if inserted else 0

    return in_transaction(conn, write)
