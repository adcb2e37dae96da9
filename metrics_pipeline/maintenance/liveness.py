"""Runs whose worker died without anyone saying so: failed, their pool slots freed.

With the DefaultRunLauncher (`dagster dev`, `dagster-daemon` and both start.sh stacks) each
run's worker is a process on this host, started by the code server, and Dagster's run
monitoring cannot ask the launcher whether it still lives. The code server reports a worker
that died while it watched it; a worker that outlived its code server (restarted, killed)
stays STARTED for ever, and the `duckdb_warehouse` slot its step claimed with it. This check
finds such runs by the process id Dagster recorded when the worker started.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from dagster import (
    DagsterEventType,
    DagsterInstance,
    DagsterRunStatus,
    DefaultSensorStatus,
    EventLogEntry,
    RunsFilter,
    SensorDefinition,
    SensorEvaluationContext,
    SkipReason,
    TextMetadataValue,
    sensor,
)
from dagster._core.events import JobFailureData, RunFailureReason

# How often the check runs. A dead worker's run is failed within this (plus the daemon's tick),
# and its slots are freed at once.
LIVENESS_INTERVAL_SECONDS = 30
# Dagster's own engine event when a worker starts: "Started process for run (pid: N)."
WORKER_STARTED = "Started process for run"


@dataclass(frozen=True)
class DeadWorker:
    run_id: str
    job_name: str
    pid: int


def process_started_at(pid: int) -> float | None:
    """When process `pid` started (seconds since the epoch), or None if it does not exist or
    has exited (a zombie). Linux's /proc; elsewhere only whether the id is in use."""
    stat = Path(f"/proc/{pid}/stat")
    boot = Path("/proc/stat")
    if not stat.exists() or not boot.exists():
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            pass  # another user's process: alive
        return 0.0
    try:
        fields = stat.read_text().rsplit(")", 1)[1].split()
    except OSError:  # exited between the two reads
        return None
    if fields[0] in ("Z", "X"):  # exited, not yet reaped by its parent
        return None
    [boot_time] = [
        int(line.split()[1]) for line in boot.read_text().splitlines() if line.startswith("btime")
    ]
    return boot_time + int(fields[19]) / os.sysconf("SC_CLK_TCK")


def worker_alive(pid: int, started_at: float) -> bool:
    """Whether the worker that reported `started_at` still runs as `pid` (and the id was not
    taken by a later process since)."""
    process_start = process_started_at(pid)
    return process_start is not None and process_start <= started_at + 2


def dead_workers(instance: DagsterInstance) -> Iterator[DeadWorker]:
    """The STARTED runs whose worker's recorded process is gone."""
    for record in instance.get_run_records(RunsFilter(statuses=[DagsterRunStatus.STARTED])):
        run = record.dagster_run
        events = instance.all_logs(run.run_id, of_type=DagsterEventType.ENGINE_EVENT)
        started = [(event, pid) for event in events if (pid := worker_pid(event)) is not None]
        if not started:
            continue  # the worker has not said it runs yet: run monitoring's start timeout
        event, pid = started[-1]  # a resumed run's latest worker
        if not worker_alive(pid, event.timestamp):
            yield DeadWorker(run.run_id, run.job_name, pid)


def worker_pid(entry: EventLogEntry) -> int | None:
    """The process id in the code server's "worker started" event (which Dagster records as
    text metadata), or None for any other engine event."""
    event = entry.dagster_event
    if event is None or not (event.message or "").startswith(WORKER_STARTED):
        return None
    pid = event.engine_event_data.metadata.get("pid")
    return int(pid.value) if isinstance(pid, TextMetadataValue) else None


def workers_run_on_this_host(instance: DagsterInstance) -> bool:
    """Whether the instance launches runs with the DefaultRunLauncher (a process of the code
    server's host; read from its configuration, so another launcher is not built here)."""
    launcher = instance.get_ref().run_launcher_data
    return launcher is None or (launcher.module_name, launcher.class_name) == (
        "dagster",
        "DefaultRunLauncher",
    )


def fail_dead_runs(instance: DagsterInstance) -> list[DeadWorker]:
    """Fails each run whose worker is gone (run retries and the gap sensor then take its hours
    up again) and frees the pool slots its steps held."""
    failed = []
    for dead in dead_workers(instance):
        run = instance.get_run_by_id(dead.run_id)
        if run is None or run.status != DagsterRunStatus.STARTED:
            continue  # finished while we looked
        instance.report_run_failed(
            run,
            f"The run's worker process (pid {dead.pid}) is gone: it was killed or crashed "
            "without reporting. Marked failed by the run liveness check.",
            JobFailureData(error=None, failure_reason=RunFailureReason.UNEXPECTED_TERMINATION),
        )
        instance.event_log_storage.free_concurrency_slots_for_run(dead.run_id)
        failed.append(dead)
    return failed


def build_run_liveness_check() -> SensorDefinition:
    @sensor(
        name="run_liveness_check",
        minimum_interval_seconds=LIVENESS_INTERVAL_SECONDS,
        default_status=DefaultSensorStatus.RUNNING,
        description=(
            "Fails runs whose worker process on this host is gone (killed, crashed) and frees "
            "the warehouse pool slots they held, so queued runs and healing go on. Only with "
            "the DefaultRunLauncher: other launchers' workers are checked by Dagster's run "
            "monitoring."
        ),
    )
    def run_liveness_check(context: SensorEvaluationContext) -> SkipReason:
        if not workers_run_on_this_host(context.instance):
            return SkipReason("Runs are launched elsewhere: Dagster's run monitoring checks them.")
        failed = fail_dead_runs(context.instance)
        for dead in failed:
            context.log.warning(
                f"run {dead.run_id} of {dead.job_name}: worker pid {dead.pid} is gone; "
                "marked failed and its pool slots freed"
            )
        if not failed:
            return SkipReason("Every started run's worker is alive.")
        listed = ", ".join(f"{dead.job_name} {dead.run_id[:8]}" for dead in failed)
        return SkipReason(f"Failed {len(failed)} run(s) whose worker was gone: {listed}.")

    return run_liveness_check
