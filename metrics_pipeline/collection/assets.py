"""The warehouse's assets: the RDS inventory and the hourly CloudWatch metrics.

Both are thin: the logic lives in `inventory`, `cloudwatch` and `warehouse`; these wrap it
with Dagster's partitions, config, logging and metadata.
"""

import resource
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from dagster import (
    AssetExecutionContext,
    AssetMaterialization,
    AssetsDefinition,
    BackfillPolicy,
    Backoff,
    Config,
    Failure,
    HourlyPartitionsDefinition,
    Jitter,
    MaterializeResult,
    MetadataValue,
    RetryPolicy,
    asset,
)
from pydantic import Field

from metrics_pipeline.collection.cloudwatch import (
    RequestStats,
    align_window,
    build_queries,
    datapoints_per_query,
    estimated_cost_usd,
    fetch_batch_to_spool,
    minimum_requests,
    plan_batches,
)
from metrics_pipeline.collection.inventory import (
    InventoryEntry,
    describe_instances,
    hours_before_creation,
    instances_existing,
)
from metrics_pipeline.collection.keys import RDS_INSTANCES, RDS_METRICS
from metrics_pipeline.collection.resources import AwsResource, CollectionResource, aws_errors
from metrics_pipeline.collection.store import (
    read_inventory,
    record_run,
    replace_metrics,
    upsert_instances,
)
from metrics_pipeline.hours import naive_utc, oldest_kept_hour, utc_now
from metrics_pipeline.metadata import (
    markdown_table,
    row_count_of_partition,
    table_asset,
)
from metrics_pipeline.settings import Settings, cloudwatch_retention_days
from metrics_pipeline.warehouse.resources import WarehouseResource
from metrics_pipeline.warehouse.schema import INSTANCES_TABLE, METRICS_TABLE
from metrics_pipeline.warehouse.snapshot import SnapshotMissingError


def peak_memory_mib() -> float:
    """The run process's peak resident memory so far (Linux reports kilobytes)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def aws_retry_policy(settings: Settings) -> RetryPolicy:
    """The step retries of the assets that call AWS, for trouble that outlasts botocore's own
    retries (minutes of throttling or 5xx, a dropped connection).

    With the defaults a failed step runs again after about 30 s, 90 s and 210 s (exponential,
    jittered by one delay either way so that runs failing together do not retry together):
    some six minutes, then the run fails and the gap sensor takes over. Failures that another
    attempt cannot fix are raised with allow_retries=False and fail at once. Dagster keeps the
    last attempt's error as the cause of its "Exceeded max_retries" failure; the run-failure
    alert reads that cause.
    """
    return RetryPolicy(
        max_retries=settings.step_retries,
        delay=settings.step_retry_delay_seconds,
        backoff=Backoff.EXPONENTIAL,
        jitter=Jitter.PLUS_MINUS,
    )


@dataclass(frozen=True)
class Discovery:
    account_id: str
    regions: list[str]
    records: list[dict[str, Any]]
    new_ids: list[str]
    aws_requests: int
    table_rows: int | None  # rows of rds_instances after the write; None when nothing was written

    def metadata(self) -> dict[str, Any]:
        rows = {} if self.table_rows is None else {"dagster/row_count": self.table_rows}
        return {
            **rows,
            "instances": len(self.records),
            "new_instances": len(self.new_ids),
            "regions": ", ".join(self.regions),
            "account_id": self.account_id,
            "aws_requests": self.aws_requests,
            "by_region": MetadataValue.md(
                markdown_table(
                    ("region", "instances"),
                    [
                        (region, sum(r["region"] == region for r in self.records))
                        for region in self.regions
                    ],
                )
            ),
        }


def discover(
    context: AssetExecutionContext,
    aws: AwsResource,
    warehouse: WarehouseResource,
    regions: Sequence[str],
    write_if_empty: bool = True,
) -> Discovery:
    """Lists the RDS instances of `regions` and upserts them into the inventory; with
    `write_if_empty` false, finding none leaves the warehouse alone (no lock taken)."""
    stats = RequestStats()
    seen_at = utc_now()
    account_id = aws.account_id(stats)
    records = []
    for region in regions:
        with aws_errors("DescribeDBInstances", region):
            found = describe_instances(aws.client("rds", region, stats), account_id, region)
        context.log.info(f"{region}: {len(found)} instance(s)")
        records.extend(found)
    new_ids: list[str] = []
    table_rows = None
    if records or write_if_empty:
        with warehouse.connect() as conn:
            known_before = {entry.instance.instance_id for entry in read_inventory(conn, regions)}
            upsert_instances(conn, records, seen_at)
            [(table_rows,)] = conn.execute(f"SELECT count(*) FROM {INSTANCES_TABLE}").fetchall()
        new_ids = sorted(r["instance_id"] for r in records if r["instance_id"] not in known_before)
    if new_ids:
        context.log.info(f"New instance(s): {', '.join(new_ids)}")
    return Discovery(account_id, list(regions), records, new_ids, stats.api_calls, table_rows)


def materialize_rds_instances(
    context: AssetExecutionContext, aws: AwsResource, warehouse: WarehouseResource
) -> MaterializeResult:
    warehouse.prepare()
    return MaterializeResult(metadata=discover(context, aws, warehouse, aws.regions).metadata())


def read_or_discover_inventory(
    context: AssetExecutionContext, aws: AwsResource, warehouse: WarehouseResource
) -> list[InventoryEntry]:
    """The inventory of the configured regions, discovering first the regions it lacks (a new
    deployment, a region just added), so that a first backfill from the UI just works."""
    try:
        with warehouse.read_snapshot() as conn:
            inventory = read_inventory(conn, aws.regions)
    except SnapshotMissingError:
        inventory = []
    # A region can hold no instance: the latest discovery that covered it is what counts, so
    # an empty region is not described again by every collection run.
    latest = context.instance.get_latest_materialization_event(RDS_INSTANCES)
    discovered = latest.asset_materialization.metadata.get("regions") if latest else None
    covered = {e.instance.region for e in inventory} | set(
        discovered.value.split(", ") if discovered else ()
    )
    lacking = [region for region in aws.regions if region not in covered]
    if not lacking:
        return inventory
    context.log.info(f"No inventory of {', '.join(lacking)} yet: discovering it first")
    discovery = discover(context, aws, warehouse, lacking, write_if_empty=False)
    if not discovery.records:
        return inventory
    context.log_event(
        AssetMaterialization(
            asset_key=RDS_INSTANCES,
            description="Discovered by rds_metrics, whose run found no inventory of these regions.",
            metadata=discovery.metadata(),
        )
    )
    with warehouse.read_snapshot() as conn:
        return read_inventory(conn, aws.regions)


def check_collectable(start: datetime, now: datetime, retention_days: int, period: int) -> None:
    """Refuses hours that retention would delete at once, or that CloudWatch no longer has."""
    cloudwatch_days = cloudwatch_retention_days(period)
    oldest = max(oldest_kept_hour(now, retention_days), oldest_kept_hour(now, cloudwatch_days))
    if start < oldest:
        limit = (
            f"METRICS_RETENTION_DAYS={retention_days}"
            if retention_days <= cloudwatch_days
            else f"CloudWatch keeps {period} s data for {cloudwatch_days} days"
        )
        raise Failure(
            description=(
                f"rds_metrics: the window starts at {start:%Y-%m-%d %H:%M} UTC, before "
                f"{oldest:%Y-%m-%d %H:%M} UTC, the oldest hour that can be collected "
                f"({limit}). Choose hours from {oldest:%Y-%m-%d %H:%M} UTC on."
            ),
            allow_retries=False,
        )


class CollectionConfig(Config):
    instances: list[str] = Field(
        default_factory=list,
        description=(
            "Collect only these instance ids (and replace only their rows); "
            "empty means every instance that existed in the window."
        ),
    )


def materialize_rds_metrics(
    context: AssetExecutionContext,
    config: CollectionConfig,
    aws: AwsResource,
    collection: CollectionResource,
    warehouse: WarehouseResource,
) -> MaterializeResult:
    warehouse.prepare()
    window = context.partition_time_window
    start, end = align_window(
        naive_utc(window.start), naive_utc(window.end), collection.period_seconds
    )
    check_collectable(start, utc_now(), warehouse.retention_days, collection.period_seconds)
    inventory = read_or_discover_inventory(context, aws, warehouse)
    unknown = sorted(set(config.instances) - {entry.instance.instance_id for entry in inventory})
    if unknown:
        raise Failure(
            description=(
                f"instances: unknown instance id(s) {', '.join(unknown)}; "
                f"the inventory ({INSTANCES_TABLE}) does not list them."
            ),
            allow_retries=False,
        )
    if config.instances:
        # Named instances are fetched for every hour asked: CloudWatch keeps a re-created
        # instance's earlier history under the same identifier.
        named = [e for e in inventory if e.instance.instance_id in config.instances]
        targets = [e.instance for e in named]
        before_creation = hours_before_creation(named, start, end)
        for instance_id, hours in before_creation.items():
            context.log.info(
                f"{instance_id}: {hours} of the hours asked precede its creation time; "
                "fetching them anyway (CloudWatch may hold an earlier instance's data)"
            )
    else:
        targets = instances_existing(inventory, start, end)
        before_creation = {}
    context.log.info(f"Collecting {start} to {end} UTC for {len(targets)} instance(s)")

    stats = RequestStats()
    fetched_at = utc_now()
    points_per_query = datapoints_per_query(start, end, collection.period_seconds)
    queries = build_queries(targets, collection.metrics, collection.statistics)
    batches = plan_batches(queries, points_per_query, max_datapoints=aws.max_datapoints_per_request)
    regions = sorted({batch[0].instance.region for batch in batches})
    clients = {region: aws.client("cloudwatch", region, stats) for region in regions}
    started = time.monotonic()
    cpu_started = time.process_time()
    with tempfile.TemporaryDirectory(prefix="rds-metrics-spool-") as spool:
        spool_files = []
        for number, batch in enumerate(batches, start=1):
            region = batch[0].instance.region
            with aws_errors("GetMetricData", region):
                for spooled in fetch_batch_to_spool(
                    clients[region],
                    batch,
                    start,
                    end,
                    collection.period_seconds,
                    Path(spool),
                    aws.max_datapoints_per_request,
                ):
                    spool_files.append(spooled.path)
            context.log.info(
                f"Fetched batch {number}/{len(batches)} ({region}, {len(batch)} queries); "
                f"{stats.api_calls} request(s) so far"
            )
        fetch_seconds = time.monotonic() - started
        warehouse.require_space(sum(path.stat().st_size for path in spool_files))
        with warehouse.connect() as conn:
            lock_wait_seconds = time.monotonic() - started - fetch_seconds
            written = replace_metrics(
                conn,
                spool_files=spool_files,
                targets=targets,
                start=start,
                end=end,
                fetched_at=fetched_at,
                settle_delay=collection.settle_delay,
                run_id=context.run.run_id,
            )
            write_seconds = time.monotonic() - started - fetch_seconds - lock_wait_seconds
            figures = {
                "run_id": context.run.run_id,
                "asset": "rds_metrics",
                "window_start": start,
                "window_end": end,
                "finished_at": utc_now(),
                "instances": len(targets),
                "rows_written": written.rows_written,
                "rows_replaced": written.rows_replaced,
                "datapoints": written.datapoints,
                "settled_hours": written.settled_hours,
                "cloudwatch_requests": stats.api_calls,
                "minimum_requests": minimum_requests(
                    len(queries), points_per_query, max_datapoints=aws.max_datapoints_per_request
                ),
                "metrics_requested": stats.metrics_requested,
                "estimated_cost_usd": estimated_cost_usd(stats.metrics_requested),
                "throttled_calls": stats.throttled,
                "retried_calls": stats.retried,
                "fetch_seconds": round(fetch_seconds, 3),
                "lock_wait_seconds": round(lock_wait_seconds, 3),
                "write_seconds": round(write_seconds, 3),
                "cpu_seconds": round(time.process_time() - cpu_started, 3),
                "peak_memory_mib": round(peak_memory_mib(), 1),
                "skipped_datapoints": sum(written.skipped.values()),
            }
            record_run(conn, figures)
            [(table_rows,)] = conn.execute(f"SELECT count(*) FROM {METRICS_TABLE}").fetchall()
    context.log.info(
        f"Wrote {written.rows_written} row(s) (replaced {written.rows_replaced}) "
        f"from {written.datapoints} datapoint(s) in {stats.api_calls} request(s)"
    )
    if any(written.skipped.values()):
        context.log.warning(
            "Skipped datapoints CloudWatch sent: "
            + ", ".join(
                f"{count} {reason.replace('_', ' ')}" for reason, count in written.skipped.items()
            )
            + " (a period sent twice with different values is not stored)"
        )
    if warehouse.unpublished:
        context.log.warning(
            f"The rows are written, but the readers' snapshot could not be published "
            f"({warehouse.unpublished}): readers and the gap sensor see the previous one until "
            "the next write publishes one."
        )
    metadata: dict[str, Any] = {
        "snapshot_published": warehouse.unpublished is None,
        "dagster/row_count": table_rows,
        **row_count_of_partition(context, written.rows_written),
        **{
            key: value.isoformat() if isinstance(value, datetime) else value
            for key, value in figures.items()
            if key not in ("run_id", "asset", "finished_at")
        },
    }
    if before_creation:
        metadata["hours_before_creation"] = ", ".join(
            f"{instance_id}: {hours}" for instance_id, hours in before_creation.items()
        )
    return MaterializeResult(metadata=metadata)


def build_collection_assets(
    settings: Settings, hourly_partitions: HourlyPartitionsDefinition
) -> list[AssetsDefinition]:
    """rds_instances and rds_metrics, with the retry policy and partitions of `settings`."""
    retry_policy = aws_retry_policy(settings)
    rds_instances = asset(
        key=RDS_INSTANCES,
        **table_asset(INSTANCES_TABLE, reads_aws=True),
        retry_policy=retry_policy,
        description=(
            f"Every RDS instance in the configured regions (DuckDB table `{INSTANCES_TABLE}`), "
            "one row per instance, with first_seen/last_seen kept across discoveries."
        ),
    )(materialize_rds_instances)
    rds_metrics = asset(
        key=RDS_METRICS,
        **table_asset(METRICS_TABLE, reads_aws=True),
        partitions_def=hourly_partitions,
        backfill_policy=BackfillPolicy.single_run(),
        retry_policy=retry_policy,
        deps=[RDS_INSTANCES],
        description=(
            f"CloudWatch metrics of every RDS instance, one partition per UTC hour (DuckDB "
            f"table `{METRICS_TABLE}`, fetch log `rds_metric_fetches`). A run over a range of "
            "hours fetches the whole window with batched GetMetricData calls. Hours older than "
            "METRICS_RETENTION_DAYS are deleted daily: Dagster still shows them as "
            "materialized, and each dropped hour carries a `dropped_by_retention` observation."
        ),
    )(materialize_rds_metrics)
    return [rds_instances, rds_metrics]
