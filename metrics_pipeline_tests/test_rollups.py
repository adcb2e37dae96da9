"""Rollups on data with known answers: percentiles, completeness and daily figures by hand;
and the automation that re-materializes them when their source hours change."""

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from dagster import (
    AssetMaterialization,
    DagsterInstance,
    evaluate_automation_conditions,
    instance_for_test,
    materialize,
)

from metrics_pipeline.dagster_runs import range_tags
from metrics_pipeline.hours import floor_hour, utc_now
from metrics_pipeline.warehouse.resources import WarehouseResource
from metrics_pipeline.warehouse.sql import in_transaction
from metrics_pipeline_tests.helpers import (
    definitions_for_tests,
    make_collection,
    rds_metrics_daily,
    rds_metrics_hourly,
)
from metrics_pipeline_tests.moto_fleet import TWO_DAYS_AGO, create_instance, put_metrics

defs = definitions_for_tests()

DAY = TWO_DAYS_AGO.replace(hour=0)
# CPU averages of the first hour's periods; two periods are missing (10 of 12 present).
AVERAGES = [10.0, 12.0, 11.0, 30.0, 14.0, 90.0, 13.0, 15.0, 16.0, 12.5]


def seed_metrics(warehouse: WarehouseResource) -> None:
    with warehouse.connect() as conn:
        rows = [
            (DAY + timedelta(minutes=5 * n), avg, avg - 2, avg + 3, avg * 5, 5.0)
            for n, avg in enumerate(AVERAGES)
        ]
        # A second hour, complete, constant 50 %.
        rows += [
            (DAY + timedelta(hours=1, minutes=5 * n), 50.0, 49.0, 51.0, 250.0, 5.0)
            for n in range(12)
        ]
        in_transaction(
            conn,
            lambda: conn.executemany(
                "INSERT INTO rds_metrics VALUES (?, '1', 'us-east-1', 'db', 'CPUUtilization', "
                "'Percent', ?, ?, ?, ?, ?, ?)",
                [(*row, DAY) for row in rows],
            ),
        )


def key(moment: datetime, daily: bool = False) -> str:
    return moment.strftime("%Y-%m-%d") if daily else moment.strftime("%Y-%m-%d-%H:%M")


def test_hourly_rollup_has_hand_computed_figures(warehouse: WarehouseResource) -> None:
    seed_metrics(warehouse)
    resources = {"collection": make_collection(), "warehouse": warehouse}
    assert materialize([rds_metrics_hourly], partition_key=key(DAY), resources=resources).success
    with warehouse.reader() as conn:
        [row] = conn.execute(
            "SELECT average, minimum, maximum, p50, p95, p99, sample_count, periods, completeness "
            "FROM rds_metrics_hourly WHERE hour = ?",
            [DAY],
        ).fetchall()
    values = np.array(AVERAGES)
    expected = (
        values.mean(), values.min() - 2, values.max() + 3,
        np.percentile(values, 50), np.percentile(values, 95), np.percentile(values, 99),
        5.0 * 10, 10, 10 / 12,
    )  # fmt: skip
    assert row == pytest.approx(expected)


def test_daily_rollup_covers_the_day(warehouse: WarehouseResource) -> None:
    seed_metrics(warehouse)
    resources = {"collection": make_collection(), "warehouse": warehouse}
    assert materialize(
        [rds_metrics_daily], partition_key=key(DAY, daily=True), resources=resources
    ).success
    with warehouse.reader() as conn:
        [row] = conn.execute(
            "SELECT day, average, p95, periods, completeness FROM rds_metrics_daily"
        ).fetchall()
    values = np.array(AVERAGES + [50.0] * 12)
    assert row[0] == DAY
    assert row[1:] == pytest.approx((values.mean(), np.percentile(values, 95), 22, 22 / 288))


def test_rematerializing_replaces_rows(warehouse: WarehouseResource) -> None:
    seed_metrics(warehouse)
    resources = {"collection": make_collection(), "warehouse": warehouse}
    for _ in range(2):
        materialize([rds_metrics_hourly], partition_key=key(DAY), resources=resources)
    with warehouse.connect() as conn:
        assert conn.execute("SELECT count(*) FROM rds_metrics_hourly").fetchone() == (1,)
        conn.execute("DELETE FROM rds_metrics WHERE ts >= ?", [DAY + timedelta(minutes=30)])
    materialize([rds_metrics_hourly], partition_key=key(DAY), resources=resources)
    with warehouse.reader() as conn:
        assert conn.execute("SELECT periods FROM rds_metrics_hourly").fetchall() == [(6,)]


def test_views_answer_latest_and_wide(warehouse: WarehouseResource) -> None:
    seed_metrics(warehouse)
    with warehouse.reader() as conn:
        latest = conn.execute(
            "SELECT ts, average FROM rds_latest WHERE metric = 'CPUUtilization'"
        ).fetchall()
        wide = conn.execute(
            "SELECT cpu_utilization, swap_usage FROM rds_metrics_wide WHERE ts = ?", [DAY]
        ).fetchall()
    assert latest == [(DAY + timedelta(hours=1, minutes=55), 50.0)]
    assert wide == [(10.0, None)]


def requested(result: Any) -> set[tuple[str, str | None]]:
    """(asset, partition) pairs requested; None for an unpartitioned asset."""
    return {
        (r.key.to_user_string(), partition)
        for r in result.results
        for partition in (
            r.true_subset.expensively_compute_partition_keys()
            if r.true_subset.is_partitioned
            else ([None] if r.true_subset.size else [])
        )
    }


def test_new_source_hours_request_their_rollups_and_the_first_reports() -> None:
    def materialized(instance: DagsterInstance, asset: str, partition: str | None = None) -> None:
        instance.report_runless_asset_event(AssetMaterialization(asset, partition=partition))

    with instance_for_test() as instance:
        before = evaluate_automation_conditions(defs=defs, instance=instance)
        assert requested(before) == set()
        materialized(instance, "rds_metrics", key(DAY))
        after = evaluate_automation_conditions(defs=defs, instance=instance, cursor=before.cursor)
        # pipeline_health reads pipeline_runs, which rds_metrics writes: it runs at once,
        # not at its next cron tick. rightsizing_report also needs the inventory.
        assert requested(after) == {("rds_metrics_hourly", key(DAY)), ("pipeline_health", None)}

        materialized(instance, "rds_metrics_hourly", key(DAY))
        materialized(instance, "pipeline_health")
        materialized(instance, "rds_instances")
        then = evaluate_automation_conditions(defs=defs, instance=instance, cursor=after.cursor)
        # A day is computed as soon as one of its hours is, and the report once its inputs exist.
        assert requested(then) == {
            ("rds_metrics_daily", f"{DAY:%Y-%m-%d}"),
            ("rightsizing_report", None),
        }

        materialized(instance, "rds_metrics_daily", f"{DAY:%Y-%m-%d}")
        materialized(instance, "rightsizing_report")
        settled = evaluate_automation_conditions(defs=defs, instance=instance, cursor=then.cursor)
        assert requested(settled) == set()

        # Past the next hour's crons with nothing collected since: the health report runs (a
        # stalled collection is what it must show), the rightsizing report waits for data.
        later = (datetime.now(UTC) + timedelta(hours=1)).replace(minute=30, second=0)
        hour_on = evaluate_automation_conditions(
            defs=defs, instance=instance, cursor=settled.cursor, evaluation_time=later
        )
        reports = {asset for asset, partition in requested(hour_on) if partition is None}
        assert reports == {"pipeline_health"}


@pytest.mark.usefixtures("moto_aws")
def test_reports_computed_before_the_history_run_again_once_a_healing_run_brings_it(
    tmp_path: Path,
) -> None:
    this_hour = floor_hour(utc_now())
    old_hour, fresh_hour = this_hour - timedelta(days=2), this_hour - timedelta(hours=2)
    create_instance("us-east-1", "orders-db")
    put_metrics("us-east-1", ["orders-db"], ["CPUUtilization"], old_hour, this_hour)
    deployment = definitions_for_tests(
        METRICS_DUCKDB_PATH=str(tmp_path / "metrics.duckdb"),
        METRICS_CLOUDWATCH_METRICS="CPUUtilization",
    )
    # Ticks a minute apart between two crons: only what happened between them can request.
    ticks = iter(this_hour + timedelta(minutes=20 + n) for n in range(10))

    def reports_requested(instance: DagsterInstance, cursor: Any) -> tuple[set[str], Any]:
        result = evaluate_automation_conditions(
            defs=deployment, instance=instance, cursor=cursor, evaluation_time=next(ticks)
        )
        return {a for a, partition in requested(result) if partition is None}, result.cursor

    with instance_for_test() as instance:
        _, cursor = reports_requested(instance, None)
        # The first minutes of a deployment: the inventory, the newest hours, the first reports.
        assert (
            deployment.resolve_job_def("fresh_collection_job")
            .execute_in_process(instance=instance, tags=range_tags(fresh_hour, fresh_hour))
            .success
        )
        for report in ("pipeline_health", "rightsizing_report"):
            instance.report_runless_asset_event(AssetMaterialization(report))
        reports, cursor = reports_requested(instance, cursor)
        assert reports == set()  # a fresh collection waits for the crons

        healed = deployment.resolve_job_def("healing_job").execute_in_process(
            instance=instance, tags=range_tags(old_hour, old_hour)
        )
        assert healed.success and healed.dagster_run.tags["metrics_pipeline/collection"] == (
            "healing"
        )
        # The next fresh run is already queued: the reports do not wait for it.
        instance.create_run_for_job(
            job_def=deployment.resolve_job_def("fresh_collection_job"),
            tags=range_tags(fresh_hour, this_hour),
        )
        reports, cursor = reports_requested(instance, cursor)
        assert reports == {"pipeline_health", "rightsizing_report"}

        for report in ("pipeline_health", "rightsizing_report"):
            instance.report_runless_asset_event(AssetMaterialization(report))
        reports, cursor = reports_requested(instance, cursor)
        assert reports == set()  # once per healing run, not at every tick after it
