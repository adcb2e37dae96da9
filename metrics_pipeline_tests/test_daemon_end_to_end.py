"""The real dagster daemon with the project's dagster.yaml: the fresh schedule and the gap
sensor fire on their own (one-minute intervals via settings), runs go through the queue and
the pool, and the warehouse ends up with exactly what CloudWatch (a moto server) holds."""

import os
import signal
import subprocess
from datetime import timedelta
from pathlib import Path

import duckdb
import pytest
from dagster import DagsterInstance, DagsterRunStatus, RunsFilter

from metrics_pipeline_tests.conftest import DAGSTER_DAEMON, pipeline_env, wait_for
from metrics_pipeline_tests.fleet import THIS_HOUR, create_instance, put_metrics

pytestmark = pytest.mark.e2e


def stop_process_group(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM the daemon's whole group and check that nothing of it is left behind."""
    os.killpg(process.pid, signal.SIGTERM)
    process.wait(timeout=60)

    def group_gone() -> bool:
        try:
            os.killpg(process.pid, 0)
        except ProcessLookupError:
            return True
        return False

    try:
        wait_for(group_gone, 30, "the daemon's processes to exit")
    finally:
        if not group_gone():
            os.killpg(process.pid, signal.SIGKILL)


def test_schedule_and_sensor_fill_the_warehouse(moto_server: str, tmp_path: Path) -> None:
    create_instance("us-east-1", "orders-db")
    first = THIS_HOUR - timedelta(hours=3)
    expected = put_metrics(
        "us-east-1", ["orders-db"], ["CPUUtilization"], first, THIS_HOUR + timedelta(hours=1)
    )
    env = pipeline_env(
        tmp_path,
        moto_server,
        METRICS_CLOUDWATCH_METRICS="CPUUtilization",
        METRICS_FRESH_INTERVAL_MINUTES="1",
        METRICS_BACKFILL_INTERVAL_MINUTES="1",
        METRICS_BACKFILL_MAX_HOURS_PER_TICK="2",
    )
    daemon = subprocess.Popen(
        [DAGSTER_DAEMON, "run", "-m", "metrics_pipeline.definitions"],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=(tmp_path / "daemon.log").open("wb"),
        start_new_session=True,
    )
    instance = DagsterInstance.from_config(env["DAGSTER_HOME"])

    def succeeded(job: str) -> bool:
        return bool(
            instance.get_runs(RunsFilter(job_name=job, statuses=[DagsterRunStatus.SUCCESS]))
        )

    try:
        wait_for(lambda: succeeded("fresh_collection"), 150, "a fresh run from the schedule")
        wait_for(lambda: succeeded("healing_backfill"), 120, "a healing run from the sensor")
        # Before stopping: a run that stopping the daemon interrupts is not the pipeline's fault.
        failed = instance.get_runs(RunsFilter(statuses=[DagsterRunStatus.FAILURE]))
    finally:
        stop_process_group(daemon)

    assert failed == [], (tmp_path / "daemon.log").read_text()[-3000:]
    healing = instance.get_runs(RunsFilter(job_name="healing_backfill"))[-1]
    assert healing.tags["dagster/priority"] == "-10"
    assert healing.tags["dagster/run_key"].startswith("heal ")

    with duckdb.connect(env["METRICS_DUCKDB_PATH"], read_only=True) as conn:
        fetched = [
            h for (h,) in conn.execute("SELECT DISTINCT hour FROM rds_metric_fetches").fetchall()
        ]
        rows = conn.execute(
            "SELECT ts, average, minimum, maximum, sum, sample_count FROM rds_metrics"
        ).fetchall()
    # Fresh collection fetched the hour in progress; healing fetched older settled hours.
    assert THIS_HOUR in fetched
    assert any(hour < THIS_HOUR - timedelta(hours=1) for hour in fetched)
    columns = ("average", "minimum", "maximum", "sum", "sample_count")
    got = {
        ("orders-db", "CPUUtilization", r[0], c): v
        for r in rows
        for c, v in zip(columns, r[1:], strict=True)
    }
    want = {k: v for k, v in expected.items() if k[2].replace(minute=0) in fetched}
    assert got == pytest.approx(want)
