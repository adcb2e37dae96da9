"""Fresh collection: the hour in progress (and the previous one until settled), every few
minutes."""

from datetime import datetime, timedelta

from dagster import (
    DefaultScheduleStatus,
    RunRequest,
    RunsFilter,
    ScheduleDefinition,
    ScheduleEvaluationContext,
    SkipReason,
    schedule,
)

from metrics_pipeline.collection.jobs import fresh_collection_job
from metrics_pipeline.dagster_runs import UNFINISHED, range_tags
from metrics_pipeline.hours import HOUR, floor_hour, naive_utc
from metrics_pipeline.settings import Settings


def fresh_hours(
    scheduled: datetime, settle_delay: timedelta, tick_interval: timedelta
) -> tuple[datetime, datetime]:
    """The hour in progress, preceded by the previous hour until one tick has fetched it
    settled: CloudWatch keeps filling an hour for a while after it ends."""
    current = floor_hour(scheduled)
    previous = current - HOUR
    settled_by_earlier_tick = scheduled - tick_interval >= previous + HOUR + settle_delay
    return (current if settled_by_earlier_tick else previous), current


def build_fresh_collection_schedule(settings: Settings) -> ScheduleDefinition:
    tick_interval = timedelta(minutes=settings.fresh_interval_minutes)

    @schedule(
        job=fresh_collection_job,
        cron_schedule=settings.fresh_cron,
        execution_timezone="UTC",
        default_status=DefaultScheduleStatus.RUNNING,
        description=(
            "Collects the hour in progress (and the previous one until it has settled) in one "
            "run, after refreshing the inventory so new instances are collected at once."
        ),
    )
    def fresh_collection_schedule(
        context: ScheduleEvaluationContext,
    ) -> RunRequest | SkipReason:
        # While an earlier fresh run is queued or running, it collects the newest hours: a
        # tick more would only queue ahead of the healing runs (fresh runs go first), which a
        # machine too slow to finish a fresh run per tick would then never start.
        unfinished = context.instance.get_run_records(
            RunsFilter(job_name=fresh_collection_job.name, statuses=UNFINISHED), limit=1
        )
        if unfinished:
            run = unfinished[0].dagster_run
            return SkipReason(
                f"The fresh run {run.run_id[:8]} ({run.status.value.lower()}) has not finished: "
                "it collects the newest hours; the next tick after it does goes on."
            )
        scheduled = naive_utc(context.scheduled_execution_time)
        first, last = fresh_hours(scheduled, settings.settle_delay, tick_interval)
        return RunRequest(
            run_key=f"fresh {scheduled:%Y-%m-%dT%H:%M}",
            tags=range_tags(first, last),
        )

    return fresh_collection_schedule
