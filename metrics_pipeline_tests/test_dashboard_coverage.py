"""The coverage page's cells: collected, empty, missing or being healed, as the fetch log and
the unfinished healing runs say, for the hours each instance existed."""

import shutil
import uuid
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from dagster import DagsterInstance, DagsterRun, DagsterRunStatus

from metrics_pipeline.dagster_runs import range_tags
from metrics_pipeline.dashboard.coverage import Cell, coverage
from metrics_pipeline.dashboard.healing import raw_healing_ranges
from metrics_pipeline.hours import HOUR
from metrics_pipeline.warehouse.instances import Instance, InventoryEntry
from metrics_pipeline_tests.helpers import PROJECT_ROOT

T0 = datetime(2026, 12, 1, 0)
START = T0
HOURS = [T0 + n * HOUR for n in range(6)]
OLD = Instance("111111111111", "us-east-1", "orders-db")
NEW = Instance("111111111111", "us-east-1", "newcomer-db")


def test_each_hour_is_what_the_fetch_log_and_the_healing_runs_say() -> None:
    inventory = [
        InventoryEntry(OLD, T0 - timedelta(days=30), T0 - timedelta(days=30), T0 + 6 * HOUR),
        # Created during the fourth hour: the hours before it are not its.
        InventoryEntry(NEW, T0 + 3 * HOUR + timedelta(minutes=20), T0 + 4 * HOUR, T0 + 6 * HOUR),
    ]
    settled = {(OLD, HOURS[0]): 24, (OLD, HOURS[1]): 0, (NEW, HOURS[5]): 12}
    healing = [(HOURS[2], HOURS[3])]
    frame = coverage(HOURS, inventory, settled, healing)
    cells = {(row.instance_id, row.hour): row.cell for row in frame.itertuples()}
    assert cells == {
        ("orders-db", HOURS[0]): Cell.COLLECTED,
        ("orders-db", HOURS[1]): Cell.EMPTY,
        ("orders-db", HOURS[2]): Cell.HEALING,
        ("orders-db", HOURS[3]): Cell.HEALING,
        ("orders-db", HOURS[4]): Cell.MISSING,
        ("orders-db", HOURS[5]): Cell.MISSING,
        ("newcomer-db", HOURS[3]): Cell.HEALING,
        ("newcomer-db", HOURS[4]): Cell.MISSING,
        ("newcomer-db", HOURS[5]): Cell.COLLECTED,
    }


def test_the_hours_being_healed_are_those_of_the_unfinished_healing_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Read from the Dagster instance of DAGSTER_HOME: a healing run starting or started counts,
    a finished one and another job's do not."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(PROJECT_ROOT / "dagster.yaml", home / "dagster.yaml")
    first, last = START + timedelta(hours=3), START + timedelta(hours=7)
    with DagsterInstance.from_config(str(home)) as instance:
        for job, status, tags in (
            ("healing_job", DagsterRunStatus.STARTED, range_tags(first, last)),
            ("healing_job", DagsterRunStatus.STARTING, range_tags(last, last)),
            ("healing_job", DagsterRunStatus.SUCCESS, range_tags(START, START)),
            ("fresh_collection_job", DagsterRunStatus.STARTED, range_tags(START, START)),
        ):
            instance.add_run(
                DagsterRun(job_name=job, run_id=str(uuid.uuid4()), status=status, tags=tags)
            )
    monkeypatch.setenv("DAGSTER_HOME", str(home))

    assert sorted(raw_healing_ranges()) == [(first, last), (last, last)]
    monkeypatch.delenv("DAGSTER_HOME")
    assert raw_healing_ranges() == []  # an analyst's machine: nothing is being healed there
