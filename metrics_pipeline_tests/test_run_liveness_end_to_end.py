"""A run whose worker is SIGKILLed mid-step, with the real daemon and the project's dagster.yaml:
the run is failed, the `duckdb_warehouse` slot its step held is freed, and its hours are
collected by a later run, each within a stated bound. Twice: with the code server that
started the worker alive (it sees its child die), and killed too (then only the project's
run_liveness_check sensor can tell)."""

import os
import signal
import subprocess
import time
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from dagster import DagsterEventType, DagsterInstance, DagsterRun, DagsterRunStatus, RunsFilter

from metrics_pipeline.dagster_runs import RANGE_END_TAG, RANGE_START_TAG
from metrics_pipeline.hours import floor_hour, utc_now
from metrics_pipeline.maintenance.liveness import WORKER_STARTED
from metrics_pipeline.warehouse.readers import open_reader
from metrics_pipeline.warehouse.resources import WAREHOUSE_POOL
from metrics_pipeline_tests.helpers import DAGSTER_DAEMON, hold_write_lock, pipeline_env, wait_for
from metrics_pipeline_tests.moto_fleet import create_instance, put_metrics

pytestmark = pytest.mark.e2e

# The bounds stated in docs/operations.md: the run failed and its slot freed within 2 minutes
# of the kill (the code server sees it within a second, the liveness sensor within 30 s; the
# monitoring daemon frees a finished run's slots 60 s after it ended, polling every 30 s); its
# hours collected again within 8 minutes after that (its retry, or the gap sensor's run, each
# a new process, queued behind the runs the schedule launched meanwhile, on a loaded 2-core
# machine: measured 70 s and 130 to 230 s alone, 93 s and 391 s under other suites' load).
FAILED_AND_FREED_WITHIN = 120
COLLECTED_AGAIN_WITHIN = 480


def worker_pids(instance: DagsterInstance, run_id: str) -> tuple[int | None, int | None]:
    """The run worker's and its step process's ids, as Dagster recorded them."""
    worker = step = None
    for record in instance.all_logs(run_id):
        event = record.dagster_event
        if event is None:
            continue
        if event.event_type == DagsterEventType.ENGINE_EVENT and (event.message or "").startswith(
            WORKER_STARTED
        ):
            worker = int(event.engine_event_data.metadata["pid"].value)
        if event.event_type == DagsterEventType.STEP_WORKER_STARTED:
            step = int(event.event_specific_data.metadata["pid"].value)
    return worker, step


def parent_of(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def slot_holders(instance: DagsterInstance) -> set[str]:
    return {
        s.run_id
        for s in instance.event_log_storage.get_concurrency_info(WAREHOUSE_POOL).claimed_slots
    }


@pytest.mark.parametrize("code_server_too", [False, True], ids=["worker", "worker_and_code_server"])
def test_a_killed_run_is_failed_its_slot_freed_and_its_hours_collected_again(
    moto_server: str, tmp_path: Path, code_server_too: bool
) -> None:
    create_instance("us-east-1", "orders-db")
    this_hour = floor_hour(utc_now())
    put_metrics(
        "us-east-1", ["orders-db"], ["CPUUtilization"],
        this_hour - timedelta(hours=3), this_hour + timedelta(hours=1),
    )  # fmt: skip
    env = pipeline_env(
        tmp_path,
        moto_server,
        METRICS_CLOUDWATCH_METRICS="CPUUtilization",
        METRICS_FRESH_INTERVAL_MINUTES="1",
        METRICS_BACKFILL_DAYS="1",
        METRICS_BACKFILL_INTERVAL_MINUTES="1",
        METRICS_LOCK_TIMEOUT_SECONDS="600",
    )
    database = Path(env["METRICS_DUCKDB_PATH"])
    database.parent.mkdir(parents=True)
    # The instance's storage is created once, before the processes that share it start (as
    # `dagster dev` does): SQLite storage created by two processes at once can collide.
    instance = DagsterInstance.from_config(env["DAGSTER_HOME"])
    # Another writer holds the warehouse: the first collection's step claims the pool slot and
    # then waits for the file, so it is surely mid-step when killed.
    holder = hold_write_lock(str(database), 600)
    daemon = subprocess.Popen(
        [DAGSTER_DAEMON, "run", "-m", "metrics_pipeline.definitions"],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=(tmp_path / "daemon.log").open("wb"),
        start_new_session=True,
    )
    victim: list[DagsterRun] = []

    def a_step_holds_the_slot() -> bool:
        for run in instance.get_runs(RunsFilter(statuses=[DagsterRunStatus.STARTED])):
            worker, step = worker_pids(instance, run.run_id)
            if worker and step and run.run_id in slot_holders(instance):
                victim.append(run)
                return True
        return False

    try:
        wait_for(a_step_holds_the_slot, 240, "a step holding the warehouse pool slot")
        [run] = victim
        worker, step = worker_pids(instance, run.run_id)
        assert worker and step
        killed = [step, worker] + ([parent_of(worker)] if code_server_too else [])
        for pid in killed:
            os.kill(pid, signal.SIGKILL)
        killed_at = time.monotonic()
        holder.kill()
        holder.wait()

        def failed_and_freed() -> bool:
            status = instance.get_run_by_id(run.run_id).status
            return status == DagsterRunStatus.FAILURE and run.run_id not in slot_holders(instance)

        wait_for(failed_and_freed, FAILED_AND_FREED_WITHIN, "the run failed and its slot freed")
        freed_after = time.monotonic() - killed_at

        first = datetime.strptime(run.tags[RANGE_START_TAG], "%Y-%m-%d-%H:%M")
        last = datetime.strptime(run.tags[RANGE_END_TAG], "%Y-%m-%d-%H:%M")
        wanted = {
            first + timedelta(hours=n)
            for n in range(int((last - first).total_seconds()) // 3600 + 1)
        }
        snapshot = database.with_name("metrics.snapshot.duckdb")

        killed_run_created = instance.get_run_record_by_id(run.run_id).create_timestamp

        def collected_again() -> bool:
            later = [
                r
                for r in instance.get_run_records(RunsFilter(statuses=[DagsterRunStatus.SUCCESS]))
                if r.create_timestamp > killed_run_created
            ]
            if not later or not snapshot.exists():
                return False
            with open_reader(snapshot) as conn:
                fetched = {
                    h for (h,) in conn.execute("SELECT hour FROM rds_metric_fetches").fetchall()
                }
                [(rows,)] = conn.execute(
                    "SELECT count(*) FROM rds_metrics WHERE ts >= ?", [first]
                ).fetchall()
            return wanted <= fetched and rows > 0

        wait_for(collected_again, COLLECTED_AGAIN_WITHIN, "the killed run's hours collected again")
        collected_after = time.monotonic() - killed_at
        runs = instance.get_runs()
    finally:
        os.killpg(daemon.pid, signal.SIGKILL)
        daemon.wait()
        holder.kill()
    print(
        f"failed and freed after {freed_after:.0f} s, collected again after {collected_after:.0f} s"
    )
    failure = instance.all_logs(run.run_id, of_type=DagsterEventType.RUN_FAILURE)
    assert len(failure) == 1
    if code_server_too:  # nobody but the liveness check could have said it
        assert f"worker process (pid {worker}) is gone" in failure[0].dagster_event.message
    # A crash, not the pipeline's own failure: run_retries is to launch it again from its failed
    # steps, whichever of that run and the gap sensor's collected the hours first. Dagster's
    # retry daemon misses one now and then (seen once in CI: it read the run just before its
    # status became FAILURE); the hours were collected again all the same (above).
    assert instance.get_run_by_id(run.run_id).tags["dagster/will_retry"] == "true"
    retries = [r for r in runs if r.parent_run_id == run.run_id]
    assert [r.tags["dagster/retry_number"] for r in retries] in ([], ["1"])
