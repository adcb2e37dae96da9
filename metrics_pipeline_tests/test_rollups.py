"""The daily tier on data with known answers: rds_metrics_daily computed from hand-written hours
of rds_metrics_hourly (a sample-weighted average, the day's extremes, the highest hourly average
and percentiles, the hours present), one day at a time and replaced when recomputed; the views
over the raw tier; and the automation that recomputes a day when its hours change and runs the
reports once their inputs exist."""

from dataclasses import dataclass
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
from metrics_pipeline.hours import HOUR, floor_hour, utc_now
from metrics_pipeline.warehouse.resources import WarehouseResource
from metrics_pipeline.warehouse.sql import in_transaction
from metrics_pipeline_tests.helpers import definitions_for_tests, rds_metrics_daily
from metrics_pipeline_tests.moto_fleet import TWO_DAYS_AGO, create_instance, put_metrics

pytestmark = pytest.mark.storage_neutral

defs = definitions_for_tests()

DAY = TWO_DAYS_AGO.replace(hour=0)
# CPU averages of the first hour's raw periods; two periods are missing (10 of 12 present).
AVERAGES = [10.0, 12.0, 11.0, 30.0, 14.0, 90.0, 13.0, 15.0, 16.0, 12.5]


def seed_metrics(warehouse: WarehouseResource) -> None:
    """Raw periods (rds_metrics) of one instance: the first hour's AVERAGES, then an hour at
    a constant 50 %."""
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


@dataclass(frozen=True)
class Hour:
    """One row of the hourly tier, as CloudWatch would give it (its sum is average × count)."""

    instance: str
    metric: str
    unit: str
    start: datetime
    sample_count: float
    average: float
    minimum: float
    maximum: float
    p50: float | None = None
    p90: float | None = None
    p95: float | None = None
    p99: float | None = None

    @property
    def sum(self) -> float:
        return self.average * self.sample_count


def cpu(offset: int, count: float, avg: float, low: float, high: float, *pcts: float) -> Hour:
    """A CPU hour of the instance `db`, `offset` hours after DAY's start."""
    start = DAY + timedelta(hours=offset)
    return Hour("db", "CPUUtilization", "Percent", start, count, avg, low, high, *pcts)


# One instance's CPU on DAY: five hours (03:00 missing), each with its own sample count, and
# each figure's extreme in a different hour: the highest average in 00:00 (3 samples only), the
# highest p95 in 01:00, the lowest sample in 02:00, the highest sample and p99 in 04:00.
#     offset, samples, average, minimum, maximum,  p50,  p90,  p95,  p99
CPU_HOURS = [
    cpu(0,  3.0, 72.0, 70.0, 75.0, 72.0, 74.0, 74.5, 74.9),
    cpu(1, 12.0, 65.0, 40.0, 80.0, 64.0, 76.0, 78.0, 79.5),
    cpu(2, 30.0, 35.0,  2.0, 60.0, 33.0, 50.0, 55.0, 59.0),
    cpu(4, 45.0, 50.0, 10.0, 97.0, 45.0, 60.0, 62.0, 88.0),
    cpu(5, 60.0, 15.0, 12.0, 18.0, 15.0, 17.0, 17.5, 17.9),
]  # fmt: skip
# The same instance's memory, two hours, without percentiles (CloudWatch returned none).
MEMORY_HOURS = [
    Hour("db", "FreeableMemory", "Bytes", DAY + timedelta(hours=0), 60.0, 1.5e9, 1.4e9, 1.6e9),
    Hour("db", "FreeableMemory", "Bytes", DAY + timedelta(hours=2), 20.0, 1.2e9, 1.0e9, 1.3e9),
]
# A second instance, one hour.
OTHER_HOURS = [
    Hour("db2", "CPUUtilization", "Percent", DAY + timedelta(hours=7),
         60.0, 8.0, 1.0, 20.0, 7.0, 12.0, 15.0, 19.0),
]  # fmt: skip
# The same instance and metric the hour before DAY and the hour after it: extremes in every
# figure, which would show if DAY counted them.
NEIGHBOUR_HOURS = [
    cpu(-1, 1000.0, 99.0, 0.5, 100.0, 99.0, 99.5, 99.8, 100.0),
    cpu(24, 1000.0, 99.0, 0.5, 100.0, 99.0, 99.5, 99.8, 100.0),
]  # fmt: skip
DAY_HOURS = CPU_HOURS + MEMORY_HOURS + OTHER_HOURS


def seed_hours(warehouse: WarehouseResource, hours: list[Hour]) -> None:
    with warehouse.connect() as conn:
        in_transaction(
            conn,
            lambda: conn.executemany(
                "INSERT INTO rds_metrics_hourly (hour, account_id, region, instance_id, metric, "
                "unit, average, minimum, maximum, sum, sample_count, p50, p90, p95, p99, "
                "collected_at) VALUES (?, '1', 'us-east-1', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    (
                        h.start,
                        h.instance,
                        h.metric,
                        h.unit,
                        h.average,
                        h.minimum,
                        h.maximum,
                        h.sum,
                        h.sample_count,
                        h.p50,
                        h.p90,
                        h.p95,
                        h.p99,
                        DAY + timedelta(days=1),
                    )
                    for h in hours
                ],
            ),
        )


def highest(values: list[float | None]) -> float | None:
    """The largest value present; None when no hour has one (as SQL's max)."""
    present = [v for v in values if v is not None]
    return float(np.max(present)) if present else None


def expected_day(hours: list[Hour]) -> tuple[Any, ...]:
    """The daily row of one instance and metric, by numpy from its hours: (unit, average,
    minimum, maximum, sum, sample_count, peak_hour_average, max_hourly_p95, max_hourly_p99,
    hours)."""
    counts = np.array([h.sample_count for h in hours])
    averages = np.array([h.average for h in hours])
    return (
        hours[0].unit,
        float(np.sum(averages * counts) / np.sum(counts)),
        float(np.min([h.minimum for h in hours])),
        float(np.max([h.maximum for h in hours])),
        float(np.sum([h.sum for h in hours])),
        float(np.sum(counts)),
        float(np.max(averages)),
        highest([h.p95 for h in hours]),
        highest([h.p99 for h in hours]),
        len(hours),
    )


def daily_rows(warehouse: WarehouseResource) -> dict[tuple[datetime, str, str], tuple[Any, ...]]:
    """rds_metrics_daily by (day, instance, metric): the figures expected_day gives. Fails if
    a day, instance and metric has more than one row, so its length is the table's row count."""
    with warehouse.reader() as conn:
        rows = conn.execute(
            "SELECT day, account_id, region, instance_id, metric, unit, average, minimum, "
            "maximum, sum, sample_count, peak_hour_average, max_hourly_p95, max_hourly_p99, "
            "hours FROM rds_metrics_daily"
        ).fetchall()
    assert {(account, region) for _, account, region, *_ in rows} == {("1", "us-east-1")}
    by_key = {(day, instance, metric): tuple(rest) for day, _, _, instance, metric, *rest in rows}
    assert len(by_key) == len(rows)  # one row per day, instance and metric
    return by_key


def computed_at(warehouse: WarehouseResource, day: datetime) -> list[datetime]:
    with warehouse.reader() as conn:
        return [
            at
            for (at,) in conn.execute(
                "SELECT computed_at FROM rds_metrics_daily WHERE day = ? ORDER BY computed_at",
                [day],
            ).fetchall()
        ]


def materialize_day(warehouse: WarehouseResource, day: datetime) -> None:
    assert materialize(
        [rds_metrics_daily], partition_key=key(day, daily=True), resources={"warehouse": warehouse}
    ).success


def key(moment: datetime, daily: bool = False) -> str:
    return moment.strftime("%Y-%m-%d") if daily else moment.strftime("%Y-%m-%d-%H:%M")


def test_daily_tier_has_hand_computed_figures(warehouse: WarehouseResource) -> None:
    seed_hours(warehouse, DAY_HOURS + NEIGHBOUR_HOURS)
    before = utc_now()
    materialize_day(warehouse, DAY)
    after = utc_now()
    rows = daily_rows(warehouse)
    assert rows.keys() == {
        (DAY, "db", "CPUUtilization"),
        (DAY, "db", "FreeableMemory"),
        (DAY, "db2", "CPUUtilization"),
    }
    # The hand-made figures of the CPU day, so that expected_day is checked too.
    assert expected_day(CPU_HOURS) == pytest.approx(
        ("Percent", 5196 / 150, 2.0, 97.0, 5196.0, 150.0, 72.0, 78.0, 88.0, 5)
    )
    assert rows[DAY, "db", "CPUUtilization"] == pytest.approx(expected_day(CPU_HOURS))
    assert rows[DAY, "db", "FreeableMemory"] == pytest.approx(expected_day(MEMORY_HOURS))
    assert rows[DAY, "db", "FreeableMemory"][7:9] == (None, None)
    assert rows[DAY, "db2", "CPUUtilization"] == pytest.approx(expected_day(OTHER_HOURS))
    with warehouse.reader() as conn:
        [(earliest, latest)] = conn.execute(
            "SELECT min(computed_at), max(computed_at) FROM rds_metrics_daily"
        ).fetchall()
    assert before <= earliest <= latest <= after


def test_rematerializing_a_day_replaces_its_rows(warehouse: WarehouseResource) -> None:
    seed_hours(warehouse, DAY_HOURS + NEIGHBOUR_HOURS)
    previous_day = DAY - timedelta(days=1)
    materialize_day(warehouse, previous_day)
    computed_before = computed_at(warehouse, previous_day)
    for _ in range(2):
        materialize_day(warehouse, DAY)
    rows = daily_rows(warehouse)
    # The day before has its one hour (23:00); DAY its three rows, once.
    assert len(rows) == 4
    assert rows[previous_day, "db", "CPUUtilization"] == pytest.approx(
        expected_day(NEIGHBOUR_HOURS[:1])
    )

    # Two of the CPU hours and the whole of the second instance leave the hourly tier.
    with warehouse.connect() as conn:
        in_transaction(
            conn,
            lambda: conn.execute(
                "DELETE FROM rds_metrics_hourly WHERE hour >= ? AND hour < ? "
                "AND (instance_id = 'db2' OR (metric = 'CPUUtilization' AND hour >= ?))",
                [DAY, DAY + timedelta(days=1), DAY + timedelta(hours=4)],
            ),
        )
    materialize_day(warehouse, DAY)
    remaining = [h for h in CPU_HOURS if h.start < DAY + timedelta(hours=4)]
    assert len(remaining) == 3
    rows = daily_rows(warehouse)
    assert rows.keys() == {
        (previous_day, "db", "CPUUtilization"),
        (DAY, "db", "CPUUtilization"),
        (DAY, "db", "FreeableMemory"),
    }
    assert rows[DAY, "db", "CPUUtilization"] == pytest.approx(expected_day(remaining))
    assert rows[DAY, "db", "CPUUtilization"][-1] == 3
    assert rows[DAY, "db", "FreeableMemory"] == pytest.approx(expected_day(MEMORY_HOURS))
    # Another day's row is neither deleted nor recomputed.
    assert rows[previous_day, "db", "CPUUtilization"] == pytest.approx(
        expected_day(NEIGHBOUR_HOURS[:1])
    )
    assert computed_at(warehouse, previous_day) == computed_before


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


def test_new_hours_request_their_days_and_the_first_reports() -> None:
    def materialized(instance: DagsterInstance, asset: str, partition: str | None = None) -> None:
        instance.report_runless_asset_event(AssetMaterialization(asset, partition=partition))

    with instance_for_test() as instance:
        before = evaluate_automation_conditions(defs=defs, instance=instance)
        assert requested(before) == set()
        materialized(instance, "rds_metrics", key(DAY))
        after = evaluate_automation_conditions(defs=defs, instance=instance, cursor=before.cursor)
        # pipeline_health reads pipeline_runs, which rds_metrics writes: it runs at once,
        # not at its next cron tick. rightsizing_report also needs the inventory. The raw tier
        # feeds no tier of history: the hourly tier is fetched from CloudWatch on its own.
        assert requested(after) == {("pipeline_health", None)}

        materialized(instance, "rds_metrics_hourly", key(DAY, daily=True))
        materialized(instance, "pipeline_health")
        materialized(instance, "rds_instances")
        then = evaluate_automation_conditions(defs=defs, instance=instance, cursor=after.cursor)
        # A day of the hourly tier requests the same day of the daily tier (and no other), and
        # the report runs once its inputs exist.
        assert requested(then) == {
            ("rds_metrics_daily", key(DAY, daily=True)),
            ("rightsizing_report", None),
        }

        materialized(instance, "rds_metrics_daily", key(DAY, daily=True))
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

        # A report run that started before the next healing run wrote, and ended in the same
        # tick as that write, did not see it: the report is computed again.
        healed_again = deployment.resolve_job_def("healing_job").execute_in_process(
            instance=instance, tags=range_tags(old_hour + HOUR, old_hour + HOUR)
        )
        assert healed_again.success
        for report in ("pipeline_health", "rightsizing_report"):
            instance.report_runless_asset_event(AssetMaterialization(report))
        reports, cursor = reports_requested(instance, cursor)
        assert reports == {"pipeline_health", "rightsizing_report"}
