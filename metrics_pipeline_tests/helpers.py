"""Helpers the tests share (fixtures are in conftest.py): the AWS and collection resources as
tests use them, a deployment's environment, polling, and a process holding the warehouse's
write lock."""

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
from dagster import Definitions

from metrics_pipeline.collection.assets import build_collection_assets
from metrics_pipeline.collection.clusters import build_cluster_assets
from metrics_pipeline.collection.resources import AwsResource, CollectionResource
from metrics_pipeline.collection.source import CLOUDWATCH_RDS
from metrics_pipeline.definitions import build_definitions
from metrics_pipeline.healing.sensors import build_gap_healing_sensor
from metrics_pipeline.history.assets import build_history_assets
from metrics_pipeline.hours import HOUR
from metrics_pipeline.insights.assets import build_pi_assets
from metrics_pipeline.local_aws.signals import latest_busy_hour
from metrics_pipeline.maintenance.jobs import build_retention_job
from metrics_pipeline.partitions import Partitions
from metrics_pipeline.quality.checks import build_checks
from metrics_pipeline.quality.sensors import build_run_failure_alert
from metrics_pipeline.rollups.assets import build_rollup_assets
from metrics_pipeline.settings import Settings
from metrics_pipeline.source_registry import SOURCES
from metrics_pipeline.warehouse.resources import WarehouseResource

REGIONS = ["us-east-1", "eu-west-1"]


def settings_for_tests(**env: str) -> Settings:
    """The production defaults, but step retries tens of milliseconds apart rather than
    minutes; `env` as METRICS_* variables would set them."""
    return Settings.from_env(
        {
            "METRICS_AWS_REGIONS": ",".join(REGIONS),
            "METRICS_STEP_RETRY_DELAY_SECONDS": "0.05",
            **env,
        }
    )


TEST_SETTINGS = settings_for_tests()
TEST_PARTITIONS = Partitions.starting(TEST_SETTINGS.partitions_start)
rds_instances, rds_metrics = build_collection_assets(TEST_SETTINGS, TEST_PARTITIONS.hourly)
[rds_metrics_hourly] = build_history_assets(TEST_SETTINGS, TEST_PARTITIONS.days)
[rds_metrics_daily] = build_rollup_assets(TEST_PARTITIONS)
[rds_cluster_metrics] = build_cluster_assets(TEST_SETTINGS, TEST_PARTITIONS.hourly)
[rds_pi_load] = build_pi_assets(TEST_SETTINGS, TEST_PARTITIONS.hourly)
(
    rds_metrics_completeness,
    rds_metrics_freshness,
    rds_metrics_sanity,
    rds_cluster_metrics_completeness,
    rds_cluster_metrics_freshness,
    rds_cluster_metrics_sanity,
    rds_pi_load_completeness,
    rds_pi_load_freshness,
    rds_pi_load_balance,
    rds_metrics_hourly_completeness,
    rds_metrics_hourly_freshness,
    rds_metrics_hourly_sanity,
) = build_checks(TEST_SETTINGS, SOURCES)
# The raw tier's healing (the hourly tier's has its own tests).
gap_healing_sensor = build_gap_healing_sensor(TEST_SETTINGS, (CLOUDWATCH_RDS,), TEST_PARTITIONS)
retention_job = build_retention_job(TEST_PARTITIONS.hourly)
run_failure_alert = build_run_failure_alert(TEST_SETTINGS)
STEP_ATTEMPTS = TEST_SETTINGS.step_retries + 1


def definitions_for_tests(**env: str) -> Definitions:
    return build_definitions(settings_for_tests(**env))


PROJECT_ROOT = Path(__file__).resolve().parent.parent
DAGSTER = str(Path(sys.executable).with_name("dagster"))
DAGSTER_DAEMON = str(Path(sys.executable).with_name("dagster-daemon"))
DAGSTER_WEBSERVER = str(Path(sys.executable).with_name("dagster-webserver"))


def busy_hour(now: datetime, ago: timedelta = 2 * HOUR) -> datetime:
    """The start of the latest simulated busy hour begun at least `ago` before `now`: every
    simulated database has load in each of its minutes and the hour before, on weekends too,
    where a recent hour may be a quiet night without any."""
    return latest_busy_hour(now - ago)


def free_port() -> int:
    """A loopback port nobody listens on (bound, then released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def make_aws(**overrides: Any) -> AwsResource:
    """The AWS resource as the tests use it: both regions, no client-side rate cap to wait on."""
    return AwsResource(**{"regions": REGIONS, "max_requests_per_second": 1000, **overrides})


def make_collection(**overrides: Any) -> CollectionResource:
    """The collection resource as the tests use it: the production defaults, with `overrides`."""
    return CollectionResource(**overrides)


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


# Runs a command, then prints its exit code and the peak resident memory of that child alone.
_MEASURED = (
    "import resource, subprocess, sys\n"
    "done = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL)\n"
    "print(done.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n"
)


def peak_rss_mib(
    command: list[str], env: dict[str, str], timeout: float = 600
) -> tuple[int, float, str]:
    """Runs `command` in a child process: its exit code, its peak resident memory (MiB) and
    what it wrote to stderr."""
    measured = subprocess.run(
        [sys.executable, "-c", _MEASURED, *command],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=True,
    )
    code, kilobytes = measured.stdout.split()
    return int(code), int(kilobytes) / 1024, measured.stderr


def generate_metrics(
    warehouse: WarehouseResource, rows: int, instances: int = 100, minutes: int = 5
) -> None:
    """`rows` rows of rds_metrics (CPUUtilization of `instances` instances every `minutes`,
    random values) written into the DuckDB file in one statement, then published."""
    with warehouse.connect():
        pass  # the schema
    with duckdb.connect(warehouse.database) as conn:
        conn.execute(
            """
            INSERT INTO rds_metrics
            SELECT TIMESTAMP '2026-09-01' + to_minutes((n // $instances) * $minutes),
                   '123456789012', 'us-east-1', 'db-' || (n % $instances), 'CPUUtilization',
                   'Percent', random() * 100, random(), random() * 100, random() * 500, 5,
                   TIMESTAMP '2026-11-01'
            FROM range($rows) r(n)
            """,
            {"instances": instances, "minutes": minutes, "rows": rows},
        )
    with warehouse.connect():
        pass  # published
