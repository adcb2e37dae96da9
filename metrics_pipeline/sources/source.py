"""What the rest of the pipeline asks of a metric source.

A source collects one kind of series into one hourly-partitioned asset: CloudWatch's AWS/RDS
metrics per instance today; next the hourly tier of long history, Aurora's cluster metrics and
Performance Insights' load per dimension key. The gap sensor, the progress line, the data
checks and the definitions know sources only through this class, so a new source is a new
domain folder with one subclass, registered in `source_registry.py` (docs/architecture.md,
"Sources").
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

import duckdb
from dagster import (
    AssetChecksDefinition,
    AssetKey,
    Definitions,
    RunRequest,
    TimeWindowPartitionsDefinition,
)

from metrics_pipeline.hours import HOUR, Clock, healing_hours, partition_key
from metrics_pipeline.partitions import Partitions
from metrics_pipeline.settings import Settings
from metrics_pipeline.warehouse.fetch_log import FetchLog
from metrics_pipeline.warehouse.instances import Instance, InventoryEntry

if TYPE_CHECKING:  # the type define_asset_job returns, which Dagster exports nowhere public
    from dagster._core.definitions.unresolved_asset_job_definition import (
        UnresolvedAssetJobDefinition,
    )


class Source(ABC):
    """One kind of series: its subjects and when each existed, what a subject-hour costs to
    fetch and how much a tick may fetch, how a run is restricted to some subjects, and how
    many rows a complete hour holds."""

    #: A short identifier: it names the source in logs and descriptions.
    name: str
    #: The asset the source writes, one partition per UTC hour (or per `step`).
    asset: AssetKey
    #: How long one partition is: an hour, or a day for a source fetched a day at a time.
    step: timedelta = HOUR
    #: Healed only while the sources registered before it launch nothing and have no healing
    #: run unfinished: a long history waits for the recent one.
    after_earlier_sources: bool = False
    #: What each materialization records per subject and hour.
    fetch_log: FetchLog
    #: The job the gap sensor launches to fill this source's gaps (sources/jobs.py).
    healing_job: UnresolvedAssetJobDefinition
    #: Every job that collects the source, the healing job included: what the gap sensor may
    #: launch and the health summary reports on.
    jobs: tuple[UnresolvedAssetJobDefinition, ...]

    @abstractmethod
    def definitions(self, settings: Settings, partitions: Partitions) -> Definitions:
        """Its assets, its `jobs` and its schedules."""

    @abstractmethod
    def subjects(
        self, conn: duckdb.DuckDBPyConnection, regions: Sequence[str] | None
    ) -> list[InventoryEntry]:
        """Every subject of the collected regions (all when None) with when it existed."""

    @abstractmethod
    def datapoints_per_subject_hour(
        self, settings: Settings, subjects: Sequence[InventoryEntry]
    ) -> int:
        """What one subject-hour of `subjects` costs to fetch at most, in the unit of the
        tick's budget."""

    @abstractmethod
    def datapoints_per_tick(self, settings: Settings, subjects: Sequence[InventoryEntry]) -> int:
        """How much healing one tick of the gap sensor may ask of the source's API."""

    @abstractmethod
    def tick_budget_text(self, settings: Settings) -> str:
        """That budget in words, for the sensor's description."""

    @abstractmethod
    def rows_per_subject_hour(
        self, conn: duckdb.DuckDBPyConnection, start: datetime, end: datetime
    ) -> dict[tuple[Instance, datetime], int]:
        """Rows stored per (subject, hour) of [start, end)."""

    @abstractmethod
    def expected_rows_per_subject_hour(self, settings: Settings, subject: InventoryEntry) -> int:
        """Rows a running subject's complete hour holds."""

    @abstractmethod
    def newest_period(
        self, conn: duckdb.DuckDBPyConnection, settings: Settings
    ) -> tuple[datetime, datetime] | None:
        """When the newest stored period starts and ends; None when nothing is stored."""

    def partitions_def(self, partitions: Partitions) -> TimeWindowPartitionsDefinition:
        """The partitions of `asset`."""
        return partitions.hourly

    def partition_key(self, start: datetime) -> str:
        """The key of the partition that starts at `start`."""
        return partition_key(start)

    def healing_window(self, settings: Settings, now: datetime) -> list[datetime]:
        """The starts of the settled partitions the gap sensor looks at, oldest first."""
        return healing_hours(now, settings.backfill_days, settings.settle_delay)

    def settled_partitions(
        self,
        conn: duckdb.DuckDBPyConnection,
        window: Sequence[datetime],
        now: datetime,
        settings: Settings,
    ) -> set[tuple[Instance, datetime]]:
        """(subject, partition start) pairs of `window` whose every settled hour has a settled
        fetch: final, even when nothing came back."""
        return self.fetch_log.settled(conn, window[0], window[-1] + self.step)

    def checked_hours(self, settings: Settings, now: datetime) -> list[datetime]:
        """The hours the completeness check counts."""
        return healing_hours(now, settings.backfill_days, settings.settle_delay)

    def freshness_bound(self, settings: Settings) -> timedelta:
        """How old the newest stored period may be before the freshness check fails."""
        return timedelta(minutes=settings.freshness_minutes)

    def restricted_run_config(self, subject_names: Sequence[str]) -> dict[str, object]:
        """The run config that limits a run of the asset to these subjects (named as
        `subjects.instance_name` does); empty for every subject."""
        if not subject_names:
            return {}
        return {"ops": {self.asset.path[-1]: {"config": {"instances": list(subject_names)}}}}

    def first_run(self, settings: Settings, now: datetime) -> RunRequest | None:
        """The run that starts a new deployment's collection, if the source starts one."""
        return None

    def checks(self, settings: Settings, clock: Clock) -> list[AssetChecksDefinition]:
        """The source's own checks, beside the completeness and freshness checks every source
        gets (quality/checks.py)."""
        return []
