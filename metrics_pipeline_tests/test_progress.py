"""What the terminal of start.sh and `metrics-pipeline health` say of the look-back window while
it fills: read from a real warehouse and a real Dagster instance, at a moment the test sets."""

import io
import os
import signal
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from dagster import instance_for_test

from metrics_pipeline.collection.store import replace_metrics, upsert_instances
from metrics_pipeline.healing.progress import (
    WAITING_LINE,
    healing_runs_in_flight,
    process_alive,
    read_progress,
    watch,
)
from metrics_pipeline.hours import healing_hours
from metrics_pipeline.settings import StorageSettings
from metrics_pipeline.warehouse.instances import Instance
from metrics_pipeline.warehouse.resources import WarehouseResource
from metrics_pipeline_tests.helpers import definitions_for_tests
from metrics_pipeline_tests.test_sensors import record

SETTLE = timedelta(minutes=15)
ACCOUNT = "123456789012"
FLEET = [Instance(ACCOUNT, "us-east-1", "orders-db"), Instance(ACCOUNT, "eu-west-1", "users-db")]


def fetched(warehouse: WarehouseResource, now: datetime, hours: list[datetime]) -> None:
    """The fleet in the inventory, `hours` fetched settled (CloudWatch had nothing: final)."""
    Path(warehouse.database).parent.mkdir(parents=True, exist_ok=True)
    with warehouse.connect() as conn:
        upsert_instances(conn, [record(i, now - timedelta(days=30)) for i in FLEET], now)
        replace_metrics(
            conn,
            spool_files=[],
            targets=FLEET,
            start=hours[0],
            end=hours[-1] + timedelta(hours=1),
            fetched_at=now,
            settle_delay=SETTLE,
            run_id="test",
        )


def test_the_history_is_followed_until_it_is_complete(tmp_path: Path) -> None:
    now = datetime.now(UTC).replace(tzinfo=None, microsecond=0)
    hours = healing_hours(now, 3, SETTLE)
    warehouse = WarehouseResource(database=str(tmp_path / "warehouse" / "metrics.duckdb"))
    storage = StorageSettings(duckdb_path=Path(warehouse.database))
    healing_job = definitions_for_tests().resolve_job_def("healing_job")
    with instance_for_test() as instance:
        # What the deployment does while the watcher sleeps: the first collection, a healing
        # run queued, then the whole look-back collected and the run finished.
        run = None

        def deployment_moves_on(_: float) -> None:
            nonlocal run
            if run is None:
                fetched(warehouse, now, hours[-41:])
                # With the job's tags, as the daemon gives a run the sensor requests.
                run = instance.create_run_for_job(job_def=healing_job, tags=healing_job.tags)
            else:
                fetched(warehouse, now, hours)
                instance.report_run_failed(run)

        out = io.StringIO()
        complete = watch(
            lambda: read_progress(storage, now, 3, SETTLE, healing_runs_in_flight(instance)),
            out,
            keep_going=lambda: True,
            sleep=deployment_moves_on,
            every_seconds=1,
        )
    assert complete
    assert out.getvalue().splitlines() == [
        WAITING_LINE,
        f"history: 41 of {len(hours)} hours for 2 instances; a healing run is in progress",
        f"history: {len(hours)} of {len(hours)} hours for 2 instances; complete",
        f"The look-back window is complete: {len(hours)} settled hours for 2 instances. The "
        "reports are computed again on it within minutes.",
    ]


@pytest.mark.e2e
def test_the_watcher_stops_with_the_process_it_follows(tmp_path: Path) -> None:
    """start.sh's watcher follows dagster dev: when that has exited, so does the watcher, even
    before anyone has reaped it."""
    followed = int(
        subprocess.run(
            ["bash", "-c", "sleep 600 >/dev/null 2>&1 & echo $!"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    )
    env = {**os.environ, "METRICS_DUCKDB_PATH": str(tmp_path / "never-written.duckdb")}
    env.pop("DAGSTER_HOME", None)
    watcher = subprocess.Popen(
        [sys.executable, "-m", "metrics_pipeline.healing.progress", "--while-pid", str(followed)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert watcher.stdout is not None
        assert watcher.stdout.readline() == WAITING_LINE + "\n"
        assert watcher.poll() is None
        os.kill(followed, signal.SIGKILL)
        assert watcher.wait(timeout=60) == 0
    finally:
        watcher.kill()
    assert watcher.stdout.read() == "" and watcher.stderr.read() == ""  # type: ignore[union-attr]
    assert not process_alive(followed)
