"""Which settled hours lack data, and the fewest backfill runs that fill them.

Pure functions over the inventory, the fetch log and Dagster's partition statuses; the
gap sensor (`sensors.py`) reads those and launches what `plan_healing_runs` returns.
"""

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import Enum

from metrics_pipeline.cloudwatch import Instance
from metrics_pipeline.hours import HOUR, consecutive_runs, floor_hour, is_settled
from metrics_pipeline.inventory import InventoryEntry, instances_existing


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
    instance_ids: tuple[str, ...]  # empty: every instance that existed then

    @property
    def hours(self) -> int:
        return int((self.last_hour - self.first_hour) / HOUR) + 1


def healing_hours(now: datetime, backfill_days: int, settle_delay: timedelta) -> list[datetime]:
    """The settled hours of the look-back window, oldest first."""
    first = floor_hour(now) - timedelta(days=backfill_days)
    hours = []
    hour = first
    while is_settled(hour, now, settle_delay):
        hours.append(hour)
        hour += HOUR
    return hours


def find_gaps(
    hours: Sequence[datetime],
    inventory: Sequence[InventoryEntry],
    settled: Collection[tuple[Instance, datetime]],
    status_by_hour: Mapping[datetime, HourStatus],
) -> list[Gap]:
    """An hour is a gap if it was never (or unsuccessfully) materialized, or if an instance
    that existed then has no settled fetch of it. A settled fetch that found nothing is final.
    """
    gaps = []
    for hour in hours:
        status = status_by_hour.get(hour, HourStatus.MISSING)
        if status is HourStatus.IN_PROGRESS:
            continue
        existing = instances_existing(inventory, hour, hour + HOUR)
        lacking = frozenset(i for i in existing if (i, hour) not in settled)
        whole_hour = status is not HourStatus.MATERIALIZED
        if lacking or whole_hour:
            gaps.append(Gap(hour, lacking, whole_hour))
    return gaps


def contiguous(gaps: Sequence[Gap]) -> list[list[Gap]]:
    by_hour = {gap.hour: gap for gap in gaps}  # one gap per hour
    return [[by_hour[hour] for hour in run] for run in consecutive_runs(by_hour)]


def plan_healing_runs(
    gaps: Sequence[Gap], inventory: Sequence[InventoryEntry], max_hours: int
) -> list[HealingRun]:
    """One single-run backfill per contiguous range of gap hours, newest first, at most
    `max_hours` hours in all; restricted to the lacking instances when that is fewer than
    everyone who existed in the range."""
    runs = []
    budget = max_hours
    for hours in reversed(contiguous(gaps)):
        if budget <= 0:
            break
        hours = hours[-budget:]
        budget -= len(hours)
        first, last = hours[0].hour, hours[-1].hour
        lacking = {i.instance_id for gap in hours for i in gap.lacking}
        existing = {i.instance_id for i in instances_existing(inventory, first, last + HOUR)}
        restrict = not any(gap.whole_hour for gap in hours) and lacking < existing
        runs.append(HealingRun(first, last, tuple(sorted(lacking)) if restrict else ()))
    return runs
