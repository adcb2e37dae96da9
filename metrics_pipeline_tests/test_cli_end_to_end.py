"""The command line a user runs, against a moto server on loopback (no code change, only
AWS_ENDPOINT_URL), with the warehouse a real DuckDB file."""

import subprocess
from datetime import timedelta
from pathlib import Path

import duckdb
import pytest

from metrics_pipeline.hours import partition_key
from metrics_pipeline_tests.helpers import DAGSTER, pipeline_env
from metrics_pipeline_tests.moto_fleet import TWO_DAYS_AGO, create_instance, put_metrics

HOUR = TWO_DAYS_AGO

pytestmark = pytest.mark.e2e


def run_dagster(
    args: list[str], env: dict[str, str], cwd: Path
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [DAGSTER, *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=300, check=False
    )


def test_materialize_from_the_command_line(moto_server: str, tmp_path: Path) -> None:
    create_instance("us-east-1", "orders-db")
    expected = put_metrics(
        "us-east-1",
        ["orders-db"],
        ["CPUUtilization", "DiskQueueDepth"],
        HOUR,
        HOUR + timedelta(hours=1),
    )
    env = pipeline_env(
        tmp_path, moto_server, METRICS_CLOUDWATCH_METRICS="CPUUtilization,DiskQueueDepth"
    )
    database = Path(env["METRICS_DUCKDB_PATH"])
    module = ["-m", "metrics_pipeline.definitions"]

    discovered = run_dagster(
        ["asset", "materialize", *module, "--select", "rds_instances"], env, tmp_path
    )
    assert discovered.returncode == 0, discovered.stderr[-3000:]
    collected = run_dagster(
        [
            "asset",
            "materialize",
            *module,
            "--select",
            "rds_metrics",
            "--partition",
            partition_key(HOUR),
        ],
        env,
        tmp_path,
    )
    assert collected.returncode == 0, collected.stderr[-3000:]

    with duckdb.connect(str(database), read_only=True) as conn:
        rows = conn.execute(
            "SELECT instance_id, metric, ts, average, minimum, maximum, sum, sample_count "
            "FROM rds_metrics"
        ).fetchall()
    columns = ("average", "minimum", "maximum", "sum", "sample_count")
    got = {(r[0], r[1], r[2], c): v for r in rows for c, v in zip(columns, r[3:], strict=True)}
    assert got == pytest.approx(expected)
    assert len(rows) == 24


def test_bad_setting_fails_the_command_with_its_name(tmp_path: Path) -> None:
    env = pipeline_env(tmp_path, "http://127.0.0.1:9", METRICS_PERIOD_SECONDS="90")
    result = run_dagster(
        ["asset", "materialize", "-m", "metrics_pipeline.definitions", "--select", "rds_instances"],
        env,
        tmp_path,
    )
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert "METRICS_PERIOD_SECONDS: '90' is not allowed" in output
    assert "botocore" not in output and "duckdb" not in output.lower().replace("metrics.duckdb", "")
