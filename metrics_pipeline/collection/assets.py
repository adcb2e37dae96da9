"""The warehouse's assets: the RDS inventory and the hourly CloudWatch metrics.

Both are thin: the logic lives in `inventory`, `cloudwatch` and `warehouse`; these wrap it
with Dagster's partitions, config, logging and metadata.
"""

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import duckdb
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

from metrics_pipeline.collection.accounts import Account, AccountUnavailable
from metrics_pipeline.collection.cloudwatch import (
    RequestStats,
    align_window,
)
from metrics_pipeline.collection.collected import INSTANCE_METRICS, Collected
from metrics_pipeline.collection.inventory import describe, hours_before_creation
from metrics_pipeline.collection.keys import RDS_INSTANCES, RDS_METRICS
from metrics_pipeline.collection.resources import AwsResource, CollectionResource, aws_errors
from metrics_pipeline.collection.runs import (
    CollectionRun,
    merged_skips,
    outcome_metadata,
    raise_unless_collected,
    where,
)
from metrics_pipeline.collection.store import (
    fully_written_by_run,
    record_run,
    record_run_parts,
    upsert_instances,
)
from metrics_pipeline.hours import Clock, naive_utc, oldest_kept_hour, utc_now
from metrics_pipeline.metadata import (
    markdown_table,
    row_count_of_partition,
    table_asset,
)
from metrics_pipeline.settings import Settings, cloudwatch_retention_days
from metrics_pipeline.warehouse.instances import (
    Instance,
    InventoryEntry,
    instances_existing,
    named_by,
    read_inventory,
)
from metrics_pipeline.warehouse.readers import SnapshotMissingError
from metrics_pipeline.warehouse.resources import WarehouseResource
from metrics_pipeline.warehouse.schema import INSTANCES_TABLE, METRICS_TABLE


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
    accounts: list[str]  # accounts described
    failed: dict[str, str]  # accounts whose role could not be assumed: the line why
    regions: list[str]
    records: list[dict[str, Any]]
    new_instances: list[Instance]
    aws_requests: int
    table_rows: int | None  # rows of rds_instances after the write; None when nothing was written

    def metadata(self) -> dict[str, Any]:
        rows = {} if self.table_rows is None else {"dagster/row_count": self.table_rows}
        failed = {"accounts_failed": "; ".join(self.failed.values())} if self.failed else {}
        return {
            **rows,
            "instances": len(self.records),
            "new_instances": len(self.new_instances),
            "regions": ", ".join(self.regions),
            "accounts": ", ".join(self.accounts),
            **failed,
            "covered": ", ".join(f"{a}/{r}" for a in self.accounts for r in self.regions),
            "aws_requests": self.aws_requests,
            "by_account_and_region": MetadataValue.md(
                markdown_table(
                    ("account", "region", "instances"),
                    [
                        (
                            account,
                            region,
                            sum(
                                r["account_id"] == account and r["region"] == region
                                for r in self.records
                            ),
                        )
                        for account in self.accounts
                        for region in self.regions
                    ],
                )
            ),
        }


def discover(
    context: AssetExecutionContext,
    aws: AwsResource,
    warehouse: WarehouseResource,
    accounts: Sequence[Account],
    regions: Sequence[str],
    stats: RequestStats,
    write_if_empty: bool = True,
) -> Discovery:
    """Lists the RDS instances of `accounts` in `regions` and upserts them into the inventory;
    an account whose role cannot be assumed is reported and skipped (the step fails only when
    every account does, and then only when `write_if_empty`). With `write_if_empty` false,
    finding none leaves the warehouse alone (no lock taken)."""
    seen_at = utc_now()
    records = []
    clusters = []
    described: list[str] = []
    failed: dict[str, str] = {}
    for account in accounts:
        try:
            for region in regions:
                with aws_errors("DescribeDBInstances", where(region, account, accounts)):
                    client = aws.client("rds", region, stats, account)
                    found = describe(client, account.account_id, region)
                in_clusters = f" in {len(found.clusters)} Aurora cluster(s) and outside"
                context.log.info(
                    f"{account.account_id}/{region}: {len(found.instances)} instance(s)"
                    + (in_clusters if found.clusters else "")
                )
                records.extend(found.instances)
                clusters.extend(found.clusters)
            described.append(account.account_id)
        except AccountUnavailable as error:
            failed[account.account_id] = str(error)
            context.log.error(str(error))
    if failed and not described and write_if_empty:
        raise Failure(description=next(iter(failed.values())), allow_retries=False)
    new_instances: list[Instance] = []
    table_rows = None
    if records or write_if_empty:
        with warehouse.connect() as conn:
            known_before = {entry.instance for entry in read_inventory(conn, regions)}
            upsert_instances(conn, records, seen_at, clusters)
            [(table_rows,)] = conn.execute(f"SELECT count(*) FROM {INSTANCES_TABLE}").fetchall()
        found_keys = (Instance(r["account_id"], r["region"], r["instance_id"]) for r in records)
        new_instances = sorted(key for key in found_keys if key not in known_before)
    if new_instances:
        context.log.info(
            "New instance(s): " + ", ".join(instance_label(i, accounts) for i in new_instances)
        )
    return Discovery(
        described, failed, list(regions), records, new_instances, stats.api_calls, table_rows
    )


def instance_label(instance: Instance, accounts: Sequence[Account]) -> str:
    """An instance's identifier, with its account when the run collects several."""
    if len(accounts) > 1:
        return f"{instance.account_id}/{instance.instance_id}"
    return instance.instance_id


def materialize_rds_instances(
    context: AssetExecutionContext, aws: AwsResource, warehouse: WarehouseResource
) -> MaterializeResult:
    warehouse.prepare()
    stats = RequestStats()
    accounts = aws.accounts(stats)
    discovery = discover(context, aws, warehouse, accounts, aws.regions, stats)
    return MaterializeResult(metadata=discovery.metadata())


def covered_by(metadata: dict[str, Any]) -> set[tuple[str, str]]:
    """The (account, region) pairs a discovery's materialization says it described."""
    if "covered" in metadata:
        text = metadata["covered"].value
        return {tuple(pair.split("/", 1)) for pair in text.split(", ") if pair}
    if "regions" in metadata and "account_id" in metadata:  # before several accounts
        account = metadata["account_id"].value
        return {(account, region) for region in metadata["regions"].value.split(", ")}
    return set()


def read_or_discover_inventory(
    context: AssetExecutionContext,
    aws: AwsResource,
    warehouse: WarehouseResource,
    accounts: Sequence[Account],
    stats: RequestStats,
    read: Callable[
        [duckdb.DuckDBPyConnection, Sequence[str] | None], list[InventoryEntry]
    ] = read_inventory,
) -> list[InventoryEntry]:
    """The inventory (`read`: of instances, or of clusters) of the collected accounts and
    regions, discovering first the ones it lacks (a new deployment, a region or account just
    added), so that a first backfill from the UI just works."""
    account_ids = {account.account_id for account in accounts}

    def collected(entries: list[InventoryEntry]) -> list[InventoryEntry]:
        return [e for e in entries if e.instance.account_id in account_ids]

    try:
        with warehouse.reader() as conn:
            inventory = collected(read(conn, aws.regions))
    except SnapshotMissingError:
        inventory = []
    # A region can hold no instance: the latest discovery that covered it is what counts, so
    # an empty region is not described again by every collection run.
    latest = context.instance.get_latest_materialization_event(RDS_INSTANCES)
    covered = {(e.instance.account_id, e.instance.region) for e in inventory} | (
        covered_by(latest.asset_materialization.metadata) if latest else set()
    )
    lacking_accounts = [
        account
        for account in accounts
        if any((account.account_id, region) not in covered for region in aws.regions)
    ]
    if not lacking_accounts:
        return inventory
    lacking_regions = [
        region
        for region in aws.regions
        if any((a.account_id, region) not in covered for a in lacking_accounts)
    ]
    context.log.info(
        f"No inventory of {', '.join(lacking_regions)} in account(s) "
        f"{', '.join(a.account_id for a in lacking_accounts)} yet: discovering it first"
    )
    discovery = discover(
        context, aws, warehouse, lacking_accounts, lacking_regions, stats, write_if_empty=False
    )
    if not discovery.records:
        return inventory
    context.log_event(
        AssetMaterialization(
            asset_key=RDS_INSTANCES,
            description="Discovered by rds_metrics, whose run found no inventory of these regions.",
            metadata=discovery.metadata(),
        )
    )
    with warehouse.reader() as conn:
        return collected(read(conn, aws.regions))


def check_collectable(
    start: datetime, now: datetime, retention_days: int, period: int, table: str = METRICS_TABLE
) -> None:
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
                f"{table}: the window starts at {start:%Y-%m-%d %H:%M} UTC, before "
                f"{oldest:%Y-%m-%d %H:%M} UTC, the oldest hour that can be collected "
                f"({limit}). Choose hours from {oldest:%Y-%m-%d %H:%M} UTC on."
            ),
            allow_retries=False,
        )


class CollectionConfig(Config):
    instances: list[str] = Field(
        default_factory=list,
        description=(
            "Collect only these instances (and replace only their rows), by id, or as "
            "account_id/id for one account's; empty means every instance that existed in "
            "the window. For rds_cluster_metrics: Aurora clusters, by DBClusterIdentifier."
        ),
    )


def materialize_rds_metrics(
    context: AssetExecutionContext,
    config: CollectionConfig,
    aws: AwsResource,
    collection: CollectionResource,
    warehouse: WarehouseResource,
    clock: Clock = utc_now,
    collected: Collected = INSTANCE_METRICS,
) -> MaterializeResult:
    """A partition of rds_metrics (or of what `collected` says: the clusters' metrics)."""
    warehouse.prepare()
    window = context.partition_time_window
    start, end = align_window(
        naive_utc(window.start), naive_utc(window.end), collection.period_seconds
    )
    check_collectable(
        start,
        clock(),
        warehouse.retention_days,
        collection.period_seconds,
        collected.destination.table.name,
    )
    return collect_window(context, config, aws, collection, warehouse, start, end, clock, collected)


def collect_window(
    context: AssetExecutionContext,
    config: CollectionConfig,
    aws: AwsResource,
    collection: CollectionResource,
    warehouse: WarehouseResource,
    start: datetime,
    end: datetime,
    clock: Clock,
    collected: Collected = INSTANCE_METRICS,
    period_seconds: int | None = None,
) -> MaterializeResult:
    """Collects [start, end) of the subjects (`collected`: instances, clusters) that existed
    then (or those `config` names) at `period_seconds` (the collection period when None), and
    reports what it did; fails as `raise_unless_collected` says."""
    destination = collected.destination
    stats = RequestStats()
    accounts = aws.accounts(stats)
    inventory = read_or_discover_inventory(context, aws, warehouse, accounts, stats, collected.read)
    targets, before_creation = choose_targets(
        context, config, inventory, start, end, collected.inventory_table, collected.noun
    )
    if not targets:
        # Nothing to fetch nor to record: no lock taken, no commit, no snapshot published (a
        # deployment without Aurora clusters pays nothing for their step of the fresh run).
        context.log.info(
            f"No {collected.noun} existed from {start} to {end} UTC: nothing to collect into "
            f"{destination.table.name}"
        )
        return MaterializeResult(metadata={"instances": 0, "rows_written": 0})
    context.log.info(
        f"Collecting {start} to {end} UTC for {len(targets)} {collected.noun}(s) in "
        f"{len({t.account_id for t in targets})} account(s) into {destination.table.name}"
    )
    started = time.monotonic()
    cpu_started = time.process_time()
    with warehouse.connect() as conn:
        lock_wait_seconds = time.monotonic() - started
        done_before = fully_written_by_run(conn, context.run.run_id, start, end, destination)
        if done_before:
            context.log.info(
                f"{len(done_before)} instance(s) already written by an earlier attempt of "
                "this run: not fetched again"
            )
        run = CollectionRun(
            aws,
            collection,
            accounts,
            start,
            end,
            clock(),
            context.run.run_id,
            conn,
            warehouse,
            destination=destination,
            period_seconds=period_seconds,
            metrics_of={e.instance: collected.metrics(collection, e) for e in inventory},
            namespace=collected.namespace,
        )
        outcomes = run.collect([t for t in targets if t not in done_before], context.log.info)
        figures = run.figures(outcomes, targets, lock_wait_seconds, cpu_started, started)
        record_run(conn, figures)
        record_run_parts(conn, context.run.run_id, destination.table.name, run.parts(outcomes))
        [(table_rows,)] = conn.execute(f"SELECT count(*) FROM {destination.table.name}").fetchall()
    written = figures["rows_written"]
    context.log.info(
        f"Wrote {written} row(s) (replaced {figures['rows_replaced']}) from "
        f"{figures['datapoints']} datapoint(s) in {figures['cloudwatch_requests']} request(s)"
    )
    skipped = merged_skips(outcomes.values())
    if any(skipped.values()):
        context.log.warning(
            "Skipped datapoints CloudWatch sent: "
            + ", ".join(f"{count} {reason.replace('_', ' ')}" for reason, count in skipped.items())
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
        "snapshot_publish_seconds": round(warehouse.publish_seconds, 3),
        "dagster/row_count": table_rows,
        **row_count_of_partition(context, written),
        **{
            key: value.isoformat() if isinstance(value, datetime) else value
            for key, value in figures.items()
            if key not in ("run_id", "asset", "finished_at")
        },
        **outcome_metadata(outcomes.values()),
    }
    if before_creation:
        metadata["hours_before_creation"] = ", ".join(
            f"{instance_id}: {hours}" for instance_id, hours in before_creation.items()
        )
    raise_unless_collected(outcomes.values(), metadata)
    return MaterializeResult(metadata=metadata)


def choose_targets(
    context: AssetExecutionContext,
    config: CollectionConfig,
    inventory: Sequence[InventoryEntry],
    start: datetime,
    end: datetime,
    inventory_table: str = INSTANCES_TABLE,
    noun: str = "instance",
) -> tuple[list[Instance], dict[str, int]]:
    """The subjects the run collects, and how many hours asked precede a named one's
    creation."""
    unknown = sorted(
        name
        for name in config.instances
        if not any(named_by(e.instance, [name]) for e in inventory)
    )
    if unknown:
        raise Failure(
            description=(
                f"instances: unknown {noun} id(s) {', '.join(unknown)}; "
                f"the inventory ({inventory_table}) does not list them."
            ),
            allow_retries=False,
        )
    if not config.instances:
        return instances_existing(inventory, start, end), {}
    # Named instances are fetched for every hour asked: CloudWatch keeps a re-created
    # instance's earlier history under the same identifier.
    named = [e for e in inventory if named_by(e.instance, config.instances)]
    before_creation = hours_before_creation(named, start, end)
    for instance_id, hours in before_creation.items():
        context.log.info(
            f"{instance_id}: {hours} of the hours asked precede its creation time; "
            "fetching them anyway (CloudWatch may hold an earlier instance's data)"
        )
    return [e.instance for e in named], before_creation


def unhealed_hours_text(settings: Settings) -> str:
    """Why a new deployment's partitions page shows hours as missing that nothing collects."""
    return (
        f"The partitions start at {settings.partitions_start:%Y-%m-%d %H:%M} UTC "
        "(METRICS_PARTITIONS_START; by default midnight METRICS_RETENTION_DAYS ago, what the "
        "warehouse keeps), but the gap sensor collects only the last "
        f"{settings.backfill_days} days (METRICS_BACKFILL_DAYS): older hours stay missing "
        "(grey) until you materialize them by hand, which CloudWatch allows for "
        f"{cloudwatch_retention_days(settings.period_seconds)} days at this period."
    )


def build_collection_assets(
    settings: Settings, hourly_partitions: HourlyPartitionsDefinition, clock: Clock = utc_now
) -> list[AssetsDefinition]:
    """rds_instances and rds_metrics, with the retry policy and partitions of `settings`;
    `clock` tells rds_metrics which hours have ended and settled."""
    retry_policy = aws_retry_policy(settings)

    def collect_rds_metrics(
        context: AssetExecutionContext,
        config: CollectionConfig,
        aws: AwsResource,
        collection: CollectionResource,
        warehouse: WarehouseResource,
    ) -> MaterializeResult:
        return materialize_rds_metrics(context, config, aws, collection, warehouse, clock)

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
            "materialized, and each dropped hour carries a `dropped_by_retention` observation. "
            f"{unhealed_hours_text(settings)}"
        ),
    )(collect_rds_metrics)
    return [rds_instances, rds_metrics]
