"""The benchmark's pipeline process: one way of collecting a window from a local AWS, in a
process of its own so that the suite reads its CPU time from wait4() (and its own peak
memory, VmHWM, from the figures it prints).

    python -m benchmarks.collect MODE --endpoint URL --folder DIR --hours N --metrics M,...

MODE is `window` (one single-run backfill, as the gap sensor launches), `partitions` (one
run per hourly partition: plain Dagster), `fresh` (what a fresh tick does: the
fresh_collection_job over the two latest hours), `pi` (Performance Insights' load of the
window in one run, as the gap sensor launches it), `history` (the hourly tier's backfill of
the N days before today, N = hours / 24, as the gap sensor launches it on a new deployment:
one run of hourly_history_job, into a lake on this machine, the default storage) or
`old-system` (the Go system's way: one GetMetricData round per hour, 100 ms between calls; it
only fetches). Prints one JSON line of figures.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from dagster import DagsterEventType, DagsterInstance, materialize

from metrics_pipeline.collection.assets import build_collection_assets
from metrics_pipeline.collection.cloudwatch import MAX_QUERIES_PER_REQUEST, build_queries
from metrics_pipeline.collection.keys import RDS_INSTANCES
from metrics_pipeline.collection.runs import peak_memory_mib
from metrics_pipeline.dagster_runs import range_tags
from metrics_pipeline.definitions import build_definitions
from metrics_pipeline.hours import day_partition_key, floor_day, floor_hour
from metrics_pipeline.local_aws.signals import latest_busy_hour
from metrics_pipeline.partitions import Partitions
from metrics_pipeline.resources import build_resources
from metrics_pipeline.settings import Settings, load_settings
from metrics_pipeline.warehouse.instances import Instance
from metrics_pipeline.warehouse.schema import RUNS_TABLE

PROJECT_ROOT = Path(__file__).resolve().parent.parent

REGIONS = "us-east-1,eu-west-1"
OLD_SYSTEM_SLEEP_SECONDS = 0.1


def settings_env(args: argparse.Namespace) -> dict[str, str]:
    """The suite's settings; a METRICS_* variable set by the caller wins, except the fleet's
    shape (regions, metrics) and where the warehouse goes."""
    storage = (
        {"METRICS_WAREHOUSE": f"ducklake:{args.folder / 'metrics.ducklake'}"}
        if args.mode == "history"
        else {"METRICS_DUCKDB_PATH": str(args.folder / "metrics.duckdb"), "METRICS_WAREHOUSE": ""}
    )
    return {
        # As in production, within CloudWatch's 50 requests per second; PI publishes no rate.
        "METRICS_MAX_REQUESTS_PER_SECOND": "50",
        "METRICS_PI_REQUESTS_PER_SECOND": "50",
        **os.environ,
        "METRICS_AWS_REGIONS": REGIONS,
        **storage,
        "METRICS_CLOUDWATCH_METRICS": args.metrics,
    }


def dagster_instance(folder: Path) -> DagsterInstance:
    """A Dagster instance in its own DAGSTER_HOME, with the project's dagster.yaml: run and
    event-log storage as a deployment has it."""
    home = folder / "dagster_home"
    home.mkdir()
    shutil.copy(PROJECT_ROOT / "dagster.yaml", home / "dagster.yaml")
    os.environ["DAGSTER_HOME"] = str(home)
    return DagsterInstance.get()


def window_hours(hours: int, newest_settled: bool) -> tuple[datetime, datetime]:
    """First and last hour: the latest `hours` hours that ended (ending 4 h ago for history,
    so that CloudWatch's quota for older data applies), or for a fresh tick the hour in
    progress and the one before."""
    now = floor_hour(datetime.now(UTC).replace(tzinfo=None))
    last = now if newest_settled else now - timedelta(hours=4)
    return last - timedelta(hours=hours - 1), last


def run_figures(settings: Settings) -> list[dict[str, Any]]:
    with build_resources(settings)["warehouse"].reader() as conn:
        cursor = conn.execute(f"SELECT * FROM {RUNS_TABLE} ORDER BY finished_at")
        names = [column[0] for column in cursor.description]
        return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


def totals(runs: list[dict[str, Any]]) -> dict[str, Any]:
    keys = ("datapoints", "rows_written", "cloudwatch_requests", "minimum_requests",
            "fetch_seconds", "write_seconds", "lock_wait_seconds", "cpu_seconds",
            "estimated_cost_usd", "pi_requests", "throttled_calls")  # fmt: skip
    return {key: sum(run[key] or 0 for run in runs) for key in keys}


def step_seconds(instance: DagsterInstance, run_id: str) -> dict[str, float]:
    """Each step's time, from its start and success events in the run's event log."""
    started: dict[str, float] = {}
    seconds: dict[str, float] = {}
    for entry in instance.all_logs(run_id):
        event = entry.dagster_event
        if event is None or event.step_key is None:
            continue
        if event.event_type == DagsterEventType.STEP_START:
            started[event.step_key] = entry.timestamp
        elif event.event_type == DagsterEventType.STEP_SUCCESS:
            seconds[event.step_key] = entry.timestamp - started[event.step_key]
    return seconds


def fresh_tick(settings: Settings, instance: DagsterInstance, phases: dict[str, float]) -> None:
    """What a fresh tick runs: the fresh_collection_job (inventory, the two latest hours, the
    checks) over its partition range. The long tiers are fetched once a day, not per tick."""
    defs = build_definitions(settings)
    first, last = window_hours(2, newest_settled=True)
    began = time.perf_counter()
    result = defs.resolve_job_def("fresh_collection_job").execute_in_process(
        instance=instance, tags=range_tags(first, last)
    )
    assert result.success
    phases["collection"] = time.perf_counter() - began
    steps = step_seconds(instance, result.run_id)
    phases["inventory"] = steps["rds_instances"]
    phases["metrics"] = steps["rds_metrics"]
    metadata = result.asset_materializations_for_node("rds_metrics")[0].metadata
    publish_seconds = metadata["snapshot_publish_seconds"].value
    assert isinstance(publish_seconds, float), publish_seconds  # recorded as float metadata
    phases["snapshot_publish"] = publish_seconds


def hourly_backfill(
    settings: Settings, instance: DagsterInstance, days: int, phases: dict[str, float]
) -> None:
    """The hourly tier's first backfill: the inventory, then the `days` settled days before
    today in one run of the job the gap sensor launches for it (newest first within it)."""
    defs = build_definitions(settings)
    began = time.perf_counter()
    # Its resources are bound by the definitions.
    assert materialize([defs.resolve_assets_def(RDS_INSTANCES)], instance=instance).success
    phases["inventory"] = time.perf_counter() - began
    today = floor_day(datetime.now(UTC).replace(tzinfo=None))
    began = time.perf_counter()
    result = defs.resolve_job_def("hourly_history_job").execute_in_process(
        instance=instance,
        tags=range_tags(today - timedelta(days=days), today - timedelta(days=1), day_partition_key),
    )
    assert result.success
    phases["collection"] = time.perf_counter() - began


def performance_insights_window(
    settings: Settings, instance: DagsterInstance, hours: int, phases: dict[str, float]
) -> None:
    """The inventory, then `hours` settled hours of Performance Insights' load in one run of
    the job the gap sensor launches for it, ending with the latest peak 4 h ago or more."""
    defs = build_definitions(settings)
    began = time.perf_counter()
    assert materialize([defs.resolve_assets_def(RDS_INSTANCES)], instance=instance).success
    phases["inventory"] = time.perf_counter() - began
    # The simulated fleet's busiest hours: the most keys to page through (a night has none).
    last = latest_busy_hour(window_hours(1, newest_settled=False)[1], hours_from_peak=0)
    first = last - timedelta(hours=hours - 1)
    began = time.perf_counter()
    result = defs.resolve_job_def("pi_healing_job").execute_in_process(
        instance=instance, tags=range_tags(first, last)
    )
    assert result.success
    phases["collection"] = time.perf_counter() - began


def collect_with_dagster(args: argparse.Namespace) -> dict[str, Any]:
    settings = load_settings(settings_env(args))
    instance = dagster_instance(args.folder)
    phases: dict[str, float] = {
        "start_up": time.time() - float(os.environ.get("BENCHMARK_SPAWNED_AT", time.time()))
    }
    if args.mode == "fresh":
        fresh_tick(settings, instance, phases)
    elif args.mode == "history":
        hourly_backfill(settings, instance, args.hours // 24, phases)
    elif args.mode == "pi":
        performance_insights_window(settings, instance, args.hours, phases)
    else:
        partitions = Partitions.starting(settings.partitions_start)
        rds_instances, rds_metrics = build_collection_assets(settings, partitions.hourly)
        resources = build_resources(settings)
        began = time.perf_counter()
        assert materialize([rds_instances], resources=resources, instance=instance).success
        phases["inventory"] = time.perf_counter() - began
        first, last = window_hours(args.hours, newest_settled=False)
        began = time.perf_counter()
        ranges = (
            [(first + timedelta(hours=n),) * 2 for n in range(args.hours)]
            if args.mode == "partitions"
            else [(first, last)]
        )
        for range_first, range_last in ranges:
            assert materialize(
                [rds_metrics], tags=range_tags(range_first, range_last), resources=resources,
                instance=instance,
            ).success  # fmt: skip
        phases["collection"] = time.perf_counter() - began
    runs = run_figures(settings)
    return {
        **totals(runs),
        # A fresh run records a row per asset it collects (the instances, the clusters).
        "runs": len({run["run_id"] for run in runs}),
        "phases": phases,
        "hours": args.hours,
        "peak_rss_mib": peak_memory_mib(),
    }


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
        "peak_rss_mib": peak_memory_mib(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "mode", choices=["window", "partitions", "fresh", "history", "pi", "old-system"]
    )
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
