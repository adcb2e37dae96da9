"""The hours being healed: the ranges of the raw tier's healing runs queued or running in the
Dagster instance of DAGSTER_HOME, read from its run records and never written."""

from __future__ import annotations

import os
from datetime import datetime
from typing import TYPE_CHECKING

from metrics_pipeline.hours import parse_partition_key

if TYPE_CHECKING:
    from dagster import DagsterInstance


def healing_ranges(instance: DagsterInstance) -> list[tuple[datetime, datetime]]:
    """The [first, last] hours of each unfinished run of the raw tier's healing job."""
    from dagster import RunsFilter

    from metrics_pipeline.dagster_runs import (
        RANGE_END_TAG,
        RANGE_START_TAG,
        RAW_HEALING_JOB,
        UNFINISHED,
    )

    runs = instance.get_runs(RunsFilter(job_name=RAW_HEALING_JOB, statuses=UNFINISHED))
    return [
        (
            parse_partition_key(run.tags[RANGE_START_TAG]),
            parse_partition_key(run.tags[RANGE_END_TAG]),
        )
        for run in runs
        if RANGE_START_TAG in run.tags and RANGE_END_TAG in run.tags
    ]


def raw_healing_ranges() -> list[tuple[datetime, datetime]]:
    """healing_ranges of the Dagster instance of DAGSTER_HOME; none without one (an analyst's
    machine) or when it cannot be read (the scale-out stack's reader may not read Dagster's
    database): the coverage page then shows those hours missing."""
    if not os.environ.get("DAGSTER_HOME"):
        return []
    # Dagster is imported here only: the dashboard's readers start without it.
    from dagster import DagsterError, DagsterInstance

    try:
        with DagsterInstance.get() as instance:
            return healing_ranges(instance)
    except (DagsterError, OSError):
        return []
