"""The self-healing gap sensor: starts the first collection of a new deployment, then finds
settled hours that lack data and backfills them, as fast as a bounded amount of work per
tick allows."""

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import duckdb
from dagster import (
    AssetPartitionStatus,
    DefaultSensorStatus,
    RunRequest,
    SensorDefinition,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    sensor,
)

from metrics_pipeline.dagster_runs import range_tags
from metrics_pipeline.healing.gaps import (
    HealingRun,
    HourStatus,
    find_gaps,
    history_progress,
    plan_healing_runs,
)
from metrics_pipeline.healing.progress import healing_runs_in_flight
from metrics_pipeline.hours import HOUR, Clock, healing_hours, utc_now
from metrics_pipeline.partitions import Partitions
from metrics_pipeline.settings import Settings
from metrics_pipeline.sources.source import Source
from metrics_pipeline.warehouse.resources import WarehouseResource

STATUS_OF: dict[AssetPartitionStatus | None, HourStatus] = {
    AssetPartitionStatus.MATERIALIZED: HourStatus.MATERIALIZED,
    AssetPartitionStatus.FAILED: HourStatus.FAILED,
    AssetPartitionStatus.IN_PROGRESS: HourStatus.IN_PROGRESS,
    None: HourStatus.MISSING,
}


def healing_request(source: Source, run: HealingRun, now: datetime) -> RunRequest:
    scope = ",".join(run.instance_ids) if run.instance_ids else "all instances"
    first, last = source.partition_key(run.first_hour), source.partition_key(run.last_hour)
    return RunRequest(
        job_name=source.healing_job.name,
        # The source's name keeps two sources' runs over the same hours apart (a run key is
        # launched once per sensor).
        run_key=f"heal {source.name} {first}..{last} [{scope}] @{now:%Y-%m-%dT%H:%M}",
        run_config=source.restricted_run_config(run.instance_ids),
        tags=range_tags(run.first_hour, run.last_hour, source.partition_key),
    )


# The sensor wakes every minute but looks for gaps only every METRICS_BACKFILL_INTERVAL_MINUTES
# while there is nothing left to heal. Its cursor holds when the next look is due: a look that
# could not happen (no warehouse yet), or that left work for later, is due at the next wake.
WAKE_SECONDS = 60


def next_look(cursor: str | None, now: datetime) -> datetime | None:
    """When the next look is due, if not yet; None when it is due now."""
    if not cursor:
        return None
    due = datetime.fromisoformat(cursor)
    return due if now < due else None


@dataclass(frozen=True)
class SourceLook:
    """What one tick found for one source."""

    requests: list[RunRequest]
    message: str  # for the tick's log, or its skip reason when nothing is launched
    due_again_now: bool  # work is left, or the look could not happen: look again next wake
    in_flight: bool = False  # its healing runs are queued or running

    @property
    def busy(self) -> bool:
        """It launches runs, or has runs that have not finished."""
        return bool(self.requests) or self.in_flight


def look_at_source(
    context: SensorEvaluationContext,
    warehouse: WarehouseResource,
    settings: Settings,
    source: Source,
    partitions: Partitions,
    now: datetime,
) -> SourceLook:
    hours = source.healing_window(settings, now)
    unit = "hour" if source.step == HOUR else "day"
    if not hours:
        return SourceLook([], f"{source.name}: no settled {unit} in its window yet.", False)
    try:
        with warehouse.reader() as conn:
            subjects = source.subjects(conn, settings.regions)
            settled = source.settled_partitions(conn, hours, now, settings)
    except (duckdb.Error, OSError) as error:
        return SourceLook(
            [], f"The warehouse could not be read ({error}); trying again next tick.", True
        )
    if not subjects:
        # The first collection has discovered the inventory (the warehouse has data): a
        # source with no subject, such as Aurora clusters in a fleet without any, is looked
        # at again at the usual interval, not every wake.
        return SourceLook([], f"{source.name}: nothing discovered to collect.", False)
    in_flight = healing_runs_in_flight(context.instance, source.healing_job.name)
    progress = history_progress(hours, subjects, settled, in_flight, source.step).line()
    if in_flight:
        return SourceLook(
            [], f"{progress}. Looking for gaps again when the healing runs finish.", True, True
        )
    keys = [source.partition_key(hour) for hour in hours]
    statuses = (
        context.instance.get_status_by_partition(
            source.asset, keys, source.partitions_def(partitions)
        )
        or {}
    )
    status_by_hour = {
        hour: STATUS_OF[statuses.get(key)] for hour, key in zip(hours, keys, strict=True)
    }
    gaps = find_gaps(hours, subjects, settled, status_by_hour, source.step)
    if not gaps:
        return SourceLook(
            [],
            f"{progress}. No gaps in the {len(hours)} settled {unit}s since {keys[0]}.",
            False,
        )
    plan = plan_healing_runs(
        gaps,
        subjects,
        source.datapoints_per_tick(settings, subjects),
        source.datapoints_per_subject_hour(settings, subjects) * int(source.step / HOUR),
        source.step,
    )
    message = (
        f"{progress}. {len(gaps)} gap {unit}(s) found; launching {len(plan.runs)} run(s) for "
        f"{plan.hours} {unit}(s)"
        + (
            f"; the other {plan.hours_left} {unit}(s) when they finish"
            " (METRICS_BACKFILL_MAX_DATAPOINTS_PER_TICK)"
            if plan.hours_left
            else ""
        )
    )
    requests = [healing_request(source, run, now) for run in plan.runs]
    return SourceLook(requests, message, plan.hours_left > 0)


def look_for_gaps(
    context: SensorEvaluationContext,
    warehouse: WarehouseResource,
    settings: Settings,
    sources: Sequence[Source],
    partitions: Partitions,
    now: datetime,
) -> SensorResult | SkipReason:
    """One tick of the gap sensor, at `now` (naive UTC), over every source."""
    due = next_look(context.cursor, now)
    if due is not None:
        return SkipReason(f"Next look for gaps at {due:%H:%M} UTC.")
    if not warehouse.has_data():
        context.log.info("No warehouse yet: starting the first collection (once).")
        first_runs = [source.first_run(settings, now) for source in sources]
        return SensorResult(run_requests=[run for run in first_runs if run is not None])
    if not healing_hours(now, settings.backfill_days, settings.settle_delay):
        return SkipReason("No settled hour in the look-back window yet.")
    looks: list[SourceLook] = []
    for source in sources:
        busy = [s.name for s, look in zip(sources[: len(looks)], looks, strict=True) if look.busy]
        if source.after_earlier_sources and busy:
            looks.append(
                SourceLook([], f"{source.name}: waiting for {', '.join(busy)} to heal first.", True)
            )
        else:
            looks.append(look_at_source(context, warehouse, settings, source, partitions, now))
    look_interval = timedelta(minutes=settings.backfill_interval_minutes)
    due_again_now = any(look.due_again_now for look in looks)
    context.update_cursor((now if due_again_now else now + look_interval).isoformat())
    requests = [request for look in looks for request in look.requests]
    if not requests:
        return SkipReason(" ".join(look.message for look in looks))
    for look in looks:
        context.log.info(look.message)
    return SensorResult(run_requests=requests)


def build_gap_healing_sensor(
    settings: Settings,
    sources: Sequence[Source],
    partitions: Partitions,
    clock: Clock = utc_now,
) -> SensorDefinition:
    budgets = "; ".join(source.tick_budget_text(settings) for source in sources)

    @sensor(
        jobs=[job for source in sources for job in source.jobs],
        minimum_interval_seconds=min(WAKE_SECONDS, settings.backfill_interval_minutes * 60),
        default_status=DefaultSensorStatus.RUNNING,
        description=(
            "Starts the first collection of a new deployment at once. Then looks back "
            f"{settings.backfill_days} days for settled hours that an existing instance has "
            "no settled fetch of, or that never materialized, and backfills them newest first, "
            f"at most {budgets} per tick; it looks again a minute after those runs finish "
            f"while work is left, else every {settings.backfill_interval_minutes} min."
        ),
    )
    def gap_healing_sensor(
        context: SensorEvaluationContext, warehouse: WarehouseResource
    ) -> SensorResult | SkipReason:
        return look_for_gaps(context, warehouse, settings, sources, partitions, clock())

    return gap_healing_sensor
