"""The self-healing gap sensor: finds settled hours that lack data and backfills them."""

from datetime import datetime, timedelta

import duckdb
from dagster import (
    AssetKey,
    AssetPartitionStatus,
    DagsterEventType,
    DefaultSensorStatus,
    RunFailureSensorContext,
    RunRequest,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    run_failure_sensor,
    sensor,
)

from metrics_pipeline.alerts import alert_line, send_alert
from metrics_pipeline.healing import (
    HealingRun,
    HourStatus,
    find_gaps,
    healing_hours,
    plan_healing_runs,
)
from metrics_pipeline.hours import HOUR, partition_key, utc_now
from metrics_pipeline.jobs import healing_job
from metrics_pipeline.partitions import hourly_partitions
from metrics_pipeline.resources import AwsResource, WarehouseResource
from metrics_pipeline.schedules import RANGE_END_TAG, RANGE_START_TAG, range_tags
from metrics_pipeline.settings import get_settings
from metrics_pipeline.warehouse import read_inventory, settled_fetches

settings = get_settings()

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
        run_key=(
            f"heal {partition_key(run.first_hour)}..{partition_key(run.last_hour)} "
            f"[{scope}] @{now:%Y-%m-%dT%H:%M}"
        ),
        run_config=run_config,
        tags=range_tags(run.first_hour, run.last_hour),
    )


# The sensor wakes every minute but looks for gaps only every METRICS_BACKFILL_INTERVAL_MINUTES
# (its cursor holds the time of the last look): a look that could not happen (no warehouse
# yet, on a fresh install) is tried again a minute later instead of an interval later.
WAKE_SECONDS = 60
LOOK_INTERVAL = timedelta(minutes=settings.backfill_interval_minutes)


def next_look(cursor: str | None, now: datetime) -> datetime | None:
    """When the next look is due, if not yet; None when it is due now."""
    if not cursor:
        return None
    due = datetime.fromisoformat(cursor) + LOOK_INTERVAL
    return due if now < due else None


@sensor(
    job=healing_job,
    minimum_interval_seconds=min(WAKE_SECONDS, settings.backfill_interval_minutes * 60),
    default_status=DefaultSensorStatus.RUNNING,
    description=(
        f"Every {settings.backfill_interval_minutes} min (and a minute after the first "
        f"collection), looks back {settings.backfill_days} days for settled hours that an "
        "existing instance has no settled fetch of, or that never materialized, and backfills "
        f"them (at most {settings.backfill_max_hours_per_tick} hours per tick, newest first)."
    ),
)
def gap_healing_sensor(
    context: SensorEvaluationContext, warehouse: WarehouseResource, aws: AwsResource
) -> SensorResult | SkipReason:
    now = utc_now()
    due = next_look(context.cursor, now)
    if due is not None:
        return SkipReason(f"Next look for gaps at {due:%H:%M} UTC.")
    hours = healing_hours(now, settings.backfill_days, aws.settle_delay)
    if not hours:
        return SkipReason("No settled hour in the look-back window yet.")
    if not warehouse.snapshot_path.exists():
        return SkipReason("No warehouse yet: waiting for the first collection run.")
    try:
        with warehouse.read() as conn:
            inventory = read_inventory(conn, aws.regions)
            settled = settled_fetches(conn, hours[0], hours[-1] + HOUR)
    except (duckdb.Error, OSError) as error:
        return SkipReason(f"The warehouse could not be read ({error}); trying again next tick.")
    if not inventory:
        return SkipReason("The inventory is empty: rds_instances has not run yet.")
    context.update_cursor(now.isoformat())

    keys = [partition_key(hour) for hour in hours]
    statuses = (
        context.instance.get_status_by_partition(AssetKey("rds_metrics"), keys, hourly_partitions)
        or {}
    )
    status_by_hour = {
        hour: STATUS_OF[statuses.get(key)] for hour, key in zip(hours, keys, strict=True)
    }
    gaps = find_gaps(hours, inventory, settled, status_by_hour)
    if not gaps:
        return SkipReason(
            f"No gaps: {len(hours)} settled hours since {partition_key(hours[0])} are complete "
            f"for {len(inventory)} instance(s)."
        )
    runs = plan_healing_runs(gaps, inventory, settings.backfill_max_hours_per_tick)
    planned = sum(run.hours for run in runs)
    context.log.info(
        f"{len(gaps)} gap hour(s) found; launching {len(runs)} run(s) for {planned} hour(s)"
        + (", the rest next tick" if planned < len(gaps) else "")
    )
    return SensorResult(run_requests=[healing_request(run, now) for run in runs])


@run_failure_sensor(
    default_status=DefaultSensorStatus.RUNNING,
    description="Announces every failed run with one alert line (see alerts.py to page someone).",
)
def run_failure_alert(context: RunFailureSensorContext) -> None:
    run = context.dagster_run
    start, end = run.tags.get(RANGE_START_TAG), run.tags.get(RANGE_END_TAG)
    hours = f"{start}..{end}" if start else run.tags.get("dagster/partition")
    step_failures = context.instance.all_logs(run.run_id, of_type=DagsterEventType.STEP_FAILURE)
    error = (
        step_failures[0].dagster_event.step_failure_data.error.message
        if step_failures and step_failures[0].dagster_event.step_failure_data.error
        else context.failure_event.message
    )
    line = alert_line(run.job_name, run.run_id, hours, error)
    context.log.error(line)
    send_alert(line)
