"""Which days the hourly tier heals and which hours of a day it fetches: pure functions of the
clock.

The tier is partitioned by UTC day. A day is fetched once it has ended and settled, in one
request per batch of series: GetMetricData bills per metric requested, not per datapoint, so a
day fetched at once costs a 24th of fetching its hours one by one. Nothing older than
CloudWatch keeps (455 days) is asked for, so nothing stored from before is ever replaced.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import TypeVar

from metrics_pipeline.hours import DAY, HOUR, floor_day, floor_hour, is_settled
from metrics_pipeline.settings import CLOUDWATCH_HOURLY_DAYS


def oldest_fetchable_hour(now: datetime, kept_days: int | None) -> datetime:
    """The first whole hour that CloudWatch still answers for and that the tier keeps
    (`kept_days`, forever when None)."""
    days = CLOUDWATCH_HOURLY_DAYS if kept_days is None else min(kept_days, CLOUDWATCH_HOURLY_DAYS)
    oldest = now - timedelta(days=days)
    floor = floor_hour(oldest)
    return floor if floor == oldest else floor + HOUR


def fetch_window(
    start: datetime, end: datetime, now: datetime, kept_days: int | None
) -> tuple[datetime, datetime]:
    """The hours of [start, end) that can be fetched at `now`: none older than CloudWatch
    keeps, none not yet ended. Empty (start >= end) when there are none."""
    return max(start, oldest_fetchable_hour(now, kept_days)), min(end, floor_hour(now))


def settled_days(now: datetime, settle_delay: timedelta, kept_days: int | None) -> list[datetime]:
    """The days the gap sensor looks at, oldest first: from the one holding the oldest
    fetchable hour to the last that has ended and settled."""
    first = floor_day(oldest_fetchable_hour(now, kept_days))
    days = []
    day = first
    while is_settled(day + DAY - HOUR, now, settle_delay):
        days.append(day)
        day += DAY
    return days


def hours_required(
    days: Sequence[datetime], now: datetime, kept_days: int | None
) -> dict[datetime, int]:
    """How many of each day's hours can be fetched at `now` (24 but for the oldest day)."""
    required = {}
    for day in days:
        start, end = fetch_window(day, day + DAY, now, kept_days)
        required[day] = max(0, int((end - start) / HOUR))
    return required


Subject = TypeVar("Subject")


def complete_days(
    settled_hours: Iterable[tuple[Subject, datetime, int]], required: Mapping[datetime, int]
) -> set[tuple[Subject, datetime]]:
    """(subject, day) pairs whose settled fetched hours cover every fetchable hour of the day,
    from (subject, day, settled hours fetched) rows."""
    return {
        (subject, day)
        for subject, day, hours in settled_hours
        if day in required and hours >= required[day]
    }
