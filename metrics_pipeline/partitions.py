"""The time grid of the warehouse: one partition per UTC hour, the last one in progress."""

from __future__ import annotations

import warnings

from dagster import BetaWarning, DailyPartitionsDefinition, HourlyPartitionsDefinition

from metrics_pipeline.settings import get_settings

# Two partition features Dagster marks beta, used on purpose: single-run backfills of hourly
# partitions and the daily rollup of the day in progress. Without this, every process that
# loads the definitions (each run, each sensor tick) logs the same warnings again.
for _parameter in ("backfill_policy", "allow_nonexistent_upstream_partitions"):
    warnings.filterwarnings("ignore", message=f"Parameter `{_parameter}`", category=BetaWarning)

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
