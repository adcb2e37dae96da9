"""The time grid of the warehouse: one partition per UTC hour of the raw tier, the last one
in progress; one per UTC day of the hourly and daily tiers, from as far back as CloudWatch
keeps hourly data.

Built from the settings when the definitions load (the first hour is a setting), never at
import.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from datetime import datetime, timedelta

from dagster import BetaWarning, DailyPartitionsDefinition, HourlyPartitionsDefinition

from metrics_pipeline.hours import floor_day, utc_now
from metrics_pipeline.settings import CLOUDWATCH_HOURLY_DAYS

# Two partition features Dagster marks beta, used on purpose: single-run backfills of hourly
# partitions and the daily rollup of the day in progress. Without this, every process that
# loads the definitions (each run, each sensor tick) logs the same warnings again.
for _parameter in ("backfill_policy", "allow_nonexistent_upstream_partitions"):
    warnings.filterwarnings("ignore", message=f"Parameter `{_parameter}`", category=BetaWarning)


@dataclass(frozen=True)
class Partitions:
    hourly: HourlyPartitionsDefinition
    # Days of the hourly and daily tiers; the last one is the day in progress. A day is 24
    # partitions fewer than hours: a tier kept for a century stays under Dagster's guidance of
    # 100,000 partitions an asset.
    days: DailyPartitionsDefinition

    @classmethod
    def starting(cls, first_hour: datetime, now: datetime | None = None) -> Partitions:
        """Hours from `first_hour`; days from the oldest CloudWatch still keeps as of `now`
        (or from `first_hour`'s day, if earlier)."""
        oldest_kept = floor_day((now or utc_now()) - timedelta(days=CLOUDWATCH_HOURLY_DAYS))
        return cls(
            hourly=HourlyPartitionsDefinition(start_date=first_hour, timezone="UTC", end_offset=1),
            days=DailyPartitionsDefinition(
                start_date=min(oldest_kept, floor_day(first_hour)), timezone="UTC", end_offset=1
            ),
        )
