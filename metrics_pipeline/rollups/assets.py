"""Hourly and daily rollups of rds_metrics, recomputed whenever their source hours change."""

from dagster import (
    AssetDep,
    AssetExecutionContext,
    BackfillPolicy,
    MaterializeResult,
    TimeWindowPartitionMapping,
    asset,
)

from metrics_pipeline.automation import ON_ANY_SOURCE_HOUR_CHANGE, ON_SOURCE_HOURS_CHANGE
from metrics_pipeline.collection.assets import GROUP, WAREHOUSE_POOL, rds_metrics
from metrics_pipeline.collection.resources import AwsResource
from metrics_pipeline.hours import naive_utc, utc_now
from metrics_pipeline.metadata import table_metadata
from metrics_pipeline.partitions import daily_partitions, hourly_partitions
from metrics_pipeline.rollups.store import replace_rollup
from metrics_pipeline.warehouse.resources import WarehouseResource
from metrics_pipeline.warehouse.schema import DAILY_TABLE, HOURLY_TABLE


def _rollup(
    context: AssetExecutionContext,
    aws: AwsResource,
    warehouse: WarehouseResource,
    table: str,
    bucket_seconds: int,
) -> MaterializeResult:
    window = context.partition_time_window
    start, end = naive_utc(window.start), naive_utc(window.end)
    with warehouse.connect() as conn:
        rows = replace_rollup(
            conn,
            table,
            start,
            end,
            periods_per_bucket=bucket_seconds // aws.period_seconds,
            computed_at=utc_now(),
        )
    context.log.info(f"{table}: {rows} row(s) for {start} to {end} UTC")
    return MaterializeResult(
        metadata={
            "rows_written": rows,
            "window_start": start.isoformat(),
            "window_end": end.isoformat(),
        }
    )


@asset(
    group_name=GROUP,
    kinds={"duckdb"},
    metadata=table_metadata(HOURLY_TABLE),
    pool=WAREHOUSE_POOL,
    partitions_def=hourly_partitions,
    backfill_policy=BackfillPolicy.single_run(),
    deps=[rds_metrics],
    automation_condition=ON_SOURCE_HOURS_CHANGE,
    description=(
        f"Per hour, instance and metric (DuckDB table `{HOURLY_TABLE}`): average, minimum, "
        "maximum, p50/p95/p99 of the period averages, sample count, and completeness "
        "(periods present / periods expected). Recomputed when its hour of rds_metrics changes."
    ),
)
def rds_metrics_hourly(
    context: AssetExecutionContext, aws: AwsResource, warehouse: WarehouseResource
) -> MaterializeResult:
    return _rollup(context, aws, warehouse, HOURLY_TABLE, 3600)


@asset(
    group_name=GROUP,
    kinds={"duckdb"},
    metadata=table_metadata(DAILY_TABLE),
    pool=WAREHOUSE_POOL,
    partitions_def=daily_partitions,
    backfill_policy=BackfillPolicy.single_run(),
    # The day in progress maps onto hours that do not exist yet.
    deps=[
        AssetDep(
            rds_metrics_hourly,
            partition_mapping=TimeWindowPartitionMapping(
                allow_nonexistent_upstream_partitions=True
            ),
        )
    ],
    automation_condition=ON_ANY_SOURCE_HOUR_CHANGE,
    description=(
        f"Per UTC day, instance and metric (DuckDB table `{DAILY_TABLE}`), the same figures "
        "as the hourly rollup over the whole day (percentiles exact, from the period rows). "
        "Recomputed when any of its hours changes."
    ),
)
def rds_metrics_daily(
    context: AssetExecutionContext, aws: AwsResource, warehouse: WarehouseResource
) -> MaterializeResult:
    return _rollup(context, aws, warehouse, DAILY_TABLE, 86400)
