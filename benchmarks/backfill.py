"""Benchmark: a single-run backfill of N days for a simulated fleet, through Dagster.

    .venv/bin/python benchmarks/backfill.py --instances 50 --days 3

Prints what the run asked of CloudWatch, how long the simulator spent answering, and the
fetch and write times the asset reports. Nothing is asserted: these are figures to compare.
"""

import argparse
import logging
import os
import resource
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
os.environ.setdefault("AWS_ACCESS_KEY_ID", "local")
os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "local")

from dagster import materialize
from moto.cloudwatch.responses import CloudWatchResponse

from metrics_pipeline.collection.assets import build_collection_assets
from metrics_pipeline.collection.resources import AwsResource, CollectionResource
from metrics_pipeline.collection.schedules import range_tags
from metrics_pipeline.local_aws.fleet import generated_fleet
from metrics_pipeline.local_aws.server import start
from metrics_pipeline.partitions import Partitions
from metrics_pipeline.settings import load_settings
from metrics_pipeline.warehouse.resources import WarehouseResource


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--instances", type=int, default=50)
    parser.add_argument("--days", type=int, default=3)
    args = parser.parse_args()
    logging.getLogger("werkzeug").setLevel(logging.ERROR)

    now = datetime.now(UTC)
    regions = ("us-east-1", "eu-west-1")
    settings = load_settings({**os.environ, "METRICS_AWS_REGIONS": ",".join(regions)})
    rds_instances, rds_metrics = build_collection_assets(
        settings, Partitions.starting(settings.partitions_start).hourly
    )
    local = start(generated_fleet(now, args.instances, regions))
    os.environ["AWS_ENDPOINT_URL"] = local.url
    answering = {"seconds": 0.0, "requests": 0}
    original = CloudWatchResponse.get_metric_data

    def timed(self: CloudWatchResponse):
        began = time.perf_counter()
        try:
            return original(self)
        finally:
            answering["seconds"] += time.perf_counter() - began
            answering["requests"] += 1

    CloudWatchResponse.get_metric_data = timed  # type: ignore[method-assign]
    with tempfile.TemporaryDirectory() as folder:
        aws = AwsResource(regions=list(regions), max_requests_per_second=50)
        warehouse = WarehouseResource(database=str(Path(folder) / "metrics.duckdb"))
        resources = {"aws": aws, "collection": CollectionResource(), "warehouse": warehouse}
        materialize([rds_instances], resources=resources)
        last = now.replace(tzinfo=None, minute=0, second=0, microsecond=0) - timedelta(hours=1)
        first = last - timedelta(days=args.days) + timedelta(hours=1)
        began = time.perf_counter()
        result = materialize(
            [rds_metrics],
            resources=resources,
            tags=range_tags(first, last),
        )
        total = time.perf_counter() - began
        metadata = result.asset_materializations_for_node("rds_metrics")[0].metadata
    local.stop()
    figures = {key: value.value for key, value in metadata.items()}
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"fleet: {args.instances} instances in {len(regions)} regions, {args.days} days")
    print(f"rows written:          {figures['rows_written']:>12,}")
    print(f"datapoints:            {figures['datapoints']:>12,}")
    print(
        f"GetMetricData calls:   {figures['cloudwatch_requests']:>12,}  "
        f"(lower bound {figures['minimum_requests']:,})"
    )
    print(f"metrics requested:     {figures['metrics_requested']:>12,}")
    print(f"simulator answering:   {answering['seconds']:>12.1f} s")
    print(f"fetch (asset):         {figures['fetch_seconds']:>12.1f} s")
    print(f"write (asset):         {figures['write_seconds']:>12.1f} s")
    print(f"run, end to end:       {total:>12.1f} s")
    print(f"peak RSS (this process, simulator included): {peak_mib:,.0f} MiB")


if __name__ == "__main__":
    main()
