"""The daily tier: each UTC day of the hourly tier, recomputed whenever its day changes."""

from dagster import (
    AssetExecutionContext,
    AssetsDefinition,
    BackfillPolicy,
    MaterializeResult,
    asset,
)

from metrics_pipeline.automation import ON_SOURCE_PARTITIONS_CHANGE
from metrics_pipeline.history.keys import RDS_METRICS_HOURLY
from metrics_pipeline.hours import naive_utc, utc_now
from metrics_pipeline.metadata import row_count_of_partition, table_asset
from metrics_pipeline.partitions import Partitions
from metrics_pipeline.rollups.store import replace_days
from metrics_pipeline.warehouse.resources import WarehouseResource
from metrics_pipeline.warehouse.schema import DAILY_TABLE, HOURLY_TABLE


def materialize_daily_tier(
    context: AssetExecutionContext, warehouse: WarehouseResource
) -> MaterializeResult:
    window = context.partition_time_window
    start, end = naive_utc(window.start), naive_utc(window.end)
    with warehouse.connect() as conn:
        rows = replace_days(conn, start, end, computed_at=utc_now())
        [(table_rows,)] = conn.execute(f"SELECT count(*) FROM {DAILY_TABLE}").fetchall()
    context.log.info(f"{DAILY_TABLE}: {rows} row(s) for {start} to {end} UTC")
    return MaterializeResult(
        metadata={
            "dagster/row_count": table_rows,
            **row_count_of_partition(context, rows),
            "rows_written": rows,
            "window_start": start.isoformat(),
            "window_end": end.isoformat(),
        }
    )


def build_rollup_assets(partitions: Partitions) -> list[AssetsDefinition]:
    rds_metrics_daily = asset(
        name=DAILY_TABLE,
        **table_asset(DAILY_TABLE),
        partitions_def=partitions.days,
        backfill_policy=BackfillPolicy.single_run(),
        deps=[RDS_METRICS_HOURLY],
        automation_condition=ON_SOURCE_PARTITIONS_CHANGE,
        description=(
            f"The daily tier (DuckDB table `{DAILY_TABLE}`): per UTC day, instance and metric, "
            f"the day's statistics computed from `{HOURLY_TABLE}` (average, minimum, maximum, "
            "sum, sample count, the peak hourly average and the highest hourly p95 and p99). "
            "Kept forever; recomputed whenever its day of the hourly tier changes."
        ),
    )(materialize_daily_tier)
    return [rds_metrics_daily]
