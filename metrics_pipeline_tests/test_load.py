"""Load: three days of a 500-instance fleet collected in one run, every row exactly once, with
the run process's peak memory under a stated bound.

The local AWS runs in a process of its own and the collection in a child process, so that
the child's peak RSS (its own VmHWM, which it reports) is the pipeline's alone, not the
simulator's nor the high-water mark of the whole pytest session.

    .venv/bin/pytest -m load -s      # prints the figures
"""

import argparse
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import pytest
from dagster import materialize

from metrics_pipeline.collection.resources import AwsResource, CollectionResource
from metrics_pipeline.collection.runs import peak_memory_mib
from metrics_pipeline.dagster_runs import range_tags
from metrics_pipeline.warehouse.resources import WarehouseResource
from metrics_pipeline_tests.helpers import (
    PROJECT_ROOT,
    free_port,
    rds_instances,
    rds_metrics,
    wait_for,
)

INSTANCES = 500
DAYS = 3
REGIONS = ("us-east-1", "eu-west-1")
# Two of the 14 default metrics, all five statistics: 500 x 2 x 864 periods = 864,000 rows
# from 4,320,000 datapoints, about 90 s on a 2-core machine. All 14 would be 30 million
# datapoints: by the same rates some 8 minutes, too long for every test run.
METRICS = ("CPUUtilization", "FreeStorageSpace")
PERIODS_PER_HOUR = 12  # 300 s
# The child's peak RSS: the bound for any window and fleet. Memory follows the chunk
# (METRICS_CHUNK_DATAPOINTS), not the window: measured 500-550 MiB here and 880 MiB for 30
# million datapoints (500 instances, 14 metrics, 3 days).
PEAK_RSS_BOUND_MIB = 1024

pytestmark = pytest.mark.load


def collect(database: Path, endpoint: str, days: int, metrics: tuple[str, ...]) -> dict[str, Any]:
    """The child's work: discovery, then one single-run backfill of the last `days` settled
    days from the local AWS at `endpoint`. Returns the run's figures."""
    now = datetime.now(UTC)
    began = time.perf_counter()
    aws = AwsResource(regions=list(REGIONS), endpoint_url=endpoint, max_requests_per_second=1000)
    collection = CollectionResource(metrics=list(metrics))
    # DuckDB on two threads, as on the development machine: its memory grows with its thread
    # count, and the bound below should not depend on the CI machine's cores.
    warehouse = WarehouseResource(database=str(database), connection_config={"threads": 2})
    resources = {"aws": aws, "collection": collection, "warehouse": warehouse}
    assert materialize([rds_instances], resources=resources).success
    last = now.replace(tzinfo=None, minute=0, second=0, microsecond=0) - timedelta(hours=1)
    first = last - timedelta(days=days) + timedelta(hours=1)
    run_began = time.perf_counter()
    result = materialize([rds_metrics], resources=resources, tags=range_tags(first, last))
    run_seconds = time.perf_counter() - run_began
    metadata = result.asset_materializations_for_node("rds_metrics")[0].metadata
    figures = {key: value.value for key, value in metadata.items()}
    return {
        **{key: value for key, value in figures.items() if isinstance(value, int | float | str)},
        "first_hour": first.isoformat(),
        "last_hour": last.isoformat(),
        "run_seconds": round(run_seconds, 1),
        "total_seconds": round(time.perf_counter() - began, 1),
        # The child's own high-water mark: wait4's maxrss would start from pytest's.
        "peak_rss_mib": peak_memory_mib(),
    }


@pytest.fixture
def fleet_endpoint(tmp_path: Path) -> Iterator[str]:
    """The project's local AWS with a generated 500-instance fleet, in a process of its own."""
    port = free_port()
    log = tmp_path / "local_aws.log"
    with log.open("wb") as output:
        server = subprocess.Popen(
            [sys.executable, "-m", "metrics_pipeline.local_aws", "--port", str(port),
             "--fleet-size", str(INSTANCES), "--regions", ",".join(REGIONS),
             "--new-instance-after", "0", "--late-minutes", "0"],
            cwd=PROJECT_ROOT, stdout=output, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        wait_for(lambda: "local AWS on" in log.read_text(), 60, "the local AWS")
        yield f"http://127.0.0.1:{port}"
    finally:
        server.terminate()
        server.wait(timeout=30)


@pytest.mark.e2e
def test_three_days_of_500_instances(tmp_path: Path, fleet_endpoint: str) -> None:
    database = tmp_path / "load.duckdb"
    figures_file = tmp_path / "figures.json"
    with (tmp_path / "child.log").open("wb") as child_output:
        child = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "metrics_pipeline_tests.test_load",
                str(database),
                str(figures_file),
                fleet_endpoint,
            ],
            cwd=PROJECT_ROOT,
            stdout=child_output,
            stderr=subprocess.STDOUT,
        )
    assert child.wait() == 0, (tmp_path / "child.log").read_text()[-3000:]
    figures = json.loads(figures_file.read_text())
    peak_rss_mib = figures["peak_rss_mib"]

    first = datetime.fromisoformat(figures["first_hour"])
    periods = DAYS * 24 * PERIODS_PER_HOUR
    expected_rows = INSTANCES * len(METRICS) * periods
    with duckdb.connect(str(database), read_only=True) as conn:
        [(rows, distinct_keys, with_every_stat)] = conn.execute(
            """
            SELECT count(*),
                   count(DISTINCT (account_id, region, instance_id, metric, ts)),
                   count(*) FILTER (average IS NOT NULL AND minimum IS NOT NULL
                                    AND maximum IS NOT NULL AND sum IS NOT NULL
                                    AND sample_count = 5)
            FROM rds_metrics
            """
        ).fetchall()
        # The grid every row must fill: each instance (in its region), metric and period.
        [(missing, unexpected)] = conn.execute(
            """
            WITH expected AS (
                SELECT i.region, i.instance_id, m.metric,
                       $first + to_minutes(5 * p.n) AS ts
                FROM rds_instances i
                CROSS JOIN (SELECT unnest($metrics) AS metric) m
                CROSS JOIN range($periods) p(n)
            )
            SELECT (SELECT count(*) FROM expected ANTI JOIN rds_metrics
                        USING (region, instance_id, metric, ts)),
                   (SELECT count(*) FROM rds_metrics ANTI JOIN expected
                        USING (region, instance_id, metric, ts))
            """,
            {"first": first, "metrics": list(METRICS), "periods": periods},
        ).fetchall()
        [(inventory,)] = conn.execute("SELECT count(*) FROM rds_instances").fetchall()

    print(
        f"\nload: {INSTANCES} instances in {len(REGIONS)} regions, {DAYS} days, "
        f"metrics {', '.join(METRICS)} x 5 statistics\n"
        f"  rows written:        {figures['rows_written']:>12,}\n"
        f"  datapoints:          {figures['datapoints']:>12,}\n"
        f"  GetMetricData calls: {figures['cloudwatch_requests']:>12,}  "
        f"(lower bound {figures['minimum_requests']:,})\n"
        f"  fetch / write:       {figures['fetch_seconds']:>10.1f} s / "
        f"{figures['write_seconds']:.1f} s\n"
        f"  run, end to end:     {figures['run_seconds']:>10.1f} s "
        f"(child process {figures['total_seconds']:.1f} s)\n"
        f"  peak RSS (the pipeline's process): {peak_rss_mib:,.0f} MiB "
        f"(bound {PEAK_RSS_BOUND_MIB:,} MiB)"
    )
    assert inventory == INSTANCES
    assert rows == expected_rows
    assert distinct_keys == expected_rows
    assert with_every_stat == expected_rows
    assert (missing, unexpected) == (0, 0)
    assert figures["rows_written"] == expected_rows
    assert figures["datapoints"] == expected_rows * 5
    assert figures["instances"] == INSTANCES
    assert figures["minimum_requests"] <= figures["cloudwatch_requests"]
    assert figures["cloudwatch_requests"] <= 1.1 * figures["minimum_requests"]
    assert peak_rss_mib < PEAK_RSS_BOUND_MIB


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="The load test's child: collect and report.")
    parser.add_argument("database", type=Path)
    parser.add_argument("figures", type=Path)
    parser.add_argument("endpoint")
    parser.add_argument("--days", type=int, default=DAYS)
    parser.add_argument("--metrics", default=",".join(METRICS))
    args = parser.parse_args()
    result = collect(args.database, args.endpoint, args.days, tuple(args.metrics.split(",")))
    args.figures.write_text(json.dumps(result, default=str))
