"""Helpers the tests share (fixtures are in conftest.py): the AWS resource as tests use it, a
deployment's environment, polling, and a process holding the warehouse's write lock."""

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from metrics_pipeline.collection.resources import AwsResource

REGIONS = ["us-east-1", "eu-west-1"]
PROJECT_ROOT = Path(__file__).resolve().parent.parent
DAGSTER = str(Path(sys.executable).with_name("dagster"))
DAGSTER_DAEMON = str(Path(sys.executable).with_name("dagster-daemon"))


def make_aws(**overrides: Any) -> AwsResource:
    """The AWS resource as the tests use it: both regions, no client-side rate cap to wait on."""
    return AwsResource(**{"regions": REGIONS, "max_requests_per_second": 1000, **overrides})


def pipeline_env(tmp_path: Path, endpoint: str, **settings: str) -> dict[str, str]:
    """The environment of a deployment in tmp_path: its own DAGSTER_HOME with the project's
    dagster.yaml, its own warehouse, AWS at `endpoint`."""
    home = tmp_path / "dagster_home"
    home.mkdir(exist_ok=True)
    shutil.copy(PROJECT_ROOT / "dagster.yaml", home / "dagster.yaml")
    return {
        **os.environ,
        "AWS_ENDPOINT_URL": endpoint,
        "DAGSTER_HOME": str(home),
        "METRICS_AWS_REGIONS": "us-east-1",
        "METRICS_DUCKDB_PATH": str(tmp_path / "warehouse" / "metrics.duckdb"),
        **settings,
    }


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    """Polls `condition` every 2 s; fails naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(2)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


_HOLD_WRITE_LOCK = """
import sys, time, duckdb
conn = duckdb.connect(sys.argv[1])
print("locked", flush=True)
time.sleep(float(sys.argv[2]))
"""


def hold_write_lock(database: str, seconds: float) -> subprocess.Popen[str]:
    """Another process that opens the warehouse for writing and keeps it `seconds` long;
    returns once it holds the file."""
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLD_WRITE_LOCK, database, str(seconds)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
    return holder
