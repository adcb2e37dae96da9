"""Performance Insights' load as a source: the instances with PI on, an hour at a time once it
has settled, collected by the gap sensor at the pace METRICS_PI_REQUESTS_PER_SECOND sets (PI
publishes no quota). Not by the fresh tick: it would fetch the hour in progress again every
tick, and at PI's pace a large fleet's tick would outlast its interval."""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import datetime, timedelta

import duckdb
from dagster import AssetChecksDefinition, Definitions

from metrics_pipeline.catalog import PI_GROUPS, PI_TOTAL
from metrics_pipeline.collection.keys import RDS_PI_LOAD
from metrics_pipeline.hours import HOUR, Clock
from metrics_pipeline.insights.answers import GROUP_LIMIT, MAX_RESULTS
from metrics_pipeline.insights.assets import build_pi_assets, read_pi_inventory
from metrics_pipeline.insights.checks import balance_check
from metrics_pipeline.partitions import Partitions
from metrics_pipeline.settings import Settings
from metrics_pipeline.sources.jobs import healing_job_for
from metrics_pipeline.sources.source import Source
from metrics_pipeline.warehouse.fetch_log import FetchLog
from metrics_pipeline.warehouse.instances import Instance, InventoryEntry
from metrics_pipeline.warehouse.tables import PI_FETCHES, PI_LOAD

# The gap sensor's ticks whose worth of requests one tick may launch, as CloudWatch's budget.
TICKS_OF_REQUESTS = 2
SECONDS_PER_TICK = 60
# The calls of one instance-hour: its one request's pages (each group's total and keys).
REQUESTS_PER_INSTANCE_HOUR = math.ceil(len(PI_GROUPS) * (1 + GROUP_LIMIT) / MAX_RESULTS)


class PerformanceInsightsLoad(Source):
    name = "performance_insights"
    asset = RDS_PI_LOAD
    fetch_log = FetchLog(PI_FETCHES.name)
    healing_job = healing_job_for(RDS_PI_LOAD, "pi_healing_job")
    jobs = (healing_job,)

    def definitions(self, settings: Settings, partitions: Partitions) -> Definitions:
        return Definitions(assets=build_pi_assets(settings, partitions.hourly), jobs=self.jobs)

    def subjects(
        self, conn: duckdb.DuckDBPyConnection, regions: Sequence[str] | None
    ) -> list[InventoryEntry]:
        return read_pi_inventory(conn, regions)

    def datapoints_per_subject_hour(
        self, settings: Settings, subjects: Sequence[InventoryEntry]
    ) -> int:
        """In requests: what PI's pace is about."""
        return REQUESTS_PER_INSTANCE_HOUR

    def datapoints_per_tick(self, settings: Settings, subjects: Sequence[InventoryEntry]) -> int:
        units = {(e.instance.account_id, e.instance.region) for e in subjects}
        per_unit = settings.pi_requests_per_second * SECONDS_PER_TICK * TICKS_OF_REQUESTS
        return int(per_unit) * max(1, len(units))

    def tick_budget_text(self, settings: Settings) -> str:
        requests = int(settings.pi_requests_per_second * SECONDS_PER_TICK * TICKS_OF_REQUESTS)
        return f"{requests:,} Performance Insights requests per account and region"

    def rows_per_subject_hour(
        self, conn: duckdb.DuckDBPyConnection, start: datetime, end: datetime
    ) -> dict[tuple[Instance, datetime], int]:
        """The periods of each instance's total load: one per period of a complete hour."""
        rows = conn.execute(
            f"""
            SELECT account_id, region, instance_id, date_trunc('hour', ts), count(*)
            FROM {PI_LOAD.name}
            WHERE dimension_group = '{PI_TOTAL}' AND ts >= $start AND ts < $end GROUP BY ALL
            """,
            {"start": start, "end": end},
        ).fetchall()
        return {(Instance(*row[:3]), row[3]): int(row[4]) for row in rows}

    def expected_rows_per_subject_hour(self, settings: Settings, subject: InventoryEntry) -> int:
        return 3600 // settings.pi_period_seconds

    def newest_period(
        self, conn: duckdb.DuckDBPyConnection, settings: Settings
    ) -> tuple[datetime, datetime] | None:
        [(newest,)] = conn.execute(f"SELECT max(ts) FROM {PI_LOAD.name}").fetchall()
        if newest is None:
            return None
        return newest, newest + timedelta(seconds=settings.pi_period_seconds)

    def freshness_bound(self, settings: Settings) -> timedelta:
        """An hour comes in once settled: its newest period may be an hour and the settle
        delay older than the freshness the fresh tick keeps."""
        return HOUR + settings.settle_delay + super().freshness_bound(settings)

    def checks(self, settings: Settings, clock: Clock) -> list[AssetChecksDefinition]:
        return [balance_check(self.asset, settings, clock)]


PERFORMANCE_INSIGHTS_LOAD = PerformanceInsightsLoad()
