"""The fresh schedule: hours from the tick's scheduled time, one run, an idempotent run key."""

import uuid
from contextlib import nullcontext
from datetime import UTC, datetime, timedelta

import pytest
from dagster import (
    DagsterInstance,
    DagsterRun,
    DagsterRunStatus,
    DefaultScheduleStatus,
    RunRequest,
    SkipReason,
    build_schedule_context,
    instance_for_test,
)

from metrics_pipeline.collection.jobs import fresh_collection_job
from metrics_pipeline.collection.schedules import build_fresh_collection_schedule, fresh_hours
from metrics_pipeline.maintenance.schedules import retention_schedule
from metrics_pipeline_tests.helpers import TEST_SETTINGS

fresh_collection_schedule = build_fresh_collection_schedule(TEST_SETTINGS)

START = "dagster/asset_partition_range_start"
END = "dagster/asset_partition_range_end"


def evaluate(
    hour: int, minute: int, instance: DagsterInstance | None = None
) -> RunRequest | SkipReason:
    scheduled = datetime(2026, 11, 20, hour, minute, tzinfo=UTC)
    # The context as a context manager: the instance it opens is closed with it, not left
    # Dagster's current one.
    with (
        instance_for_test() if instance is None else nullcontext(instance) as used,
        build_schedule_context(instance=used, scheduled_execution_time=scheduled) as context,
    ):
        return fresh_collection_schedule(context)


def tick(hour: int, minute: int) -> RunRequest:
    result = evaluate(hour, minute)
    assert isinstance(result, RunRequest)
    return result


@pytest.mark.parametrize(
    ("minute", "first"),
    [
        (0, "2026-11-20-09:00"),  # 09:00 ended just now: not settled, fetch it again
        (10, "2026-11-20-09:00"),  # a replayed or late tick
        (15, "2026-11-20-09:00"),  # settled now: this tick's fetch of 09:00 is final
        (20, "2026-11-20-09:00"),  # the tick before (10:05) was not late enough yet
        (30, "2026-11-20-10:00"),  # the 10:15 tick already fetched 09:00 settled
        (45, "2026-11-20-10:00"),
    ],
)
def test_tick_collects_the_hour_in_progress_and_the_unsettled_one(minute: int, first: str) -> None:
    request = tick(10, minute)
    assert request.tags[START] == first
    assert request.tags[END] == "2026-11-20-10:00"
    assert request.run_key == f"fresh 2026-11-20T10:{minute:02d}"
    assert request.partition_key is None  # one run over the range, not one per hour


def test_same_tick_same_run_key_and_midnight_crossing() -> None:
    assert tick(0, 0).run_key == tick(0, 0).run_key
    assert tick(0, 0).tags[START] == "2026-11-19-23:00"
    assert tick(0, 0).tags[END] == "2026-11-20-00:00"


@pytest.mark.parametrize(
    "status",
    [
        DagsterRunStatus.NOT_STARTED,
        DagsterRunStatus.STARTING,
        DagsterRunStatus.STARTED,
        DagsterRunStatus.SUCCESS,
        DagsterRunStatus.FAILURE,
    ],
)
def test_a_tick_waits_while_an_earlier_fresh_run_has_not_finished(
    status: DagsterRunStatus,
) -> None:
    """Fresh runs go ahead of healing runs in the queue: ticks that each queued one more while
    the last had not finished would keep a healing run waiting for ever on a slow machine."""
    with instance_for_test() as instance:
        earlier = DagsterRun(
            job_name=fresh_collection_job.name, run_id=str(uuid.uuid4()), status=status
        )
        instance.add_run(earlier)
        result = evaluate(10, 30, instance)
        if status in (DagsterRunStatus.SUCCESS, DagsterRunStatus.FAILURE):
            assert isinstance(result, RunRequest)
        else:
            assert isinstance(result, SkipReason)
            assert result.skip_message == (
                f"The fresh run {earlier.run_id[:8]} ({status.value.lower()}) has not finished: "
                "it collects the newest hours; the next tick after it does goes on."
            )


def test_previous_hour_follows_the_settle_delay() -> None:
    hour = datetime(2026, 11, 20, 10)
    every_5 = timedelta(minutes=5)
    # 40 min settle: the 10:40 tick is the first to fetch 09:00 settled; 10:45 drops it.
    assert fresh_hours(hour + timedelta(minutes=40), timedelta(minutes=40), every_5)[
        0
    ] == hour - timedelta(hours=1)
    assert fresh_hours(hour + timedelta(minutes=45), timedelta(minutes=40), every_5)[0] == hour
    # No settle delay, hourly ticks: each tick still takes the hour that just ended once.
    assert fresh_hours(hour, timedelta(0), timedelta(hours=1)) == (hour - timedelta(hours=1), hour)


def test_schedules_run_by_default_on_utc() -> None:
    assert fresh_collection_schedule.cron_schedule == "*/15 * * * *"
    assert fresh_collection_schedule.execution_timezone == "UTC"
    assert fresh_collection_schedule.default_status == DefaultScheduleStatus.RUNNING
    assert retention_schedule.default_status == DefaultScheduleStatus.RUNNING
    assert fresh_collection_schedule.job_name == "fresh_collection_job"
