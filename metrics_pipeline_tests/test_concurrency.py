"""Two runs writing the warehouse at once, while a third process holds its lock: both wait
with backoff, both succeed, and the rows are exact."""

import subprocess
from datetime import timedelta
from pathlib import Path

import duckdb
import pytest

from metrics_pipeline.hours import partition_key
from metrics_pipeline_tests.helpers import DAGSTER, hold_write_lock, pipeline_env
from metrics_pipeline_tests.moto_fleet import TWO_DAYS_AGO, create_instance, put_metrics

pytestmark = pytest.mark.e2e


def test_concurrent_runs_both_succeed_with_exact_rows(moto_server: str, tmp_path: Path) -> None:
    first, last = TWO_DAYS_AGO, TWO_DAYS_AGO + timedelta(hours=2)
    for name in ("orders-db", "users-db"):
        create_instance("us-east-1", name)
    expected = put_metrics(
        "us-east-1", ["orders-db", "users-db"], ["CPUUtilization"], first, last + timedelta(hours=1)
    )
    env = pipeline_env(tmp_path, moto_server, METRICS_CLOUDWATCH_METRICS="CPUUtilization")
    database = env["METRICS_DUCKDB_PATH"]
    module = ["asset", "materialize", "-m", "metrics_pipeline.definitions"]
    discovered = subprocess.run(
        [DAGSTER, *module, "--select", "rds_instances"], env=env, capture_output=True, check=False
    )
    assert discovered.returncode == 0

    holder = hold_write_lock(database, 10)
    range_run = subprocess.Popen(
        [DAGSTER, *module, "--select", "rds_metrics",
         "--partition-range", f"{partition_key(first)}...{partition_key(last)}"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    hour_run = subprocess.Popen(
        [DAGSTER, *module, "--select", "rds_metrics",
         "--partition", partition_key(first + timedelta(hours=1))],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    holder.wait(timeout=60)
    # Both reached the warehouse while it was locked (a run starts in ~4 s), and waited.
    assert range_run.poll() is None and hour_run.poll() is None
    range_output, _ = range_run.communicate(timeout=300)
    hour_output, _ = hour_run.communicate(timeout=300)

    assert range_run.returncode == 0, range_output[-3000:]
    assert hour_run.returncode == 0, hour_output[-3000:]
    with duckdb.connect(database, read_only=True) as conn:
        rows = conn.execute(
            "SELECT instance_id, metric, ts, average, minimum, maximum, sum, sample_count "
            "FROM rds_metrics"
        ).fetchall()
        [(fetch_rows,)] = conn.execute("SELECT count(*) FROM rds_metric_fetches").fetchall()
    columns = ("average", "minimum", "maximum", "sum", "sample_count")
    got = {(r[0], r[1], r[2], c): v for r in rows for c, v in zip(columns, r[3:], strict=True)}
    assert len(rows) == 2 * 3 * 12  # two instances, three hours, no duplicate
    assert got == pytest.approx(expected)
    assert fetch_rows == 2 * 3
