"""The check of a CloudWatch table's own invariants (rds_metrics, rds_metrics_hourly,
rds_cluster_metrics), beside
the completeness and freshness checks every source gets (quality/checks.py)."""

from datetime import datetime, timedelta

import duckdb
from dagster import AssetCheckResult, AssetChecksDefinition, AssetKey, asset_check

from metrics_pipeline.collection.store import RAW_DESTINATION, Destination
from metrics_pipeline.hours import Clock
from metrics_pipeline.settings import Settings
from metrics_pipeline.warehouse.resources import WarehouseResource


def sanity_counts(
    conn: duckdb.DuckDBPyConnection,
    start: datetime,
    period_seconds: int,
    now: datetime,
    destination: Destination = RAW_DESTINATION,
) -> dict[str, int]:
    """Rows of `destination` since `start` that break an invariant; every count should be 0."""
    statistics = ", ".join(destination.statistic_columns.values())
    ts, table, subject = destination.time_column, destination.table.name, destination.subject_column
    [row] = conn.execute(
        f"""
        SELECT count(*) - count(DISTINCT (account_id, region, {subject}, metric, {ts})),
               count(*) FILTER (unit = 'Percent' AND (minimum < 0 OR maximum > 100
                                                      OR average < 0 OR average > 100)),
               count(*) FILTER (least({statistics}) < 0),
               count(*) FILTER (minimum > average + 1e-9 OR average > maximum + 1e-9),
               count(*) FILTER (epoch({ts})::BIGINT % $period <> 0 OR {ts} > $now)
        FROM {table} WHERE {ts} >= $start
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


def sanity_check(
    asset: AssetKey,
    settings: Settings,
    clock: Clock,
    destination: Destination = RAW_DESTINATION,
    period_seconds: int | None = None,
) -> AssetChecksDefinition:
    """The check of `destination`'s rows at `period_seconds` (the collection period when
    None)."""
    period = period_seconds or settings.period_seconds

    @asset_check(
        asset=asset,
        name=f"{asset.path[-1]}_sanity",
        description=(
            "Over the healing window: no duplicate keys, percentages within 0-100, no negative "
            "values, minimum <= average <= maximum, timestamps on period boundaries and not ahead."
        ),
    )
    def sanity(warehouse: WarehouseResource) -> AssetCheckResult:
        now = clock()
        with warehouse.reader() as conn:
            counts = sanity_counts(
                conn, now - timedelta(days=settings.backfill_days), period, now, destination
            )
        return AssetCheckResult(passed=not any(counts.values()), metadata=counts)

    return sanity
