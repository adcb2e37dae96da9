"""Data checks: the pure completeness figure, and each check run against a real warehouse."""

import dataclasses
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from dagster import AssetChecksDefinition, AssetCheckSeverity

from metrics_pipeline.catalog import InstanceKind
from metrics_pipeline.collection.source import CLOUDWATCH_RDS
from metrics_pipeline.collection.store import replace_metrics, upsert_instances
from metrics_pipeline.history.source import CLOUDWATCH_RDS_HOURLY
from metrics_pipeline.hours import healing_hours
from metrics_pipeline.quality.checks import build_checks, completeness
from metrics_pipeline.source_registry import SOURCES
from metrics_pipeline.warehouse.instances import Instance, InventoryEntry
from metrics_pipeline.warehouse.resources import WarehouseResource
from metrics_pipeline.warehouse.schema import ensure_schema
from metrics_pipeline.warehouse.sql import in_transaction
from metrics_pipeline_tests.helpers import TEST_SETTINGS

pytestmark = pytest.mark.storage_neutral

H = [datetime(2026, 11, 20, h) for h in range(4)]
LONG_AGO = datetime(2026, 10, 1)
NOW = datetime(2026, 11, 20, 5)
A = Instance("1", "us-east-1", "a")
B = Instance("1", "us-east-1", "b")
C = Instance("1", "us-east-1", "c")


def test_completeness_counts_running_instances_only() -> None:
    inventory = [
        InventoryEntry(A, LONG_AGO, LONG_AGO, NOW, "available"),
        InventoryEntry(B, LONG_AGO, LONG_AGO, NOW, "stopped"),
        InventoryEntry(C, datetime(2026, 11, 20, 2, 30), NOW, NOW, "available"),  # hours 2, 3
    ]
    rows = {(A, H[0]): 24, (A, H[1]): 12, (A, H[3]): 24, (C, H[2]): 10, (C, H[3]): 24}
    report = completeness(H, inventory, rows, {(A, H[2]), (B, H[0])}, lambda _: 24)
    # a: 4 hours, c: 2 hours -> 6 x 24 expected; present 24 + 12 + 0 + 24 + 10 + 24.
    assert report.expected_rows == 144
    assert report.share == pytest.approx(94 / 144)
    assert report.empty_hours == [(A, H[2])]  # b is stopped: its empty hour is expected


def test_each_instance_is_expected_to_hold_what_its_kind_publishes() -> None:
    """By AWS's metric pages, of the 23 default metrics at 12 periods an hour: a plain RDS
    instance publishes the 14 of the wide view; an Aurora PostgreSQL writer 13 of them (no
    FreeStorageSpace) and BufferCacheHitRatio, CommitLatency and Deadlocks, its DB load only
    while loaded; an Aurora MySQL Serverless v2 reader also DMLLatency, AuroraReplicaLag,
    ServerlessDatabaseCapacity and ACUUtilization."""
    plain = InventoryEntry(A, LONG_AGO, LONG_AGO, NOW, "available", InstanceKind("postgres"))
    writer = InventoryEntry(
        B,
        LONG_AGO,
        LONG_AGO,
        NOW,
        "available",
        InstanceKind("aurora-postgresql", "db.r6g.large", "writer", performance_insights=True),
    )
    reader = InventoryEntry(
        C,
        LONG_AGO,
        LONG_AGO,
        NOW,
        "available",
        InstanceKind("aurora-mysql", "db.serverless", "reader"),
    )
    raw, hourly = CLOUDWATCH_RDS, CLOUDWATCH_RDS_HOURLY
    fleet = (plain, writer, reader)
    assert [raw.expected_rows_per_subject_hour(TEST_SETTINGS, e) for e in fleet] == [
        12 * 14, 12 * 16, 12 * 20
    ]  # fmt: skip
    assert [hourly.expected_rows_per_subject_hour(TEST_SETTINGS, e) for e in fleet] == [14, 16, 20]
    # The reader's 20 metrics are the most a healing run asks of one of them.
    assert raw.datapoints_per_subject_hour(TEST_SETTINGS, [plain, writer, reader]) == 20 * 5 * 12
    rows = {(A, H[0]): 12 * 14, (B, H[0]): 12 * 16 + 24, (C, H[0]): 12 * 19}
    report = completeness(
        H[:1],
        [plain, writer, reader],
        rows,
        set(),
        lambda entry: raw.expected_rows_per_subject_hour(TEST_SETTINGS, entry),
    )
    assert report.expected_rows == 12 * (14 + 16 + 20)
    assert report.share == pytest.approx(12 * (14 + 16 + 19) / (12 * (14 + 16 + 20)))


def now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def prepare(warehouse: WarehouseResource, cpu: list[tuple[datetime, float]], empty: bool) -> None:
    """Inventory of one running instance; CPU rows; every settled hour of the window fetched."""
    Path(warehouse.database).parent.mkdir(parents=True, exist_ok=True)
    hours = healing_hours(now(), 3, timedelta(minutes=15))
    with warehouse.connect() as conn:
        ensure_schema(conn)
        record = {
            "account_id": "1", "region": "us-east-1", "instance_id": "a", "engine": "postgres",
            "engine_version": "16", "instance_class": "db.t3.micro", "allocated_storage_gb": 20,
            "multi_az": False, "status": "available", "create_time": LONG_AGO, "tags": {},
        }  # fmt: skip
        upsert_instances(conn, [record], now())
        in_transaction(
            conn,
            lambda: conn.executemany(
                "INSERT INTO rds_metrics VALUES (?, '1', 'us-east-1', 'a', 'CPUUtilization', "
                "'Percent', ?, ?, ?, ?, 5, ?)",
                [(ts, v, v, v, v * 5, now()) for ts, v in cpu],
            ),
        )
        if empty:  # fetched after settling, and nothing came back
            replace_metrics(
                conn, spool_files=[], targets=[A], start=hours[0], end=hours[1], fetched_at=now(),
                settle_delay=timedelta(minutes=15), run_id="r",
            )  # fmt: skip


@pytest.fixture
def cpu_only() -> dict[str, AssetChecksDefinition]:
    """The checks of a deployment that collects CPUUtilization alone."""
    settings = dataclasses.replace(TEST_SETTINGS, metrics=("CPUUtilization",))
    checks = build_checks(settings, SOURCES)
    return {key.name: check for check in checks for key in check.check_keys}


def recent_periods(count: int, value: float = 40.0) -> list[tuple[datetime, float]]:
    newest = now().replace(second=0, microsecond=0)
    newest -= timedelta(minutes=newest.minute % 5 + 5)
    return [(newest - timedelta(minutes=5 * n), value) for n in range(count)]


def test_completeness_check_fails_on_an_empty_settled_hour(
    warehouse: WarehouseResource, cpu_only: dict[str, AssetChecksDefinition]
) -> None:
    prepare(warehouse, recent_periods(3), empty=True)
    result = cpu_only["rds_metrics_completeness"](warehouse=warehouse)
    assert not result.passed
    assert result.severity == AssetCheckSeverity.ERROR
    assert result.metadata["empty_running_instance_hours"].value == 1


def test_completeness_check_warns_when_data_is_thin(
    warehouse: WarehouseResource, cpu_only: dict[str, AssetChecksDefinition]
) -> None:
    prepare(warehouse, recent_periods(3), empty=False)
    result = cpu_only["rds_metrics_completeness"](warehouse=warehouse)
    assert not result.passed
    assert result.severity == AssetCheckSeverity.WARN
    hours = len(healing_hours(now(), 3, timedelta(minutes=15)))
    assert result.metadata["expected_rows"].value == hours * 12
    assert result.metadata["completeness"].value < 0.1


def test_freshness(
    warehouse: WarehouseResource, cpu_only: dict[str, AssetChecksDefinition]
) -> None:
    prepare(warehouse, recent_periods(2), empty=False)
    assert cpu_only["rds_metrics_freshness"](warehouse=warehouse).passed
    stale = WarehouseResource(database=str(Path(warehouse.database).with_name("stale.duckdb")))
    prepare(stale, [(now() - timedelta(hours=2), 10.0)], empty=False)
    result = cpu_only["rds_metrics_freshness"](warehouse=stale)
    assert not result.passed
    assert result.metadata["age_minutes"].value > 100


def test_sanity_finds_impossible_values(
    warehouse: WarehouseResource, cpu_only: dict[str, AssetChecksDefinition]
) -> None:
    prepare(warehouse, recent_periods(3), empty=False)
    assert cpu_only["rds_metrics_sanity"](warehouse=warehouse).passed
    with warehouse.connect() as conn:
        conn.execute(
            "UPDATE rds_metrics SET average = 120, maximum = 120 "
            "WHERE ts = (SELECT max(ts) FROM rds_metrics)"
        )
    result = cpu_only["rds_metrics_sanity"](warehouse=warehouse)
    assert not result.passed
    assert result.metadata["percent_out_of_range"].value == 1
    assert result.metadata["duplicate_keys"].value == 0
