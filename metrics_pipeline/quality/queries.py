"""What the data checks and the health summary measure in the warehouse."""

from __future__ import annotations

from datetime import datetime

import duckdb

from metrics_pipeline.catalog import STATISTIC_COLUMNS
from metrics_pipeline.collection.inventory import Instance
from metrics_pipeline.warehouse.schema import (
    FETCHES_TABLE,
    METRICS_TABLE,
)


def rows_per_instance_hour(
    conn: duckdb.DuckDBPyConnection, start: datetime, end: datetime
) -> dict[tuple[Instance, datetime], int]:
    rows = conn.execute(
        f"""
        SELECT account_id, region, instance_id, date_trunc('hour', ts), count(*)
        FROM {METRICS_TABLE} WHERE ts >= $start AND ts < $end GROUP BY ALL
        """,
        {"start": start, "end": end},
    ).fetchall()
    return {(Instance(*row[:3]), row[3]): int(row[4]) for row in rows}


def empty_settled_fetches(
    conn: duckdb.DuckDBPyConnection, start: datetime, end: datetime
) -> set[tuple[Instance, datetime]]:
    rows = conn.execute(
        f"""
        SELECT account_id, region, instance_id, hour FROM {FETCHES_TABLE}
        WHERE settled AND datapoints = 0 AND hour >= $start AND hour < $end
        """,
        {"start": start, "end": end},
    ).fetchall()
    return {(Instance(*row[:3]), row[3]) for row in rows}


def sanity_counts(
    conn: duckdb.DuckDBPyConnection, start: datetime, period_seconds: int, now: datetime
) -> dict[str, int]:
    """Rows since `start` that break an invariant; every count should be 0."""
    statistics = ", ".join(STATISTIC_COLUMNS.values())
    [row] = conn.execute(
        f"""
        SELECT count(*) - count(DISTINCT (account_id, region, instance_id, metric, ts)),
               count(*) FILTER (unit = 'Percent' AND (minimum < 0 OR maximum > 100
                                                      OR average < 0 OR average > 100)),
               count(*) FILTER (least({statistics}) < 0),
               count(*) FILTER (minimum > average + 1e-9 OR average > maximum + 1e-9),
               count(*) FILTER (epoch(ts)::BIGINT % $period <> 0 OR ts > $now)
        FROM {METRICS_TABLE} WHERE ts >= $start
        """,
        {"start": start, "period": period_seconds, "now": now},
    ).fetchall()
    names = (
        "duplicate_keys",
        "percent_out_of_range",
        "negative_values",
        "min_avg_max_disorder",
        "misplaced_timestamps",
    )
    return dict(zip(names, (int(v) for v in row), strict=True))
