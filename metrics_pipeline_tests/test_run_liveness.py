"""The run liveness check on a real Dagster instance (the project's dagster.yaml): a STARTED run
whose recorded worker process is gone is failed and its pool slot freed; a live worker's run,
and a run on another launcher's instance, are left alone. The real daemon's version is
test_run_liveness_end_to_end.py."""

import os
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import yaml
from dagster import (
    DagsterEventType,
    DagsterInstance,
    DagsterRun,
    DagsterRunStatus,
    build_sensor_context,
)
from dagster._core.events import EngineEventData

from metrics_pipeline.maintenance.liveness import (
    build_run_liveness_check,
    worker_alive,
)
from metrics_pipeline.warehouse.resources import WAREHOUSE_POOL
from metrics_pipeline_tests.helpers import PROJECT_ROOT


def a_dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def started_run(instance: DagsterInstance, worker_pid: int) -> DagsterRun:
    """A run as a worker that started as `worker_pid` left it: STARTED, Dagster's own "Started
    process for run" event, the warehouse pool's slot claimed by its step."""
    run = instance.add_run(
        DagsterRun(
            job_name="healing_job", run_id=str(uuid.uuid4()), status=DagsterRunStatus.STARTED
        )
    )
    instance.report_engine_event(
        f"Started process for run (pid: {worker_pid}).", run, EngineEventData.in_process(worker_pid)
    )
    claim = instance.event_log_storage.claim_concurrency_slot(
        WAREHOUSE_POOL, run.run_id, "rds_metrics"
    )
    assert claim.is_claimed
    return run


def slot_holders(instance: DagsterInstance) -> list[str]:
    info = instance.event_log_storage.get_concurrency_info(WAREHOUSE_POOL)
    return [slot.run_id for slot in info.claimed_slots]


@pytest.fixture
def instance(tmp_path: Path) -> DagsterInstance:
    shutil.copy(PROJECT_ROOT / "dagster.yaml", tmp_path / "dagster.yaml")
    instance = DagsterInstance.from_config(str(tmp_path))
    instance.event_log_storage.set_concurrency_slots(WAREHOUSE_POOL, 1)
    return instance


@pytest.mark.e2e
def test_a_run_whose_worker_is_gone_is_failed_and_its_slot_freed(instance: DagsterInstance) -> None:
    dead = a_dead_pid()
    run = started_run(instance, dead)
    assert slot_holders(instance) == [run.run_id]

    result = build_run_liveness_check()(build_sensor_context(instance=instance))

    assert instance.get_run_by_id(run.run_id).status == DagsterRunStatus.FAILURE
    assert slot_holders(instance) == []
    [failure] = instance.all_logs(run.run_id, of_type=DagsterEventType.RUN_FAILURE)
    assert f"worker process (pid {dead}) is gone" in failure.dagster_event.message
    assert (
        result.skip_message
        == f"Failed 1 run(s) whose worker was gone: healing_job {run.run_id[:8]}."
    )
    # A crash, not the pipeline's own failure: run_retries (retry_on_asset_or_op_failure false)
    # launches it again.
    assert instance.get_run_by_id(run.run_id).tags["dagster/will_retry"] == "true"


def test_a_live_workers_run_is_left_alone(instance: DagsterInstance) -> None:
    run = started_run(instance, os.getpid())

    result = build_run_liveness_check()(build_sensor_context(instance=instance))

    assert instance.get_run_by_id(run.run_id).status == DagsterRunStatus.STARTED
    assert slot_holders(instance) == [run.run_id]
    assert result.skip_message == "Every started run's worker is alive."


@pytest.mark.e2e
def test_a_process_id_taken_by_a_later_process_is_not_the_worker() -> None:
    """The id of a worker that died may be given to a new process: its start time tells."""
    assert worker_alive(os.getpid(), time.time())
    assert not worker_alive(os.getpid(), time.time() - 3600 * 24 * 365 * 30)
    assert not worker_alive(a_dead_pid(), time.time())


@pytest.mark.e2e
def test_another_launchers_runs_are_left_to_dagsters_run_monitoring(tmp_path: Path) -> None:
    config = yaml.safe_load((PROJECT_ROOT / "dagster.yaml").read_text())
    config["run_launcher"] = {"module": "dagster.some_remote", "class": "RemoteRunLauncher"}
    (tmp_path / "dagster.yaml").write_text(yaml.safe_dump(config))
    shutil.copy(PROJECT_ROOT / "dagster.yaml", tmp_path / "local.yaml")
    # Stored without loading the launcher: the check reads only which one is configured.
    instance = DagsterInstance.from_config(str(tmp_path), config_filename="local.yaml")
    instance.event_log_storage.set_concurrency_slots(WAREHOUSE_POOL, 1)
    run = started_run(instance, a_dead_pid())
    remote = DagsterInstance.from_config(str(tmp_path))

    result = build_run_liveness_check()(build_sensor_context(instance=remote))

    assert result.skip_message.startswith("Runs are launched elsewhere")
    assert instance.get_run_by_id(run.run_id).status == DagsterRunStatus.STARTED
