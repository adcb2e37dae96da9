"""What the domains share about Dagster runs: the tags of a run that covers a range of hours or
brings history, and the statuses of a run that has not finished."""

from collections.abc import Callable
from datetime import datetime

from dagster import DagsterRunStatus

from metrics_pipeline.hours import partition_key

RANGE_START_TAG = "dagster/asset_partition_range_start"
RANGE_END_TAG = "dagster/asset_partition_range_end"

# Marks the runs that bring history (the first look-back, hours an outage missed): every
# source's healing job (sources/jobs.py). The history's progress counts them by it, and the
# reports computed before them are computed again once they land (see automation.py).
HEALING_RUN_TAGS = {"metrics_pipeline/collection": "healing"}
# The raw tier's healing job: the look-back whose progress start.sh's terminal follows.
RAW_HEALING_JOB = "healing_job"

# A run in one of these has not finished (the fresh schedule skips a tick while its previous
# run is in one; the gap sensor counts the healing runs in one against its cap).
UNFINISHED = [
    DagsterRunStatus.QUEUED,
    DagsterRunStatus.NOT_STARTED,
    DagsterRunStatus.STARTING,
    DagsterRunStatus.STARTED,
]


def range_tags(
    first: datetime, last: datetime, key: Callable[[datetime], str] = partition_key
) -> dict[str, str]:
    """Tags that make one run cover [first, last] of a single-run backfill asset whose
    partitions are named by `key` (hourly ones by default)."""
    return {RANGE_START_TAG: key(first), RANGE_END_TAG: key(last)}
