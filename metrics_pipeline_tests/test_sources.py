"""A second source registered beside CloudWatch's: the definitions, the gap sensor and the
checks take it in with no edit of theirs (docs/architecture.md, "Sources").

The probe source below keeps one row per instance and hour in its own table, with a fetch log
of the shared shape; it is what a newcomer writes in a new domain folder.
"""

from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import pytest
from dagster import (
    AssetChecksDefinition,
    AssetExecutionContext,
    AssetKey,
    AssetMaterialization,
    AssetsDefinition,
    BackfillPolicy,
    DagsterInstance,
    Definitions,
    SkipReason,
    asset,
    build_sensor_context,
    instance_for_test,
    materialize,
)

from metrics_pipeline.collection.source import CLOUDWATCH_RDS
from metrics_pipeline.collection.store import replace_metrics, upsert_instances
from metrics_pipeline.dagster_runs import HEALING_RUN_TAGS, RANGE_END_TAG, RANGE_START_TAG
from metrics_pipeline.definitions import build_definitions
from metrics_pipeline.healing.sensors import build_gap_healing_sensor
from metrics_pipeline.hours import HOUR, healing_hours, partition_key
from metrics_pipeline.partitions import Partitions
from metrics_pipeline.quality.checks import build_checks
from metrics_pipeline.settings import Settings
from metrics_pipeline.sources.jobs import healing_job_for
from metrics_pipeline.sources.source import Source
from metrics_pipeline.warehouse.fetch_log import FetchLog
from metrics_pipeline.warehouse.instances import Instance, InventoryEntry, read_inventory
from metrics_pipeline.warehouse.resources import WarehouseResource
from metrics_pipeline.warehouse.schema import table_exists
from metrics_pipeline_tests.helpers import TEST_PARTITIONS, TEST_SETTINGS

pytestmark = pytest.mark.storage_neutral

ACCOUNT = "123456789012"
A = Instance(ACCOUNT, "us-east-1", "orders-db")
B = Instance(ACCOUNT, "us-east-1", "users-db")
PROBE_TABLE = "probe_series"
PROBE_FETCHES = "probe_fetches"


class Probe(Source):
    name = "probe"
    asset = AssetKey(PROBE_TABLE)
    fetch_log = FetchLog(PROBE_FETCHES)
    healing_job = healing_job_for(asset, "probe_healing_job")
    jobs = (healing_job,)

    def definitions(self, settings: Settings, partitions: Partitions) -> Definitions:
        return Definitions(assets=[self.series(settings, partitions)], jobs=self.jobs)

    def series(self, settings: Settings, partitions: Partitions) -> AssetsDefinition:
        @asset(
            key=self.asset,
            partitions_def=partitions.hourly,
            backfill_policy=BackfillPolicy.single_run(),
        )
        def probe_series(context: AssetExecutionContext, warehouse: WarehouseResource) -> None:
            window = context.partition_time_window
            start, end = (naive(window.start), naive(window.end))
            with warehouse.connect() as conn:
                conn.execute(
                    f"CREATE TABLE IF NOT EXISTS {PROBE_TABLE} "
                    "(hour TIMESTAMP, account_id VARCHAR, region VARCHAR, instance_id VARCHAR)"
                )
                conn.execute(
                    f"CREATE TABLE IF NOT EXISTS {PROBE_FETCHES} (hour TIMESTAMP, "
                    "account_id VARCHAR, region VARCHAR, instance_id VARCHAR, settled BOOLEAN, "
                    "datapoints INTEGER)"
                )
                for entry in read_inventory(conn, settings.regions):
                    i = entry.instance
                    hour = start
                    while hour < end:
                        row = [hour, i.account_id, i.region, i.instance_id]
                        conn.execute(f"INSERT INTO {PROBE_TABLE} VALUES (?, ?, ?, ?)", row)
                        conn.execute(
                            f"INSERT INTO {PROBE_FETCHES} VALUES (?, ?, ?, ?, true, 1)", row
                        )
                        hour += HOUR

        return probe_series

    def subjects(
        self, conn: duckdb.DuckDBPyConnection, regions: Sequence[str] | None
    ) -> list[InventoryEntry]:
        return read_inventory(conn, regions)

    def datapoints_per_subject_hour(
        self, settings: Settings, subjects: Sequence[InventoryEntry]
    ) -> int:
        return 1

    def datapoints_per_tick(self, settings: Settings, subjects: Sequence[InventoryEntry]) -> int:
        return 1_000_000

    def tick_budget_text(self, settings: Settings) -> str:
        return "a million probes"

    def rows_per_subject_hour(
        self, conn: duckdb.DuckDBPyConnection, start: datetime, end: datetime
    ) -> dict[tuple[Instance, datetime], int]:
        if not table_exists(conn, PROBE_TABLE):
            return {}
        rows = conn.execute(
            f"SELECT account_id, region, instance_id, hour, count(*) FROM {PROBE_TABLE} "
            "WHERE hour >= ? AND hour < ? GROUP BY ALL",
            [start, end],
        ).fetchall()
        return {(Instance(*row[:3]), row[3]): row[4] for row in rows}

    def expected_rows_per_subject_hour(self, settings: Settings, subject: InventoryEntry) -> int:
        return 1

    def newest_period(
        self, conn: duckdb.DuckDBPyConnection, settings: Settings
    ) -> tuple[datetime, datetime] | None:
        if not table_exists(conn, PROBE_TABLE):
            return None
        [(newest,)] = conn.execute(f"SELECT max(hour) FROM {PROBE_TABLE}").fetchall()
        return None if newest is None else (newest, newest + HOUR)


PROBE = Probe()
SOURCES = (CLOUDWATCH_RDS, PROBE)


def naive(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(tzinfo=None)


@pytest.fixture
def instance() -> Iterator[DagsterInstance]:
    with instance_for_test() as test_instance:
        yield test_instance


@pytest.fixture
def now() -> datetime:
    """The moment the sensor and the checks are evaluated at (within the test partitions)."""
    return naive(datetime.now(UTC)).replace(microsecond=0)


def collected_by_cloudwatch(
    warehouse: WarehouseResource, instance: DagsterInstance, hours: list[datetime], now: datetime
) -> None:
    """Every hour of the window fetched settled from CloudWatch (nothing came back: final) and
    materialized: all the first source has to do is done."""
    Path(warehouse.database).parent.mkdir(parents=True, exist_ok=True)
    created = now - timedelta(days=30)
    with warehouse.connect() as conn:
        upsert_instances(
            conn,
            [
                {
                    "account_id": i.account_id,
                    "region": i.region,
                    "instance_id": i.instance_id,
                    "status": "available",
                    "create_time": created,
                    "tags": {},
                }
                for i in (A, B)
            ],
            now,
        )
        replace_metrics(
            conn,
            spool_files=[],
            targets=[A, B],
            start=hours[0],
            end=hours[-1] + HOUR,
            fetched_at=now,
            settle_delay=TEST_SETTINGS.settle_delay,
            run_id="setup",
        )
    for hour in hours:
        instance.report_runless_asset_event(
            AssetMaterialization(asset_key=CLOUDWATCH_RDS.asset, partition=partition_key(hour))
        )


def test_a_registered_source_brings_its_assets_jobs_and_checks() -> None:
    defs = build_definitions(TEST_SETTINGS, SOURCES)
    assert defs.resolve_job_def("probe_healing_job").tags["dagster/priority"] == "-10"
    assert defs.resolve_assets_def(PROBE.asset).partitions_def is not None
    check_names = {key.name for checks in defs.asset_checks or [] for key in checks.check_keys}
    assert {"probe_series_completeness", "probe_series_freshness"} <= check_names
    assert {"rds_metrics_completeness", "rds_metrics_freshness", "rds_metrics_sanity"} <= (
        check_names
    )
    sensor = defs.resolve_sensor_def("gap_healing_sensor")
    assert {job.name for job in sensor.jobs} == {
        "fresh_collection_job",
        "healing_job",
        "probe_healing_job",
    }


def test_the_gap_sensor_heals_a_second_source_and_then_finds_it_whole(
    instance: DagsterInstance, warehouse: WarehouseResource, now: datetime
) -> None:
    hours = healing_hours(now, TEST_SETTINGS.backfill_days, TEST_SETTINGS.settle_delay)
    collected_by_cloudwatch(warehouse, instance, hours, now)
    sensor = build_gap_healing_sensor(TEST_SETTINGS, SOURCES, TEST_PARTITIONS, clock=lambda: now)

    first = sensor(build_sensor_context(instance=instance, resources={"warehouse": warehouse}))
    [request] = first.run_requests
    assert request.job_name == "probe_healing_job"
    assert (request.tags[RANGE_START_TAG], request.tags[RANGE_END_TAG]) == (
        partition_key(hours[0]),
        partition_key(hours[-1]),
    )
    assert request.run_config == {}  # never materialized: every instance
    assert request.run_key and request.run_key.startswith("heal probe ")

    healed = materialize(
        [PROBE.series(TEST_SETTINGS, TEST_PARTITIONS)],
        instance=instance,
        resources={"warehouse": warehouse},
        tags={**request.tags, **HEALING_RUN_TAGS},
    )
    assert healed.success
    with warehouse.reader() as conn:
        assert PROBE.fetch_log.settled(conn, hours[0], hours[-1] + HOUR) == {
            (i, hour) for i in (A, B) for hour in hours
        }

    after = sensor(build_sensor_context(instance=instance, resources={"warehouse": warehouse}))
    assert isinstance(after, SkipReason)
    message = after.skip_message or ""
    assert message.count(f"No gaps in the {len(hours)} settled hours") == 2


def checks_of(sources: Sequence[Source], now: datetime) -> dict[str, AssetChecksDefinition]:
    checks = build_checks(TEST_SETTINGS, sources, clock=lambda: now)
    return {key.name: check for check in checks for key in check.check_keys}


def test_the_completeness_and_freshness_checks_read_the_second_source(
    instance: DagsterInstance, warehouse: WarehouseResource, now: datetime
) -> None:
    hours = healing_hours(now, TEST_SETTINGS.backfill_days, TEST_SETTINGS.settle_delay)
    collected_by_cloudwatch(warehouse, instance, hours, now)
    checks = checks_of(SOURCES, now)
    assert not checks["probe_series_freshness"](warehouse=warehouse).passed  # nothing yet

    half = hours[len(hours) // 2 :]
    materialize(
        [PROBE.series(TEST_SETTINGS, TEST_PARTITIONS)],
        instance=instance,
        resources={"warehouse": warehouse},
        tags={RANGE_START_TAG: partition_key(half[0]), RANGE_END_TAG: partition_key(half[-1])},
    )
    completeness = checks["probe_series_completeness"](warehouse=warehouse)
    assert completeness.metadata["expected_rows"].value == 2 * len(hours)
    assert completeness.metadata["completeness"].value == round(len(half) / len(hours), 4)
    freshness = checks["probe_series_freshness"](warehouse=warehouse)
    assert freshness.metadata["newest_period"].value == half[-1].isoformat()
    assert freshness.passed == (now - (half[-1] + HOUR) <= timedelta(minutes=30))


def test_two_sources_lacking_the_same_hours_each_get_their_run(
    instance: DagsterInstance, warehouse: WarehouseResource, now: datetime
) -> None:
    hours = healing_hours(now, TEST_SETTINGS.backfill_days, TEST_SETTINGS.settle_delay)
    collected_by_cloudwatch(warehouse, instance, hours, now)
    with warehouse.connect() as conn:  # CloudWatch's fetches forgotten: both sources lack all
        conn.execute("DELETE FROM rds_metric_fetches")
    sensor = build_gap_healing_sensor(TEST_SETTINGS, SOURCES, TEST_PARTITIONS, clock=lambda: now)
    result = sensor(build_sensor_context(instance=instance, resources={"warehouse": warehouse}))
    by_job = {request.job_name: request for request in result.run_requests}
    assert sorted(by_job) == ["healing_job", "probe_healing_job"]
    assert by_job["healing_job"].run_key != by_job["probe_healing_job"].run_key
    for request in by_job.values():  # both quotas take the whole window in one run
        assert (request.tags[RANGE_START_TAG], request.tags[RANGE_END_TAG]) == (
            partition_key(hours[0]),
            partition_key(hours[-1]),
        )
