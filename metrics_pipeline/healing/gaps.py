"""Which settled hours lack data, and the fewest backfill runs that fill them.

Pure functions over the inventory, the fetch log and Dagster's partition statuses; the
gap sensor (`sensors.py`) reads those and launches what `plan_healing_runs` returns. A source
partitioned by day (the hourly tier) is healed by whole days: its "hours" here are the days'
starts, with `step` a day.
"""

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import Enum

from metrics_pipeline.hours import HOUR, consecutive_runs
from metrics_pipeline.warehouse.instances import (
    Instance,
    InventoryEntry,
    instance_name,
    instances_existing,
)


class HourStatus(Enum):
    MATERIALIZED = "materialized"
    FAILED = "failed"
    IN_PROGRESS = "in progress"  # a queued or running run covers it
    MISSING = "missing"


@dataclass(frozen=True)
class Gap:
    hour: datetime
    lacking: frozenset[Instance]
    # Never materialized, or its latest materialization failed: refetch everyone.
    whole_hour: bool


@dataclass(frozen=True)
class HealingRun:
    first_hour: datetime
    last_hour: datetime
    instance_ids: tuple[str, ...]  # names (see instance_name); empty: every instance then
    step: timedelta = field(default=HOUR, compare=False)  # a partition's length

    @property
    def hours(self) -> int:
        """Partitions the run covers (hours, or days when `step` is a day)."""
        return int((self.last_hour - self.first_hour) / self.step) + 1


def find_gaps(
    hours: Sequence[datetime],
    inventory: Sequence[InventoryEntry],
    settled: Collection[tuple[Instance, datetime]],
    status_by_hour: Mapping[datetime, HourStatus],
    step: timedelta = HOUR,
) -> list[Gap]:
    """An hour is a gap if it was never (or unsuccessfully) materialized, or if an instance
    that existed then has no settled fetch of it. A settled fetch that found nothing is final.
    """
    gaps = []
    for hour in hours:
        status = status_by_hour.get(hour, HourStatus.MISSING)
        if status is HourStatus.IN_PROGRESS:
            continue
        existing = instances_existing(inventory, hour, hour + step)
        lacking = frozenset(i for i in existing if (i, hour) not in settled)
        whole_hour = status is not HourStatus.MATERIALIZED
        if lacking or whole_hour:
            gaps.append(Gap(hour, lacking, whole_hour))
    return gaps


def contiguous(gaps: Sequence[Gap], step: timedelta = HOUR) -> list[list[Gap]]:
    by_hour = {gap.hour: gap for gap in gaps}  # one gap per hour
    return [[by_hour[hour] for hour in run] for run in consecutive_runs(by_hour, step)]


@dataclass(frozen=True)
class HealingPlan:
    runs: list[HealingRun]
    hours_left: int  # gap hours left for a later tick: the budget ran out

    @property
    def hours(self) -> int:
        return sum(run.hours for run in self.runs)


def _healing_run(
    gaps: Sequence[Gap], inventory: Sequence[InventoryEntry], step: timedelta
) -> tuple[HealingRun, int]:
    """The run that fills contiguous `gaps`, and how many instances it fetches."""
    first, last = gaps[0].hour, gaps[-1].hour
    qualified = len({entry.instance.account_id for entry in inventory}) > 1
    lacking = {instance_name(i, qualified) for gap in gaps for i in gap.lacking}
    existing = {
        instance_name(i, qualified) for i in instances_existing(inventory, first, last + step)
    }
    restrict = not any(gap.whole_hour for gap in gaps) and lacking < existing
    if restrict:
        return HealingRun(first, last, tuple(sorted(lacking)), step), len(lacking)
    return HealingRun(first, last, (), step), len(existing)


def plan_healing_runs(
    gaps: Sequence[Gap],
    inventory: Sequence[InventoryEntry],
    max_datapoints: int,
    datapoints_per_instance_hour: int,
    step: timedelta = HOUR,
) -> HealingPlan:
    """One single-run backfill per contiguous range of gap hours, newest first, restricted to
    the lacking instances when that is fewer than everyone who existed in the range.

    A tick asks CloudWatch for at most `max_datapoints` in all (instances x hours x datapoints
    per instance-hour; per instance-day with `step` a day), so a fleet's first history arrives
    in runs the quota and the memory of one run can take; the first run gets at least its
    newest hour, so healing always advances.
    """
    runs: list[HealingRun] = []
    budget = max_datapoints
    for gap_range in reversed(contiguous(gaps, step)):
        chosen: tuple[HealingRun, int] | None = None
        for first in range(len(gap_range) - 1, -1, -1):
            run, instances = _healing_run(gap_range[first:], inventory, step)
            if instances * run.hours * datapoints_per_instance_hour > budget and (chosen or runs):
                break
            chosen = (run, instances)
        if chosen is None:
            break
        run, instances = chosen
        runs.append(run)
        budget -= instances * run.hours * datapoints_per_instance_hour
        if run.hours < len(gap_range) or budget <= 0:
            break
    planned = sum(run.hours for run in runs)
    return HealingPlan(runs, hours_left=len(gaps) - planned)


@dataclass(frozen=True)
class HistoryProgress:
    """How much of the look-back window is collected: what a new deployment waits for."""

    hours_complete: int  # settled hours with a settled fetch of every instance that existed
    hours: int  # settled hours of the window
    instances: int  # instances that existed during the window
    healing_runs: int  # healing runs queued or running
    unit: str = "hour"  # what a partition is: "day" for a source partitioned by day

    @property
    def complete(self) -> bool:
        return self.hours > 0 and self.hours_complete == self.hours

    def line(self) -> str:
        label = "history" if self.unit == "hour" else "hourly history"
        text = (
            f"{label}: {self.hours_complete} of {self.hours} {self.unit}s for {self.instances} "
            f"instance{'s' if self.instances != 1 else ''}"
        )
        if self.complete:  # even while a last run finishes: nothing is left to collect
            return text + "; complete"
        if self.healing_runs == 1:
            return text + "; a healing run is in progress"
        if self.healing_runs:
            return text + f"; {self.healing_runs} healing runs are queued or running"
        return text + "; waiting for the gap sensor"


def history_progress(
    hours: Sequence[datetime],
    inventory: Sequence[InventoryEntry],
    settled: Collection[tuple[Instance, datetime]],
    healing_runs: int,
    step: timedelta = HOUR,
) -> HistoryProgress:
    complete = sum(
        all((i, hour) in settled for i in instances_existing(inventory, hour, hour + step))
        for hour in hours
    )
    existing = instances_existing(inventory, hours[0], hours[-1] + step) if hours else []
    unit = "hour" if step == HOUR else "day"
    return HistoryProgress(complete, len(hours), len(existing), healing_runs, unit)
