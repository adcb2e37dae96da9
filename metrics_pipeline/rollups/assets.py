"""Hourly and daily rollups of rds_metrics, recomputed whenever their source hours change."""

from dagster import (
    AssetDep,
    AssetExecutionContext,
    AssetsDefinition,
    BackfillPolicy,
    MaterializeResult,
    TimeWindowPartitionMapping,
    asset,
)

from metrics_pipeline.automation import ON_ANY_SOURCE_HOUR_CHANGE, ON_SOURCE_HOURS_CHANGE
from metrics_pipeline.collection.keys import RDS_METRICS
from metrics_pipeline.collection.resources import CollectionResource
from metrics_pipeline.hours import naive_utc, utc_now
from metrics_pipeline.metadata import row_count_of_partition, table_asset
from metrics_pipeline.partitions import Partitions
from metrics_pipeline.rollups.store import replace_rollup
from metrics_pipeline.warehouse.resources import WarehouseResource
from metrics_pipeline.warehouse.schema import DAILY_TABLE, HOURLY_TABLE


def _rollup(
    context: AssetExecutionContext,
    collection: CollectionResource,
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
            periods_per_bucket=bucket_seconds // collection.period_seconds,
            computed_at=utc_now(),
        )
        [(table_rows,)] = conn.execute(f"SELECT count(*) FROM {table}").fetchall()
    context.log.info(f"{table}: {rows} row(s) for {start} to {end} UTC")
    return MaterializeResult(
        metadata={
            "dagster/row_count": table_rows,
            **row_count_of_partition(context, rows),
            "rows_written": rows,
            "window_start": start.isoformat(),
            "window_end": end.isoformat(),
        }
    )


def materialize_hourly_rollup(
    context: AssetExecutionContext, collection: CollectionResource, warehouse: WarehouseResource
) -> MaterializeResult:
    return _rollup(context, collection, warehouse, HOURLY_TABLE, 3600)


def materialize_daily_rollup(
    context: AssetExecutionContext, collection: CollectionResource, warehouse: WarehouseResource
) -> MaterializeResult:
    return _rollup(context, collection, warehouse, DAILY_TABLE, 86400)


def build_rollup_assets(partitions: Partitions) -> list[AssetsDefinition]:
    rds_metrics_hourly = asset(
        name=HOURLY_TABLE,
        **table_asset(HOURLY_TABLE),
        partitions_def=partitions.hourly,
        backfill_policy=BackfillPolicy.single_run(),
        deps=[RDS_METRICS],
        automation_condition=ON_SOURCE_HOURS_CHANGE,
        description=(
            f"Per hour, instance and metric (DuckDB table `{HOURLY_TABLE}`): average, minimum, "
            "maximum, p50/p95/p99 of the period averages, sample count, and completeness "
            "(periods present / periods expected). Recomputed when its hour of rds_metrics "
            "changes."
        ),
    )(materialize_hourly_rollup)
    rds_metrics_daily = asset(
        name=DAILY_TABLE,
        **table_asset(DAILY_TABLE),
        partitions_def=partitions.daily,
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
            f"Per UTC day, instance and metric (DuckDB table `{DAILY_TABLE}`), the same "
            "figures as the hourly rollup over the whole day (percentiles exact, from the "
            "period rows). Recomputed when any of its hours changes."
        ),
    )(materialize_daily_rollup)
    return [rds_metrics_hourly, rds_metrics_daily]
