"""The self-healing gap sensor: starts the first collection of a new deployment, then finds
settled hours that lack data and backfills them, as fast as a bounded amount of work per
tick allows."""

from collections.abc import Sequence
from datetime import datetime, timedelta

import duckdb
from dagster import (
    AssetPartitionStatus,
    DefaultSensorStatus,
    HourlyPartitionsDefinition,
    RunRequest,
    SensorDefinition,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    sensor,
)

from metrics_pipeline.collection.inventory import InventoryEntry
from metrics_pipeline.collection.jobs import fresh_collection_job
from metrics_pipeline.collection.keys import RDS_METRICS
from metrics_pipeline.collection.resources import AwsResource, CollectionResource
from metrics_pipeline.collection.schedules import (
    fresh_hours,
    range_tags,
)
from metrics_pipeline.collection.store import read_inventory, settled_fetches
from metrics_pipeline.healing.gaps import (
    HealingRun,
    HourStatus,
    find_gaps,
    healing_hours,
    history_progress,
    plan_healing_runs,
)
from metrics_pipeline.healing.jobs import healing_job
from metrics_pipeline.healing.progress import healing_runs_in_flight
from metrics_pipeline.hours import HOUR, Clock, partition_key, utc_now
from metrics_pipeline.settings import BACKFILL_QUOTA_DATAPOINTS_PER_TICK, Settings
from metrics_pipeline.warehouse.resources import WarehouseResource

STATUS_OF: dict[AssetPartitionStatus | None, HourStatus] = {
    AssetPartitionStatus.MATERIALIZED: HourStatus.MATERIALIZED,
    AssetPartitionStatus.FAILED: HourStatus.FAILED,
    AssetPartitionStatus.IN_PROGRESS: HourStatus.IN_PROGRESS,
    None: HourStatus.MISSING,
}


def healing_request(run: HealingRun, now: datetime) -> RunRequest:
    scope = ",".join(run.instance_ids) if run.instance_ids else "all instances"
    run_config = (
        {"ops": {"rds_metrics": {"config": {"instances": list(run.instance_ids)}}}}
        if run.instance_ids
        else {}
    )
    return RunRequest(
        job_name=healing_job.name,
        run_key=(
            f"heal {partition_key(run.first_hour)}..{partition_key(run.last_hour)} "
            f"[{scope}] @{now:%Y-%m-%dT%H:%M}"
        ),
        run_config=run_config,
        tags=range_tags(run.first_hour, run.last_hour),
    )


# The sensor wakes every minute but looks for gaps only every METRICS_BACKFILL_INTERVAL_MINUTES
# while there is nothing left to heal. Its cursor holds when the next look is due: a look that
# could not happen (no warehouse yet), or that left work for later, is due at the next wake.
WAKE_SECONDS = 60


FIRST_COLLECTION_RUN_KEY = "first collection"


def next_look(cursor: str | None, now: datetime) -> datetime | None:
    """When the next look is due, if not yet; None when it is due now."""
    if not cursor:
        return None
    due = datetime.fromisoformat(cursor)
    return due if now < due else None


def first_collection_request(
    now: datetime, settle_delay: timedelta, fresh_interval: timedelta
) -> RunRequest:
    """The fresh collection a new deployment starts with, rather than at the next cron tick;
    its run key makes it happen once."""
    first, last = fresh_hours(now, settle_delay, fresh_interval)
    return RunRequest(
        run_key=FIRST_COLLECTION_RUN_KEY,
        job_name=fresh_collection_job.name,
        tags=range_tags(first, last),
    )


def datapoints_per_tick(settings: Settings, inventory: Sequence[InventoryEntry]) -> int:
    """METRICS_BACKFILL_MAX_DATAPOINTS_PER_TICK, or CloudWatch's quota over two ticks for each
    account and region of the inventory (its quotas are theirs, fetched side by side)."""
    if settings.backfill_max_datapoints_per_tick is not None:
        return settings.backfill_max_datapoints_per_tick
    units = {(e.instance.account_id, e.instance.region) for e in inventory}
    return BACKFILL_QUOTA_DATAPOINTS_PER_TICK * max(1, len(units))


def tick_budget_text(settings: Settings) -> str:
    if settings.backfill_max_datapoints_per_tick is not None:
        return f"{settings.backfill_max_datapoints_per_tick:,} CloudWatch datapoints"
    return (
        f"{BACKFILL_QUOTA_DATAPOINTS_PER_TICK:,} CloudWatch datapoints per account and region "
        "(the quota's pace)"
    )


def look_for_gaps(
    context: SensorEvaluationContext,
    warehouse: WarehouseResource,
    aws: AwsResource,
    collection: CollectionResource,
    settings: Settings,
    hourly_partitions: HourlyPartitionsDefinition,
    now: datetime,
) -> SensorResult | SkipReason:
    """One tick of the gap sensor, at `now` (naive UTC)."""
    look_interval = timedelta(minutes=settings.backfill_interval_minutes)
    fresh_interval = timedelta(minutes=settings.fresh_interval_minutes)
    due = next_look(context.cursor, now)
    if due is not None:
        return SkipReason(f"Next look for gaps at {due:%H:%M} UTC.")
    if not warehouse.has_data():
        context.log.info("No warehouse yet: starting the first collection (once).")
        return SensorResult(
            run_requests=[first_collection_request(now, settings.settle_delay, fresh_interval)]
        )
    hours = healing_hours(now, settings.backfill_days, settings.settle_delay)
    if not hours:
        return SkipReason("No settled hour in the look-back window yet.")
    try:
        with warehouse.reader() as conn:
            inventory = read_inventory(conn, aws.regions)
            settled = settled_fetches(conn, hours[0], hours[-1] + HOUR)
    except (duckdb.Error, OSError) as error:
        return SkipReason(f"The warehouse could not be read ({error}); trying again next tick.")
    if not inventory:
        return SkipReason("The inventory is empty: rds_instances has not run yet.")
    in_flight = healing_runs_in_flight(context.instance)
    progress = history_progress(hours, inventory, settled, in_flight).line()
    if in_flight:
        return SkipReason(f"{progress}. Looking for gaps again when the healing runs finish.")

    keys = [partition_key(hour) for hour in hours]
    statuses = context.instance.get_status_by_partition(RDS_METRICS, keys, hourly_partitions) or {}
    status_by_hour = {
        hour: STATUS_OF[statuses.get(key)] for hour, key in zip(hours, keys, strict=True)
    }
    gaps = find_gaps(hours, inventory, settled, status_by_hour)
    if not gaps:
        context.update_cursor((now + look_interval).isoformat())
        return SkipReason(
            f"{progress}. No gaps in the {len(hours)} settled hours since "
            f"{partition_key(hours[0])}."
        )
    plan = plan_healing_runs(
        gaps,
        inventory,
        datapoints_per_tick(settings, inventory),
        collection.datapoints_per_instance_hour,
    )
    context.update_cursor((now if plan.hours_left else now + look_interval).isoformat())
    context.log.info(progress)
    context.log.info(
        f"{len(gaps)} gap hour(s) found; launching {len(plan.runs)} run(s) for {plan.hours} "
        "hour(s)"
        + (
            f"; the other {plan.hours_left} hour(s) when they finish"
            " (METRICS_BACKFILL_MAX_DATAPOINTS_PER_TICK)"
            if plan.hours_left
            else ""
        )
    )
    return SensorResult(run_requests=[healing_request(run, now) for run in plan.runs])


def build_gap_healing_sensor(
    settings: Settings, hourly_partitions: HourlyPartitionsDefinition, clock: Clock = utc_now
) -> SensorDefinition:
    @sensor(
        jobs=[healing_job, fresh_collection_job],
        minimum_interval_seconds=min(WAKE_SECONDS, settings.backfill_interval_minutes * 60),
        default_status=DefaultSensorStatus.RUNNING,
        description=(
            "Starts the first collection of a new deployment at once. Then looks back "
            f"{settings.backfill_days} days for settled hours that an existing instance has "
            "no settled fetch of, or that never materialized, and backfills them newest first, "
            f"at most {tick_budget_text(settings)} per tick; it "
            "looks again a minute after those runs finish while work is left, else every "
            f"{settings.backfill_interval_minutes} min."
        ),
    )
    def gap_healing_sensor(
        context: SensorEvaluationContext,
        warehouse: WarehouseResource,
        aws: AwsResource,
        collection: CollectionResource,
    ) -> SensorResult | SkipReason:
        return look_for_gaps(
            context, warehouse, aws, collection, settings, hourly_partitions, clock()
        )

    return gap_healing_sensor
