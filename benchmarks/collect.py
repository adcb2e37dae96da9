"""The benchmark's pipeline process: one way of collecting a window from a local AWS, run in a
process of its own so that the suite reads its CPU time and peak memory from wait4().

    python -m benchmarks.collect MODE --endpoint URL --folder DIR --hours N [--metrics ...]

MODE is `window` (one single-run backfill, as the gap sensor launches), `partitions` (one run
per hourly partition: plain Dagster), `fresh` (what one fresh tick does: the inventory, the
two latest hours, their rollups) or `old-system` (the Go system's way: one GetMetricData
round per hour with 100 ms between calls; it only fetches). Prints one JSON line of figures.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

STARTED = time.perf_counter()

import duckdb  # noqa: E402
from dagster import DagsterInstance, materialize  # noqa: E402

from metrics_pipeline.collection.assets import build_collection_assets  # noqa: E402
from metrics_pipeline.collection.cloudwatch import (  # noqa: E402
    MAX_QUERIES_PER_REQUEST,
    build_queries,
)
from metrics_pipeline.collection.inventory import Instance  # noqa: E402
from metrics_pipeline.collection.schedules import range_tags  # noqa: E402
from metrics_pipeline.hours import floor_hour, partition_key  # noqa: E402
from metrics_pipeline.partitions import Partitions  # noqa: E402
from metrics_pipeline.resources import build_resources  # noqa: E402
from metrics_pipeline.rollups.assets import build_rollup_assets  # noqa: E402
from metrics_pipeline.settings import load_settings  # noqa: E402
from metrics_pipeline.warehouse.schema import RUNS_TABLE  # noqa: E402

REGIONS = "us-east-1,eu-west-1"
OLD_SYSTEM_SLEEP_SECONDS = 0.1


def settings_env(args: argparse.Namespace) -> dict[str, str]:
    return {
        **os.environ,
        "METRICS_AWS_REGIONS": REGIONS,
        "METRICS_DUCKDB_PATH": str(args.folder / "metrics.duckdb"),
        "METRICS_CLOUDWATCH_METRICS": args.metrics,
        # As in production, within CloudWatch's 50 requests per second.
        "METRICS_MAX_REQUESTS_PER_SECOND": "50",
    }


def window_hours(hours: int, newest_settled: bool) -> tuple[datetime, datetime]:
    """First and last hour: the latest `hours` hours that ended (ending 4 h ago for history,
    so that CloudWatch's quota for older data applies), or for a fresh tick the hour in
    progress and the one before."""
    now = floor_hour(datetime.now(UTC).replace(tzinfo=None))
    last = now if newest_settled else now - timedelta(hours=4)
    return last - timedelta(hours=hours - 1), last


def run_figures(database: Path) -> list[dict[str, Any]]:
    with duckdb.connect(str(database), read_only=True) as conn:
        cursor = conn.execute(f"SELECT * FROM {RUNS_TABLE} ORDER BY finished_at")
        names = [column[0] for column in cursor.description]
        return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


def totals(runs: list[dict[str, Any]]) -> dict[str, Any]:
    keys = ("datapoints", "rows_written", "cloudwatch_requests", "minimum_requests",
            "fetch_seconds", "write_seconds", "lock_wait_seconds", "cpu_seconds")  # fmt: skip
    summed = {key: sum(run[key] or 0 for run in runs) for key in keys}
    summed["peak_memory_mib"] = max(run["peak_memory_mib"] for run in runs)
    return summed


def collect_with_dagster(args: argparse.Namespace) -> dict[str, Any]:
    settings = load_settings(settings_env(args))
    partitions = Partitions.starting(settings.partitions_start)
    rds_instances, rds_metrics = build_collection_assets(settings, partitions.hourly)
    hourly, daily = build_rollup_assets(partitions)
    resources = build_resources(settings)
    imported = time.perf_counter() - STARTED
    phases: dict[str, float] = {"start_up": imported}
    with DagsterInstance.ephemeral() as instance:
        began = time.perf_counter()
        assert materialize([rds_instances], resources=resources, instance=instance).success
        phases["inventory"] = time.perf_counter() - began
        first, last = window_hours(args.hours, newest_settled=args.mode == "fresh")
        began = time.perf_counter()
        if args.mode == "partitions":
            hour = first
            while hour <= last:
                result = materialize(
                    [rds_metrics], partition_key=partition_key(hour), resources=resources,
                    instance=instance,
                )  # fmt: skip
                assert result.success
                hour += timedelta(hours=1)
        else:
            result = materialize(
                [rds_metrics], tags=range_tags(first, last), resources=resources,
                instance=instance,
            )  # fmt: skip
            assert result.success
            metadata = result.asset_materializations_for_node("rds_metrics")[0].metadata
            phases["snapshot_publish"] = metadata["snapshot_publish_seconds"].value
        phases["collection"] = time.perf_counter() - began
        if args.mode == "fresh":
            began = time.perf_counter()
            assert materialize(
                [hourly], tags=range_tags(first, last), resources=resources, instance=instance
            ).success
            assert materialize(
                [daily], partition_key=last.strftime("%Y-%m-%d"), resources=resources,
                instance=instance,
            ).success  # fmt: skip
            phases["rollups"] = time.perf_counter() - began
    runs = run_figures(args.folder / "metrics.duckdb")
    return {**totals(runs), "runs": len(runs), "phases": phases, "hours": args.hours}


def collect_like_the_old_system(args: argparse.Namespace) -> dict[str, Any]:
    """One round per hour of the window: every query of the hour in requests of 500, 100 ms
    apart, as the Go system did. Only fetches (and counts what came back)."""
    import boto3

    first, last = window_hours(args.hours, newest_settled=False)
    requests = datapoints = 0
    metrics = args.metrics.split(",")
    statistics = ["Average", "Minimum", "Maximum", "Sum", "SampleCount"]
    began = time.perf_counter()
    for region in REGIONS.split(","):
        rds = boto3.client("rds", region_name=region, endpoint_url=args.endpoint)
        ids = [
            db["DBInstanceIdentifier"]
            for page in rds.get_paginator("describe_db_instances").paginate()
            for db in page["DBInstances"]
        ]
        cloudwatch = boto3.client("cloudwatch", region_name=region, endpoint_url=args.endpoint)
        queries = build_queries([Instance("", region, i) for i in ids], metrics, statistics)
        hour = first
        while hour <= last:
            for n in range(0, len(queries), MAX_QUERIES_PER_REQUEST):
                batch = queries[n : n + MAX_QUERIES_PER_REQUEST]
                pages = cloudwatch.get_paginator("get_metric_data").paginate(
                    MetricDataQueries=[q.to_api(300) for q in batch],
                    StartTime=hour,
                    EndTime=hour + timedelta(hours=1),
                )
                for page in pages:
                    requests += 1
                    datapoints += sum(len(r["Values"]) for r in page["MetricDataResults"])
                    time.sleep(OLD_SYSTEM_SLEEP_SECONDS)
            hour += timedelta(hours=1)
    return {
        "cloudwatch_requests": requests,
        "datapoints": datapoints,
        "phases": {"collection": time.perf_counter() - began},
        "hours": args.hours,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=["window", "partitions", "fresh", "old-system"])
    parser.add_argument("--endpoint", required=True)
    parser.add_argument("--folder", type=Path, required=True)
    parser.add_argument("--hours", type=int, required=True)
    parser.add_argument("--metrics", required=True)
    args = parser.parse_args()
    os.environ["AWS_ENDPOINT_URL"] = args.endpoint
    figures = (
        collect_like_the_old_system(args)
        if args.mode == "old-system"
        else collect_with_dagster(args)
    )
    print(json.dumps(figures, default=str), flush=True)


if __name__ == "__main__":
    main()
