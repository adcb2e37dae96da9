"""CloudWatch's AWS/RDS metrics per instance: the pipeline's first source."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

import duckdb
from dagster import AssetChecksDefinition, Definitions, RunRequest

from metrics_pipeline.catalog import expected_metrics, published_metrics
from metrics_pipeline.collection.assets import build_collection_assets
from metrics_pipeline.collection.checks import sanity_check
from metrics_pipeline.collection.jobs import fresh_collection_job
from metrics_pipeline.collection.keys import RDS_METRICS
from metrics_pipeline.collection.schedules import (
    build_fresh_collection_schedule,
    fresh_hours,
    range_tags,
)
from metrics_pipeline.dagster_runs import RAW_HEALING_JOB
from metrics_pipeline.hours import Clock
from metrics_pipeline.partitions import Partitions
from metrics_pipeline.settings import BACKFILL_QUOTA_DATAPOINTS_PER_TICK, Settings
from metrics_pipeline.sources.jobs import healing_job_for
from metrics_pipeline.sources.source import Source
from metrics_pipeline.warehouse.fetch_log import RDS_FETCH_LOG
from metrics_pipeline.warehouse.instances import Instance, InventoryEntry, read_inventory
from metrics_pipeline.warehouse.schema import METRICS_TABLE

if TYPE_CHECKING:  # the type define_asset_job returns, which Dagster exports nowhere public
    from dagster._core.definitions.unresolved_asset_job_definition import (
        UnresolvedAssetJobDefinition,
    )

# The run key of the fresh collection a new deployment starts with: it happens once.
FIRST_COLLECTION_RUN_KEY = "first collection"


class CloudWatchRds(Source):
    name = "cloudwatch_rds"
    asset = RDS_METRICS
    fetch_log = RDS_FETCH_LOG
    healing_job = healing_job_for(RDS_METRICS, RAW_HEALING_JOB)
    jobs: tuple[UnresolvedAssetJobDefinition, ...] = (fresh_collection_job, healing_job)

    def definitions(self, settings: Settings, partitions: Partitions) -> Definitions:
        return Definitions(
            assets=build_collection_assets(settings, partitions.hourly),
            jobs=self.jobs,
            schedules=[build_fresh_collection_schedule(settings)],
        )

    def subjects(
        self, conn: duckdb.DuckDBPyConnection, regions: Sequence[str] | None
    ) -> list[InventoryEntry]:
        return read_inventory(conn, regions)

    def datapoints_per_subject_hour(
        self, settings: Settings, subjects: Sequence[InventoryEntry]
    ) -> int:
        return (
            most_metrics(settings, subjects)
            * len(settings.statistics)
            * (3600 // settings.period_seconds)
        )

    def datapoints_per_tick(self, settings: Settings, subjects: Sequence[InventoryEntry]) -> int:
        """METRICS_BACKFILL_MAX_DATAPOINTS_PER_TICK, or CloudWatch's quota over two ticks for
        each account and region (its quotas are theirs, fetched side by side)."""
        if settings.backfill_max_datapoints_per_tick is not None:
            return settings.backfill_max_datapoints_per_tick
        units = {(e.instance.account_id, e.instance.region) for e in subjects}
        return BACKFILL_QUOTA_DATAPOINTS_PER_TICK * max(1, len(units))

    def tick_budget_text(self, settings: Settings) -> str:
        if settings.backfill_max_datapoints_per_tick is not None:
            return f"{settings.backfill_max_datapoints_per_tick:,} CloudWatch datapoints"
        return (
            f"{BACKFILL_QUOTA_DATAPOINTS_PER_TICK:,} CloudWatch datapoints per account and "
            "region (the quota's pace)"
        )

    def rows_per_subject_hour(
        self, conn: duckdb.DuckDBPyConnection, start: datetime, end: datetime
    ) -> dict[tuple[Instance, datetime], int]:
        rows = conn.execute(
            f"""
            SELECT account_id, region, instance_id, date_trunc('hour', ts), count(*)
            FROM {METRICS_TABLE} WHERE ts >= $start AND ts < $end GROUP BY ALL
            """,
            {"start": start, "end": end},
        ).fetchall()
        return {(Instance(*row[:3]), row[3]): int(row[4]) for row in rows}

    def expected_rows_per_subject_hour(self, settings: Settings, subject: InventoryEntry) -> int:
        """A row per metric the instance publishes every period, and period: the statistics
        are its columns."""
        expected = expected_metrics(settings.metrics, subject.instance_kind)
        return (3600 // settings.period_seconds) * len(expected)

    def newest_period(
        self, conn: duckdb.DuckDBPyConnection, settings: Settings
    ) -> tuple[datetime, datetime] | None:
        [(newest,)] = conn.execute(f"SELECT max(ts) FROM {METRICS_TABLE}").fetchall()
        if newest is None:
            return None
        return newest, newest + timedelta(seconds=settings.period_seconds)

    def first_run(self, settings: Settings, now: datetime) -> RunRequest | None:
        """The fresh collection, at once rather than at the next cron tick."""
        first, last = fresh_hours(
            now, settings.settle_delay, timedelta(minutes=settings.fresh_interval_minutes)
        )
        return RunRequest(
            run_key=FIRST_COLLECTION_RUN_KEY,
            job_name=fresh_collection_job.name,
            tags=range_tags(first, last),
        )

    def checks(self, settings: Settings, clock: Clock) -> list[AssetChecksDefinition]:
        return [sanity_check(self.asset, settings, clock)]


def most_metrics(settings: Settings, subjects: Sequence[InventoryEntry]) -> int:
    """The most metrics any of `subjects` is asked for (one at least)."""
    return max(
        (len(published_metrics(settings.metrics, s.instance_kind)) for s in subjects),
        default=1,
    )


CLOUDWATCH_RDS = CloudWatchRds()
