"""The local AWS's GetMetricData: CloudWatch's limits, NextToken paging and percentiles on top of
moto."""

from datetime import UTC, datetime, timedelta

import boto3
import numpy as np
import pytest
from botocore.exceptions import ClientError

from metrics_pipeline.collection.cloudwatch import build_queries
from metrics_pipeline.local_aws.cloudwatch import page_results
from metrics_pipeline.warehouse.instances import Instance
from metrics_pipeline_tests.moto_fleet import put_metrics, raw_values

HOUR = datetime(2026, 11, 20, 10)


def result(query_id: str, count: int) -> dict:
    return {"id": query_id, "values": list(range(count)), "timestamps": list(range(count))}


def test_pages_split_datapoints_in_query_order() -> None:
    results = [result("a", 3), result("b", 0), result("c", 4)]
    first, offset = page_results(results, 5, 0)
    assert [(r["id"], r["values"], r["status_code"]) for r in first] == [
        ("a", [0, 1, 2], "Complete"),
        ("b", [], "Complete"),
        ("c", [0, 1], "PartialData"),
    ]
    assert offset == 5
    second, offset = page_results(results, 5, 5)
    assert [(r["id"], r["values"]) for r in second] == [("a", []), ("b", []), ("c", [2, 3])]
    assert offset is None


@pytest.mark.usefixtures("moto_aws")
def test_more_than_500_queries_is_refused() -> None:
    client = boto3.client("cloudwatch", region_name="us-east-1")
    instances = [Instance("1", "us-east-1", f"db-{n}") for n in range(101)]
    queries = build_queries(
        instances, ["CPUUtilization"], ["Average", "Minimum", "Maximum", "Sum", "SampleCount"]
    )
    with pytest.raises(ClientError, match="must not have a size greater than 500"):
        client.get_metric_data(
            MetricDataQueries=[q.to_api(300) for q in queries],
            StartTime=HOUR,
            EndTime=HOUR + timedelta(hours=1),
        )


@pytest.mark.usefixtures("moto_aws")
def test_paginator_reassembles_every_datapoint() -> None:
    put_metrics("us-east-1", ["db-1"], ["CPUUtilization"], HOUR, HOUR + timedelta(hours=1))
    client = boto3.client("cloudwatch", region_name="us-east-1")
    [query] = build_queries([Instance("1", "us-east-1", "db-1")], ["CPUUtilization"], ["Sum"])
    pages = list(
        client.get_paginator("get_metric_data").paginate(
            MetricDataQueries=[query.to_api(300)],
            StartTime=HOUR.replace(tzinfo=UTC),
            EndTime=HOUR.replace(tzinfo=UTC) + timedelta(hours=1),
            ScanBy="TimestampAscending",
            PaginationConfig={"PageSize": 5},
        )
    )
    assert [len(p["MetricDataResults"][0]["Values"]) for p in pages] == [5, 5, 2]
    timestamps = [t for p in pages for t in p["MetricDataResults"][0]["Timestamps"]]
    assert timestamps == [HOUR.replace(tzinfo=UTC) + timedelta(minutes=5 * n) for n in range(12)]


@pytest.mark.usefixtures("moto_aws")
def test_percentiles_of_stored_data_are_of_each_periods_samples() -> None:
    """moto answers no extended statistic; the local AWS computes it from the samples put."""
    end = HOUR + timedelta(hours=2)
    put_metrics("us-east-1", ["db-1"], ["CPUUtilization"], HOUR, end)
    client = boto3.client("cloudwatch", region_name="us-east-1")
    statistics = ["p50", "p95", "p99", "Average"]
    queries = build_queries([Instance("1", "us-east-1", "db-1")], ["CPUUtilization"], statistics)
    answer = client.get_metric_data(
        MetricDataQueries=[q.to_api(3600) for q in queries],
        StartTime=HOUR.replace(tzinfo=UTC),
        EndTime=end.replace(tzinfo=UTC),
        ScanBy="TimestampAscending",
    )
    hours = [HOUR, HOUR + timedelta(hours=1)]
    samples = {
        hour: [
            value
            for n in range(12)
            for value in raw_values("db-1", "CPUUtilization", hour + timedelta(minutes=5 * n))
        ]
        for hour in hours
    }
    got = {
        (stat, ts.replace(tzinfo=None)): value
        for stat, result in zip(statistics, answer["MetricDataResults"], strict=True)
        for ts, value in zip(result["Timestamps"], result["Values"], strict=True)
    }
    assert got == pytest.approx(
        {
            (stat, hour): float(
                np.mean(values) if stat == "Average" else np.percentile(values, float(stat[1:]))
            )
            for stat in statistics
            for hour, values in samples.items()
        }
    )
