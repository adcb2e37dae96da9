"""The rollups' write: a window of rds_metrics aggregated per hour or day, in one transaction."""

from __future__ import annotations

from datetime import datetime

import duckdb

from metrics_pipeline.warehouse.schema import DAILY_TABLE, HOURLY_TABLE, METRICS_TABLE
from metrics_pipeline.warehouse.sql import in_transaction
from metrics_pipeline.warehouse.tables import TIME_COLUMNS

# Each rollup's bucket, as date_trunc names it.
ROLLUP_BUCKETS = {HOURLY_TABLE: "hour", DAILY_TABLE: "day"}


def replace_rollup(
    conn: duckdb.DuckDBPyConnection,
    table: str,
    start: datetime,
    end: datetime,
    periods_per_bucket: int,
    computed_at: datetime,
) -> int:
    """Recomputes `table` for [start, end) from rds_metrics in one transaction.

    Percentiles are of the period averages; completeness is periods present over periods
    expected in the bucket (an hour or a day).
    """
    column, unit = TIME_COLUMNS[table], ROLLUP_BUCKETS[table]

    def write() -> int:
        conn.execute(
            f"DELETE FROM {table} WHERE {column} >= $start AND {column} < $end",
            {"start": start, "end": end},
        )
        inserted = conn.execute(
            f"""
            INSERT INTO {table}
            SELECT date_trunc('{unit}', ts) AS {column}, account_id, region, instance_id,
                   metric, any_value(unit), avg(average), min(minimum), max(maximum),
                   quantile_cont(average, 0.5), quantile_cont(average, 0.95),
                   quantile_cont(average, 0.99), sum(sample_count), count(*),
                   count(*) / $expected, $computed_at
            FROM {METRICS_TABLE}
            WHERE ts >= $start AND ts < $end
            GROUP BY ALL
            """,
            {
                "start": start,
                "end": end,
                "expected": float(periods_per_bucket),
                "computed_at": computed_at,
            },
        ).fetchone()
        return int(inserted[0]) if inserted else 0

    return in_transaction(conn, write)
