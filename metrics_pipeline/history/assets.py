"""The hourly tier's asset: CloudWatch's hourly statistics of every instance and metric, one
partition per UTC day, for every day CloudWatch still keeps and then for as long as
METRICS_HOURLY_RETENTION_DAYS says."""

from dagster import (
    AssetExecutionContext,
    AssetsDefinition,
    BackfillPolicy,
    DailyPartitionsDefinition,
    Failure,
    MaterializeResult,
    asset,
)

from metrics_pipeline.collection.assets import CollectionConfig, aws_retry_policy, collect_window
from metrics_pipeline.collection.collected import INSTANCE_HOURLY_METRICS
from metrics_pipeline.collection.keys import RDS_INSTANCES
from metrics_pipeline.collection.resources import AwsResource, CollectionResource
from metrics_pipeline.history.keys import RDS_METRICS_HOURLY
from metrics_pipeline.history.window import fetch_window, oldest_fetchable_hour
from metrics_pipeline.hours import Clock, naive_utc, utc_now
from metrics_pipeline.metadata import table_asset
from metrics_pipeline.settings import CLOUDWATCH_HOURLY_DAYS, Settings
from metrics_pipeline.warehouse.resources import WarehouseResource
from metrics_pipeline.warehouse.schema import HOURLY_FETCHES_TABLE, HOURLY_TABLE

# The tier's period: CloudWatch's hourly statistics.
HOURLY_PERIOD_SECONDS = 3600


def materialize_rds_metrics_hourly(
    context: AssetExecutionContext,
    config: CollectionConfig,
    aws: AwsResource,
    collection: CollectionResource,
    warehouse: WarehouseResource,
    kept_days: int | None,
    clock: Clock = utc_now,
) -> MaterializeResult:
    warehouse.prepare()
    window = context.partition_time_window
    now = clock()
    start, end = fetch_window(naive_utc(window.start), naive_utc(window.end), now, kept_days)
    if start >= end:
        oldest = oldest_fetchable_hour(now, kept_days)
        raise Failure(
            description=(
                f"{HOURLY_TABLE}: no hour of {naive_utc(window.start):%Y-%m-%d} to "
                f"{naive_utc(window.end):%Y-%m-%d} can be fetched now: the hours must have "
                f"ended and start at or after {oldest:%Y-%m-%d %H:%M} UTC (CloudWatch keeps "
                f"hourly data for {CLOUDWATCH_HOURLY_DAYS} days"
                + ("" if kept_days is None else f"; METRICS_HOURLY_RETENTION_DAYS={kept_days}")
                + "). What is stored of older days is kept as it is."
            ),
            allow_retries=False,
        )
    return collect_window(
        context,
        config,
        aws,
        collection,
        warehouse,
        start,
        end,
        clock,
        INSTANCE_HOURLY_METRICS,
        HOURLY_PERIOD_SECONDS,
    )


def build_history_assets(
    settings: Settings, days: DailyPartitionsDefinition, clock: Clock = utc_now
) -> list[AssetsDefinition]:
    def rds_metrics_hourly(
        context: AssetExecutionContext,
        config: CollectionConfig,
        aws: AwsResource,
        collection: CollectionResource,
        warehouse: WarehouseResource,
    ) -> MaterializeResult:
        return materialize_rds_metrics_hourly(
            context, config, aws, collection, warehouse, settings.hourly_retention_days, clock
        )

    kept = (
        "forever"
        if settings.hourly_retention_days is None
        else f"{settings.hourly_retention_days} days (METRICS_HOURLY_RETENTION_DAYS)"
    )
    return [
        asset(
            key=RDS_METRICS_HOURLY,
            **table_asset(HOURLY_TABLE, reads_aws=True),
            partitions_def=days,
            backfill_policy=BackfillPolicy.single_run(),
            retry_policy=aws_retry_policy(settings),
            deps=[RDS_INSTANCES],
            description=(
                f"The hourly tier (DuckDB table `{HOURLY_TABLE}`, fetch log "
                f"`{HOURLY_FETCHES_TABLE}`): CloudWatch's own hourly statistics of every "
                "instance and metric, with the percentiles p50/p90/p95/p99 CloudWatch computes "
                "from its samples, one partition per UTC day. The gap sensor fetches each day "
                f"once it has settled, and on a new deployment the {CLOUDWATCH_HOURLY_DAYS} "
                f"days CloudWatch still keeps, newest first. Kept {kept}."
            ),
        )(rds_metrics_hourly)
    ]
