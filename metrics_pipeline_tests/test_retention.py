"""Retention: old rows dropped from every time-series table, recent ones untouched, and
hours outside the retention (or CloudWatch's) refused."""

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from dagster import DagsterEventType, Failure, instance_for_test, materialize

from metrics_pipeline.collection.assets import check_collectable
from metrics_pipeline.settings import ConfigError, Settings
from metrics_pipeline.warehouse.resources import WarehouseResource
from metrics_pipeline_tests.helpers import (
    TEST_PARTITIONS,
    make_aws,
    make_collection,
    rds_metrics,
    retention_job,
)

pytestmark = pytest.mark.storage_neutral


def floor_hour(moment: datetime) -> datetime:
    return moment.replace(minute=0, second=0, microsecond=0)


def fill(warehouse: WarehouseResource, first_hour: datetime, hours: int) -> None:
    """One instance, one metric, 12 periods an hour, and a fetch log row per hour."""
    with warehouse.connect() as conn:
        conn.execute(
            """
            INSERT INTO rds_metrics
            SELECT $first + INTERVAL 5 MINUTE * n, '1', 'us-east-1', 'db', 'CPUUtilization',
                   'Percent', n, n, n, n, 1, $first
            FROM range($periods) t(n)
            """,
            {"first": first_hour, "periods": hours * 12},
        )
        conn.execute(
            """
            INSERT INTO rds_metric_fetches
            SELECT $first + INTERVAL 1 HOUR * n, '1', 'us-east-1', 'db', $first, 12, true, 'r'
            FROM range($hours) t(n)
            """,
            {"first": first_hour, "hours": hours},
        )


def output_metadata(result: Any) -> dict[str, Any]:
    [output] = [
        event
        for event in result.events_for_node("drop_expired_rows")
        if event.event_type == DagsterEventType.STEP_OUTPUT
    ]
    return {k: v.value for k, v in output.event_specific_data.metadata.items()}


def test_drops_old_hours_keeps_recent_ones_and_reports(warehouse: WarehouseResource) -> None:
    before = datetime.now(UTC).replace(tzinfo=None)
    first = floor_hour(before) - timedelta(days=10)
    fill(warehouse, first, 10 * 24 + 1)
    seven_days = warehouse.model_copy(update={"retention_days": 7})

    with instance_for_test() as instance:
        result = retention_job.execute_in_process(
            resources={"warehouse": seven_days}, instance=instance
        )
        observations = instance.get_records_for_run(
            result.run_id, of_type=DagsterEventType.ASSET_OBSERVATION
        ).records
    after = datetime.now(UTC).replace(tzinfo=None)
    assert result.success

    metadata = output_metadata(result)
    cutoff = datetime.fromisoformat(metadata["cutoff"])
    assert cutoff in {floor_hour(before - timedelta(days=7)), floor_hour(after - timedelta(days=7))}
    dropped_hours = int((cutoff - first) / timedelta(hours=1))
    assert dropped_hours in (72, 73)
    assert metadata["hours_dropped"] == dropped_hours
    assert metadata["rows_dropped_rds_metrics"] == dropped_hours * 12
    assert metadata["rows_dropped_rds_metric_fetches"] == dropped_hours
    assert metadata["rows_dropped"] == dropped_hours * 13
    assert metadata["bytes_before"] > 0 and metadata["bytes_after"] > 0

    with warehouse.reader() as conn:
        [(kept, oldest)] = conn.execute("SELECT count(*), min(ts) FROM rds_metrics").fetchall()
        [(kept_log, oldest_log)] = conn.execute(
            "SELECT count(*), min(hour) FROM rds_metric_fetches"
        ).fetchall()
    assert (kept, oldest) == ((241 - dropped_hours) * 12, cutoff)
    assert (kept_log, oldest_log) == (241 - dropped_hours, cutoff)

    # Dropped hours that are partitions (the first one is the configured start) are observed.
    first_partition = TEST_PARTITIONS.hourly.get_first_partition_key()
    observed = sorted(r.event_log_entry.dagster_event.partition for r in observations)
    expected = sorted(
        key
        for h in range(dropped_hours)
        if (key := (first + timedelta(hours=h)).strftime("%Y-%m-%d-%H:%M")) >= first_partition
    )
    assert observed == expected


def test_second_run_drops_nothing(warehouse: WarehouseResource) -> None:
    fill(
        warehouse,
        floor_hour(datetime.now(UTC).replace(tzinfo=None)) - timedelta(days=1),
        5,
    )
    with instance_for_test() as instance:
        result = retention_job.execute_in_process(
            resources={"warehouse": warehouse}, instance=instance
        )
    assert output_metadata(result)["rows_dropped"] == 0
    with warehouse.reader() as conn:
        assert conn.execute("SELECT count(*) FROM rds_metrics").fetchone() == (60,)


def collect_hour(hour: datetime, warehouse: WarehouseResource, period: int = 300) -> str:
    result = materialize(
        [rds_metrics],
        partition_key=hour.strftime("%Y-%m-%d-%H:%M"),
        resources={
            "aws": make_aws(),
            "collection": make_collection(period_seconds=period),
            "warehouse": warehouse,
        },
        raise_on_error=False,
    )
    assert not result.success
    return result.get_step_failure_events()[0].step_failure_data.error.message


def test_hours_outside_retention_are_refused(tmp_path: Path) -> None:
    # The partitions reach 7 days back; a warehouse keeping 2 days refuses the older ones.
    two_days = WarehouseResource(database=str(tmp_path / "w.duckdb"), retention_days=2)
    old = floor_hour(datetime.now(UTC).replace(tzinfo=None)) - timedelta(days=3)
    message = collect_hour(old, two_days)
    assert f"the window starts at {old:%Y-%m-%d %H:%M} UTC" in message
    assert "(METRICS_RETENTION_DAYS=2)" in message


def test_hours_outside_cloudwatch_retention_are_refused() -> None:
    now = datetime(2026, 11, 26, 9, 30)
    with pytest.raises(Failure) as refused:
        check_collectable(datetime(2026, 11, 6, 9), now, retention_days=30, period=60)
    assert "before 2026-11-11 09:00 UTC" in refused.value.description
    assert "(CloudWatch keeps 60 s data for 15 days)" in refused.value.description
    check_collectable(datetime(2026, 11, 11, 9), now, retention_days=30, period=60)
    check_collectable(datetime(2026, 11, 6, 9), now, retention_days=30, period=300)


def test_backfill_window_must_stay_inside_retention() -> None:
    with pytest.raises(
        ConfigError,
        match=r"METRICS_BACKFILL_DAYS \(7\) must be less than METRICS_RETENTION_DAYS \(7\)",
    ):
        Settings.from_env({"AWS_DEFAULT_REGION": "us-east-1", "METRICS_BACKFILL_DAYS": "7"})
