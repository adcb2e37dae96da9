"""Hour arithmetic on naive UTC datetimes, the warehouse's time type.

Timestamps inside the warehouse are naive UTC (DuckDB TIMESTAMP); `naive_utc` is the one
place where aware datetimes (Dagster's, boto3's) are converted.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta

HOUR = timedelta(hours=1)
DAY = timedelta(days=1)


def utc_now() -> datetime:
    """The current time as the warehouse stores times: naive UTC."""
    return datetime.now(UTC).replace(tzinfo=None)


# What the sensors, checks and collection read the time from: `utc_now` when deployed, a fixed
# moment in tests, so what they decide (which hours are settled, which are due) does not depend
# on when the test happens to run.
Clock = Callable[[], datetime]


def naive_utc(moment: datetime) -> datetime:
    if moment.tzinfo is None:
        return moment
    return moment.astimezone(UTC).replace(tzinfo=None)


def hour_starts(start: datetime, end: datetime) -> list[datetime]:
    """Every whole hour beginning in [start, end)."""
    first = start.replace(minute=0, second=0, microsecond=0)
    if first < start:
        first += HOUR
    count = max(0, -((first - end) // HOUR))
    return [first + n * HOUR for n in range(count)]


def floor_hour(moment: datetime) -> datetime:
    return moment.replace(minute=0, second=0, microsecond=0)


def floor_day(moment: datetime) -> datetime:
    return moment.replace(hour=0, minute=0, second=0, microsecond=0)


# How an hourly partition is named (Dagster's hourly partitions' format).
PARTITION_KEY_FORMAT = "%Y-%m-%d-%H:%M"


def partition_key(hour: datetime) -> str:
    return hour.strftime(PARTITION_KEY_FORMAT)


def parse_partition_key(key: str) -> datetime:
    return datetime.strptime(key, PARTITION_KEY_FORMAT)


def day_partition_key(day: datetime) -> str:
    return day.strftime("%Y-%m-%d")


def is_settled(hour_start: datetime, fetched_at: datetime, settle_delay: timedelta) -> bool:
    """CloudWatch publishes late: an hour is final once it ended settle_delay before the fetch."""
    return hour_start + HOUR + settle_delay <= fetched_at


def oldest_kept_hour(now: datetime, days: int) -> datetime:
    """The first hour still inside a window of `days` days ending now (whole hours only)."""
    return floor_hour(now - timedelta(days=days))


def consecutive_runs(hours: Iterable[datetime], step: timedelta = HOUR) -> list[list[datetime]]:
    """The hours (or days), sorted, split where one does not follow the previous by `step`."""
    runs: list[list[datetime]] = []
    for hour in sorted(hours):
        if runs and runs[-1][-1] + step == hour:
            runs[-1].append(hour)
        else:
            runs.append([hour])
    return runs


def healing_hours(now: datetime, backfill_days: int, settle_delay: timedelta) -> list[datetime]:
    """The settled hours of the look-back window, oldest first."""
    first = floor_hour(now) - timedelta(days=backfill_days)
    hours = []
    hour = first
    while is_settled(hour, now, settle_delay):
        hours.append(hour)
        hour += HOUR
    return hours
