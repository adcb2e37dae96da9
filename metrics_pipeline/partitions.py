"""The time grid of the warehouse: one partition per UTC hour, the last one in progress."""

from __future__ import annotations

from dagster import DailyPartitionsDefinition, HourlyPartitionsDefinition

from metrics_pipeline.settings import get_settings

hourly_partitions = HourlyPartitionsDefinition(
    start_date=get_settings().partitions_start,
    timezone="UTC",
    end_offset=1,
)

# Days for the daily rollup; the last one is the day in progress.
daily_partitions = DailyPartitionsDefinition(
    start_date=get_settings().partitions_start.replace(hour=0),
    timezone="UTC",
    end_offset=1,
)
