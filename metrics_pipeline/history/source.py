"""The hourly tier as a source: healed by whole days, back to the oldest day CloudWatch keeps."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

import duckdb
from dagster import (
    AssetChecksDefinition,
    Definitions,
    RunRequest,
    TimeWindowPartitionsDefinition,
)

from metrics_pipeline.catalog import HOURLY_STATISTIC_COLUMNS, expected_metrics
from metrics_pipeline.collection.checks import sanity_check
from metrics_pipeline.collection.source import CloudWatchRds, most_metrics
from metrics_pipeline.collection.store import HOURLY_DESTINATION
from metrics_pipeline.history.assets import HOURLY_PERIOD_SECONDS, build_history_assets
from metrics_pipeline.history.keys import RDS_METRICS_HOURLY
from metrics_pipeline.history.window import (
    complete_days,
    hours_required,
    oldest_fetchable_hour,
    settled_days,
)
from metrics_pipeline.hours import (
    DAY,
    HOUR,
    Clock,
    day_partition_key,
    floor_day,
    healing_hours,
)
from metrics_pipeline.partitions import Partitions
from metrics_pipeline.settings import Settings
from metrics_pipeline.sources.jobs import healing_job_for
from metrics_pipeline.warehouse.fetch_log import FetchLog
from metrics_pipeline.warehouse.instances import Instance, InventoryEntry
from metrics_pipeline.warehouse.schema import HOURLY_FETCHES_TABLE, HOURLY_TABLE

# Below the raw tier's healing: a new deployment's recent hours come before its past year.
HOURLY_HISTORY_PRIORITY = "-20"


class CloudWatchRdsHourly(CloudWatchRds):
    """The same instances, accounts and quota as the raw tier (CloudWatchRds), fetched at one
    hour with every statistic and four percentiles, a settled day at a time."""

    name = "cloudwatch_rds_hourly"
    asset = RDS_METRICS_HOURLY
    step = DAY
    after_earlier_sources = True
    fetch_log = FetchLog(HOURLY_FETCHES_TABLE)
    healing_job = healing_job_for(
        RDS_METRICS_HOURLY, "hourly_history_job", priority=HOURLY_HISTORY_PRIORITY
    )
    jobs = (healing_job,)

    def definitions(self, settings: Settings, partitions: Partitions) -> Definitions:
        return Definitions(assets=build_history_assets(settings, partitions.days), jobs=self.jobs)

    def partitions_def(self, partitions: Partitions) -> TimeWindowPartitionsDefinition:
        return partitions.days

    def partition_key(self, start: datetime) -> str:
        return day_partition_key(start)

    def healing_window(self, settings: Settings, now: datetime) -> list[datetime]:
        return settled_days(now, settings.settle_delay, settings.hourly_retention_days)

    def settled_partitions(
        self,
        conn: duckdb.DuckDBPyConnection,
        window: Sequence[datetime],
        now: datetime,
        settings: Settings,
    ) -> set[tuple[Instance, datetime]]:
        kept_days = settings.hourly_retention_days
        required = hours_required(window, now, kept_days)
        rows = conn.execute(
            f"""
            SELECT account_id, region, instance_id, date_trunc('day', hour), count(*)
            FROM {HOURLY_FETCHES_TABLE}
            WHERE settled AND hour >= $oldest AND hour < $end
            GROUP BY ALL
            """,
            {"oldest": oldest_fetchable_hour(now, kept_days), "end": window[-1] + DAY},
        ).fetchall()
        return complete_days(((Instance(*row[:3]), row[3], row[4]) for row in rows), required)

    def checked_hours(self, settings: Settings, now: datetime) -> list[datetime]:
        """The hours of the look-back window whose day has settled: the day in progress is
        fetched only once it has ended."""
        days = set(self.healing_window(settings, now))
        return [
            hour
            for hour in healing_hours(now, settings.backfill_days, settings.settle_delay)
            if floor_day(hour) in days
        ]

    def freshness_bound(self, settings: Settings) -> timedelta:
        """A day is fetched once it has ended: its newest hour is a day old before the next."""
        return DAY + timedelta(minutes=settings.freshness_minutes)

    def datapoints_per_subject_hour(
        self, settings: Settings, subjects: Sequence[InventoryEntry]
    ) -> int:
        return most_metrics(settings, subjects) * len(HOURLY_STATISTIC_COLUMNS)

    def rows_per_subject_hour(
        self, conn: duckdb.DuckDBPyConnection, start: datetime, end: datetime
    ) -> dict[tuple[Instance, datetime], int]:
        rows = conn.execute(
            f"""
            SELECT account_id, region, instance_id, hour, count(*)
            FROM {HOURLY_TABLE} WHERE hour >= $start AND hour < $end GROUP BY ALL
            """,
            {"start": start, "end": end},
        ).fetchall()
        return {(Instance(*row[:3]), row[3]): int(row[4]) for row in rows}

    def expected_rows_per_subject_hour(self, settings: Settings, subject: InventoryEntry) -> int:
        """A row per metric the instance publishes every hour: the statistics are its
        columns."""
        return len(expected_metrics(settings.metrics, subject.instance_kind))

    def newest_period(
        self, conn: duckdb.DuckDBPyConnection, settings: Settings
    ) -> tuple[datetime, datetime] | None:
        [(newest,)] = conn.execute(f"SELECT max(hour) FROM {HOURLY_TABLE}").fetchall()
        return None if newest is None else (newest, newest + HOUR)

    def first_run(self, settings: Settings, now: datetime) -> RunRequest | None:
        """None: the gap sensor backfills the tier once the first collection exists."""
        return None

    def checks(self, settings: Settings, clock: Clock) -> list[AssetChecksDefinition]:
        return [
            sanity_check(self.asset, settings, clock, HOURLY_DESTINATION, HOURLY_PERIOD_SECONDS)
        ]


CLOUDWATCH_RDS_HOURLY = CloudWatchRdsHourly()
