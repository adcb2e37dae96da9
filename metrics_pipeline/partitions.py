"""The time grid of the warehouse: one partition per UTC hour, the last one in progress.

Built from the settings when the definitions load (the first hour is a setting), never at
import.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from datetime import datetime

from dagster import BetaWarning, DailyPartitionsDefinition, HourlyPartitionsDefinition

# Two partition features Dagster marks beta, used on purpose: single-run backfills of hourly
# partitions and the daily rollup of the day in progress. Without this, every process that
# loads the definitions (each run, each sensor tick) logs the same warnings again.
for _parameter in ("backfill_policy", "allow_nonexistent_upstream_partitions"):
    warnings.filterwarnings("ignore", message=f"Parameter `{_parameter}`", category=BetaWarning)


@dataclass(frozen=True)
class Partitions:
    hourly: HourlyPartitionsDefinition
    # Days for the daily rollup; the last one is the day in progress.
    daily: DailyPartitionsDefinition

    @classmethod
    def starting(cls, first_hour: datetime) -> Partitions:
        return cls(
            hourly=HourlyPartitionsDefinition(start_date=first_hour, timezone="UTC", end_offset=1),
            daily=DailyPartitionsDefinition(
                start_date=first_hour.replace(hour=0), timezone="UTC", end_offset=1
            ),
        )
