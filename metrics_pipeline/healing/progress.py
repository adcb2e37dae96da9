"""How far a deployment's look-back window has come: the line `metrics-pipeline health` starts
with, and what `python -m metrics_pipeline.healing.progress` prints while the history fills
(start.sh runs it, so the terminal says when the first history is complete).

It reads what the gap sensor reads: the inventory and the settled fetches of the published
snapshot (or the lake), and the healing runs queued or running in the Dagster instance of
DAGSTER_HOME when there is one.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable, Sequence
from contextlib import suppress
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, TextIO, TypeVar

from metrics_pipeline.healing.gaps import HistoryProgress, history_progress
from metrics_pipeline.hours import HOUR, healing_hours, utc_now
from metrics_pipeline.settings import ConfigError, StorageSettings, look_back_from_env
from metrics_pipeline.warehouse.fetch_log import RDS_FETCH_LOG
from metrics_pipeline.warehouse.instances import read_inventory
from metrics_pipeline.warehouse.lake import LakeError
from metrics_pipeline.warehouse.readers import SnapshotMissingError, open_reader

if TYPE_CHECKING:
    from dagster import DagsterInstance

WAITING_LINE = "history: waiting for the first collection"

T = TypeVar("T")


def healing_runs_in_flight(instance: DagsterInstance, job_name: str | None = None) -> int:
    """Healing runs queued or running: of one source's healing job, or of every source's, by
    the tags each carries (sources/jobs.py; the daemon gives a run its job's tags)."""
    from dagster import RunsFilter

    from metrics_pipeline.dagster_runs import HEALING_RUN_TAGS, UNFINISHED

    runs = (
        RunsFilter(job_name=job_name, statuses=UNFINISHED)
        if job_name
        else RunsFilter(tags=HEALING_RUN_TAGS, statuses=UNFINISHED)
    )
    return instance.get_runs_count(runs)


def read_deployment_runs(read: Callable[[DagsterInstance], T]) -> T | None:
    """What `read` finds in the run records of the Dagster instance of DAGSTER_HOME; None
    without one (an analyst's machine) or when they cannot be read (the scale-out stack's
    reader role may not read Dagster's database)."""
    if not os.environ.get("DAGSTER_HOME"):
        return None
    # Dagster is imported here only: the analysts' commands and the dashboard start without it.
    from dagster import DagsterError, DagsterInstance

    try:
        with DagsterInstance.get() as instance:
            return read(instance)
    except (DagsterError, OSError):
        return None


def deployment_healing_runs() -> int | None:
    """The raw look-back's healing runs queued or running in the deployment (not the hourly
    tier's, whose days this progress does not count); None where they cannot be read: the
    progress is told without them."""
    from metrics_pipeline.dagster_runs import RAW_HEALING_JOB

    return read_deployment_runs(lambda instance: healing_runs_in_flight(instance, RAW_HEALING_JOB))


def read_progress(
    storage: StorageSettings,
    now: datetime,
    backfill_days: int,
    settle_delay: timedelta,
    healing_runs: int | None,
) -> HistoryProgress | None:
    """The look-back's progress at `now`; None before the first collection was published."""
    hours = healing_hours(now, backfill_days, settle_delay)
    try:
        with open_reader(storage.read_source) as conn:
            inventory = read_inventory(conn)
            settled = RDS_FETCH_LOG.settled(conn, hours[0], hours[-1] + HOUR) if hours else set()
    except (SnapshotMissingError, LakeError):
        return None
    if not inventory:
        return None
    return history_progress(hours, inventory, settled, healing_runs or 0)


def watch(
    progress: Callable[[], HistoryProgress | None],
    out: TextIO,
    keep_going: Callable[[], bool],
    sleep: Callable[[float], None] = time.sleep,
    every_seconds: float = 10.0,
) -> bool:
    """Prints the progress line whenever it changes, and a last line once the look-back is
    complete; True then, False if `keep_going` turned false first."""
    shown = None
    while keep_going():
        current = progress()
        line = current.line() if current else WAITING_LINE
        if line != shown:
            print(line, file=out, flush=True)
            shown = line
        if current is not None and current.complete:
            print(
                f"The look-back window is complete: {current.hours} settled hours for "
                f"{current.instances} instance{'s' if current.instances != 1 else ''}. The "
                "reports are computed again on it within minutes.",
                file=out,
                flush=True,
            )
            return True
        waited = 0.0
        while waited < every_seconds and keep_going():
            sleep(1.0)
            waited += 1.0
    return False


def process_alive(pid: int) -> bool:
    """Whether `pid` runs; an exited process nobody has reaped yet (a zombie) does not."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    with suppress(OSError):  # Linux: the state follows the command's closing parenthesis
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    return True


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m metrics_pipeline.healing.progress",
        description="Prints how much of the look-back window is collected until it is complete.",
    )
    parser.add_argument(
        "--while-pid", type=int, help="stop when this process (dagster dev) has exited"
    )
    parser.add_argument("--every", type=float, default=10.0, help="seconds between looks")
    args = parser.parse_args(argv)
    try:
        storage = StorageSettings.from_env()
        backfill_days, settle_delay = look_back_from_env()
    except ConfigError as error:
        print(f"progress: {error}", file=sys.stderr)
        return 2

    def progress() -> HistoryProgress | None:
        return read_progress(
            storage, utc_now(), backfill_days, settle_delay, deployment_healing_runs()
        )

    def keep_going() -> bool:
        return args.while_pid is None or process_alive(args.while_pid)

    try:
        watch(progress, sys.stdout, keep_going, every_seconds=args.every)
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
