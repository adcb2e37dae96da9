"""The health summary: cost per day from pipeline_runs, failure rate and time since the last
fresh success from the run history."""

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from dagster import DagsterEvent, DagsterEventType, DagsterRunStatus, instance_for_test, materialize

from metrics_pipeline.collection.store import record_run, record_run_parts
from metrics_pipeline.quality.health import pipeline_health
from metrics_pipeline.warehouse.resources import WarehouseResource
from metrics_pipeline.warehouse.schema import ensure_schema
from metrics_pipeline_tests.helpers import definitions_for_tests, make_collection

pytestmark = pytest.mark.storage_neutral

defs = definitions_for_tests()


def test_summary_reports_cost_failures_and_freshness(warehouse: WarehouseResource) -> None:
    Path(warehouse.database).parent.mkdir(parents=True, exist_ok=True)
    now = datetime.now(UTC).replace(tzinfo=None)
    with warehouse.connect() as conn:
        ensure_schema(conn)
        conn.execute(
            "INSERT INTO rds_metrics (ts, account_id, region, instance_id, metric, unit, average, "
            "collected_at) VALUES ($ts, '111111111111', 'us-east-1', 'orders-db', "
            "'CPUUtilization', 'Percent', 1.0, $now)",
            {"ts": now - timedelta(minutes=20), "now": now},
        )
        # The hourly tier's day of yesterday, fetched at once: its cost is shown on its own row.
        record_run(
            conn,
            {
                "run_id": "hourly-0000000000", "asset": "rds_metrics_hourly",
                "window_start": now - timedelta(days=2), "window_end": now - timedelta(days=1),
                "finished_at": now - timedelta(minutes=3), "cloudwatch_requests": 4,
                "estimated_cost_usd": 0.126, "fetch_seconds": 1.0, "write_seconds": 0.5,
                "rows_written": 24,
            },
        )  # fmt: skip
        for n, (requests, seconds) in enumerate([(30, 2.0), (10, 9.5)]):
            record_run(
                conn,
                {
                    "run_id": f"run-{n}-0000000000", "asset": "rds_metrics",
                    "window_start": now - timedelta(hours=2), "window_end": now,
                    "finished_at": now - timedelta(minutes=n), "cloudwatch_requests": requests,
                    "estimated_cost_usd": requests * 0.0007, "fetch_seconds": seconds,
                    "write_seconds": 0.5, "rows_written": 100 * (n + 1),
                },
            )  # fmt: skip
            record_run_parts(
                conn,
                f"run-{n}-0000000000",
                "rds_metrics",
                [
                    {"account_id": "111111111111", "region": "us-east-1", "status": "collected",
                     "instances": 2, "instances_written": 2, "rows_written": 100 * (n + 1),
                     "datapoints": 500, "cloudwatch_requests": requests, "throttled_calls": 0,
                     "error": None},
                    {"account_id": "222222222222", "region": "us-east-1", "status": "failed",
                     "instances": 1, "instances_written": 0, "rows_written": 0, "datapoints": 0,
                     "cloudwatch_requests": 0, "throttled_calls": 0,
                     "error": f"account 222222222222: cannot assume …: AccessDenied ({n})"},
                ],
            )  # fmt: skip
    with instance_for_test() as instance:
        fresh = defs.resolve_job_def("fresh_collection_job")
        healing = defs.resolve_job_def("healing_job")
        for job, status in [
            (fresh, DagsterRunStatus.SUCCESS),
            (fresh, DagsterRunStatus.SUCCESS),
            (healing, DagsterRunStatus.FAILURE),
            (healing, DagsterRunStatus.SUCCESS),
        ]:
            run = instance.create_run_for_job(job_def=job)
            if status == DagsterRunStatus.FAILURE:
                instance.report_run_failed(run)
            else:
                instance.handle_run_event(run.run_id, run_success_event(run.job_name))
        result = materialize(
            [pipeline_health],
            resources={
                "collection": make_collection(dashboard_url="http://127.0.0.1:9999"),
                "warehouse": warehouse,
            },
            instance=instance,
        )
    metadata = result.asset_materializations_for_node("pipeline_health")[0].metadata
    assert metadata["dashboard"].value == "http://127.0.0.1:9999/coverage"
    assert metadata["newest_data_minutes_behind"].value == pytest.approx(20, abs=1)
    assert metadata["collection_runs"].value == 4
    assert metadata["failed_runs"].value == 1
    assert metadata["failure_rate"].value == 0.25
    assert 0 <= metadata["minutes_since_last_fresh_success"].value < 5
    per_day = metadata["calls_and_cost_per_day"].value
    assert f"| {now.date()} | rds_metrics | 40 | {round(40 * 0.0007, 4)} |" in per_day
    assert f"| {now.date()} | rds_metrics_hourly | 4 | 0.126 |" in per_day
    slowest = metadata["slowest_runs"].value.splitlines()
    assert slowest[2].startswith("| run-1-00 |") and "| 10.0 | 200 |" in slowest[2]
    by_account = metadata["by_account_and_region"].value.splitlines()
    assert by_account[2:] == [
        "| 111111111111 | us-east-1 | 2 | 0 | 40 | 300 | None |",
        # The latest error is the most recent run's (run-0 finished last).
        "| 222222222222 | us-east-1 | 2 | 2 | 0 | 0 | account 222222222222: cannot assume …: "
        "AccessDenied (0) |",
    ]


def run_success_event(job_name: str) -> DagsterEvent:
    """What a run worker reports when a run ends well (no public helper writes it)."""
    return DagsterEvent(
        event_type_value=DagsterEventType.RUN_SUCCESS.value, job_name=job_name, message="ok"
    )
