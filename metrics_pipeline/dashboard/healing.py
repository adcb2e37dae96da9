"""The hours being healed: the ranges of the raw tier's healing runs queued or running in the
deployment's Dagster instance, read from its run records and never written."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

from metrics_pipeline.healing.progress import read_deployment_runs
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
    """healing_ranges of the deployment's Dagster instance; none where its run records cannot
    be read: the coverage page then shows those hours missing."""
    return read_deployment_runs(healing_ranges) or []
