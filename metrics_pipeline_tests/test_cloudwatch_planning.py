"""The pure planning of GetMetricData requests: queries, batches, windows, pages."""

import io
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from botocore.awsrequest import AWSResponse
from urllib3 import HTTPResponse

from metrics_pipeline.catalog import Namespace
from metrics_pipeline.collection.bounds import (
    Deadline,
    DeadlineExceeded,
    MalformedAnswer,
    max_pages,
)
from metrics_pipeline.collection.cloudwatch import (
    Instance,
    MetricQuery,
    align_window,
    build_queries,
    datapoints_per_query,
    minimum_requests,
    page_to_table,
    plan_batches,
    queries_per_request,
    request_floor,
)
from metrics_pipeline.hours import hour_starts, is_settled
from metrics_pipeline.local_aws.cloudwatch import page_results

A = Instance("111", "us-east-1", "a")
B = Instance("111", "eu-west-1", "b")


def test_one_query_per_instance_metric_statistic_with_unique_ids() -> None:
    queries = build_queries([A, B], ["CPUUtilization", "SwapUsage"], ["Average", "Maximum"])
    assert len(queries) == 8
    assert len({q.query_id for q in queries}) == 8
    api = queries[0].to_api(300)
    assert api["MetricStat"]["Metric"] == {
        "Namespace": "AWS/RDS",
        "MetricName": "CPUUtilization",
        "Dimensions": [{"Name": "DBInstanceIdentifier", "Value": "a"}],
    }
    assert api["MetricStat"]["Period"] == 300
    assert api["MetricStat"]["Stat"] == "Average"
    assert api["Id"][0].islower()


@pytest.mark.parametrize(
    ("points", "expected"),
    [
        (12, 500),  # one hour at 300 s: 6,000 points per full batch, one page
        (201, 500),  # 100,500 points: still one page
        (202, 499),  # 500 x 202 would spill onto a second page; 499 x 202 fills one
        (864, 466),  # 3 days at 300 s: 466 x 864 = 402,624 = 4 pages of 100,800 (or fewer)
        (200_000, 499),  # longer than a page: 499 queries need 991 of the 992 pages 500 would
    ],
)
def test_batch_size_fills_whole_pages(points: int, expected: int) -> None:
    assert queries_per_request(points) == expected
    if expected < 500 and points * expected > 100_800:
        pages = -(-points * expected // 100_800)
        assert points * expected > (pages - 1) * 100_800


def test_batches_respect_limit_and_never_mix_regions() -> None:
    instances = [
        Instance("111", region, f"{region}-{n}")
        for region in ("us-east-1", "eu-west-1")
        for n in range(9)
    ]
    statistics = ["Average", "Minimum", "Maximum", "Sum", "SampleCount"]
    # 18 instances x 2 metrics x 5 statistics = 180 queries, 90 per region, 50 per request.
    queries = build_queries(instances, ["CPUUtilization", "SwapUsage"], statistics)
    batches = plan_batches(queries, datapoints_per_query=12, max_queries=50)
    assert [len(b) for b in batches] == [50, 40, 50, 40]
    assert all(len({q.instance.region for q in b}) == 1 for b in batches)
    assert sorted(q.query_id for b in batches for q in b) == sorted(q.query_id for q in queries)


def test_three_day_plan_is_close_to_the_lower_bound() -> None:
    instances = [Instance("111", "us-east-1", f"db-{n}") for n in range(100)]
    queries = build_queries(
        instances,
        [f"m{n}" for n in range(14)],
        ["Average", "Minimum", "Maximum", "Sum", "SampleCount"],
    )
    points = datapoints_per_query(datetime(2026, 11, 1), datetime(2026, 11, 4), 300)
    assert points == 864
    batches = plan_batches(queries, points)
    requests = sum(-(-len(b) * points // 100_800) for b in batches)
    naive = -(-len(queries) // 500) * -(-500 * points // 100_800)
    lower = minimum_requests(len(queries), points)
    assert lower == -(-7000 * 864 // 100_800) == 60
    assert naive == 70
    assert lower <= requests <= lower + 1


def test_windows_align_to_the_period() -> None:
    start = datetime(2026, 11, 20, 10, 7, 30)
    end = datetime(2026, 11, 20, 10, 52, 1)
    assert align_window(start, end, 300) == (
        datetime(2026, 11, 20, 10, 5),
        datetime(2026, 11, 20, 10, 55),
    )
    hour = datetime(2026, 11, 20, 10, tzinfo=UTC)
    assert align_window(hour, hour + timedelta(hours=1), 60) == (hour, hour + timedelta(hours=1))


def test_hours_and_settling() -> None:
    start = datetime(2026, 11, 20, 22)
    assert hour_starts(start, start + timedelta(hours=3)) == [
        start + timedelta(hours=h) for h in range(3)
    ]
    assert hour_starts(start + timedelta(minutes=5), start + timedelta(hours=1)) == []
    settle = timedelta(minutes=15)
    assert is_settled(start, start + timedelta(minutes=75), settle)
    assert not is_settled(start, start + timedelta(minutes=74, seconds=59), settle)


def test_page_rows_carry_their_query_and_utc_time() -> None:
    query = MetricQuery("q7", A, "CPUUtilization", "Maximum")
    local = datetime(2026, 11, 20, 10, 5, tzinfo=UTC).astimezone(timezone(timedelta(hours=1)))
    page = {
        "MetricDataResults": [
            {"Id": "q7", "Timestamps": [local, local - timedelta(minutes=5)], "Values": [4.5, 3.0]},
            {"Id": "q8", "Timestamps": [], "Values": []},
        ]
    }
    table = page_to_table(page, {"q7": query})
    assert table.to_pylist() == [
        {
            "account_id": "111",
            "region": "us-east-1",
            "instance_id": "a",
            "metric": "CPUUtilization",
            "statistic": "Maximum",
            "ts": datetime(2026, 11, 20, 10, 5),
            "value": 4.5,
        },
        {
            "account_id": "111",
            "region": "us-east-1",
            "instance_id": "a",
            "metric": "CPUUtilization",
            "statistic": "Maximum",
            "ts": datetime(2026, 11, 20, 10, 0),
            "value": 3.0,
        },
    ]


def test_the_fast_list_parser_gives_what_botocore_gives() -> None:
    """GetMetricData's Values and Timestamps are taken as decoded, not element by element:
    the parsed response must equal botocore's own, sparse and odd values included."""
    import json

    import botocore.session
    from botocore.parsers import ResponseParserFactory

    from metrics_pipeline.collection.botocore_internals import RawListsParserFactory
    from metrics_pipeline.collection.cloudwatch import raw_timestamp
    from metrics_pipeline_tests.helpers import make_aws

    model = botocore.session.get_session().get_service_model("cloudwatch")
    shape = model.operation_model("GetMetricData").output_shape
    body = {
        "MetricDataResults": [
            {
                "Id": "q0",
                "Label": "CPUUtilization",
                "StatusCode": "Complete",
                "Timestamps": [1764115200, 1764115500.0, None],
                "Values": [12.5, "NaN", None],
            }
        ],
        "NextToken": "page-2",
    }
    response = {"body": json.dumps(body).encode(), "headers": {}, "status_code": 200}
    parsed = []
    for factory in (ResponseParserFactory(), RawListsParserFactory()):
        factory.set_parser_defaults(timestamp_parser=raw_timestamp)
        parser = factory.create_parser("json")  # the protocol botocore's clients speak to it
        parsed.append(parser.parse(dict(response), shape))
    assert parsed[0]["MetricDataResults"] == parsed[1]["MetricDataResults"]
    assert parsed[1]["MetricDataResults"][0]["Values"] == [12.5, "NaN", None]
    assert parsed[0]["NextToken"] == parsed[1]["NextToken"] == "page-2"
    # And the CloudWatch clients the collection make parse their answers with it: a body that
    # is not JSON is refused, where botocore's own parser reads it as an empty answer.
    client = make_aws().client("cloudwatch", "us-east-1")

    def answer_html(request: Any, **_: Any) -> AWSResponse:
        return AWSResponse(
            request.url, 200, {}, HTTPResponse(body=io.BytesIO(b"<html>"), preload_content=False)
        )

    client.meta.events.register("before-send.cloudwatch.GetMetricData", answer_html)
    with pytest.raises(MalformedAnswer, match="an answer that is not JSON"):
        client.get_metric_data(
            MetricDataQueries=[{"Id": "q0", "Expression": "SEARCH('x', 'Average', 300)"}],
            StartTime=datetime(2026, 11, 20),
            EndTime=datetime(2026, 11, 21),
        )


@pytest.mark.parametrize(
    "counts",
    [[12] * 10, [12] * 5 + [0] * 5, [0] * 10, [7, 0, 131, 3] * 40, [864] * 500],
    ids=["full", "half-stopped", "all-stopped", "ragged", "three-days"],
)
def test_no_paging_goes_below_the_request_floor_nor_above_the_page_bound(
    counts: list[int],
) -> None:
    """CloudWatch's paging (as the local AWS does it) of queries holding `counts` datapoints,
    against pages of 60: the floor counts the datapoints there are, not the periods asked."""
    results = [{"values": [1.0] * n, "timestamps": [0] * n} for n in counts]
    pages, offset = 0, 0
    while offset is not None:
        _, offset = page_results(results, 60, offset)
        pages += 1
    assert request_floor(len(counts), sum(counts), max_datapoints=60) <= pages
    assert pages <= max_pages(len(counts), max(counts), 60)
    # The floor of a full window is the plan's: minimum_requests.
    if min(counts) == max(counts):
        floor = minimum_requests(len(counts), counts[0], max_datapoints=60)
        assert floor == request_floor(len(counts), sum(counts), max_datapoints=60)


def test_a_deadline_names_its_setting() -> None:
    now = [1000.0]
    deadline = Deadline.after(30, "METRICS_CHUNK_TIMEOUT_SECONDS", clock=lambda: now[0])
    now[0] = 1029.5
    deadline.check("a page received")
    assert deadline.remaining() == 0.5
    now[0] = 1030.0
    with pytest.raises(DeadlineExceeded) as raised:
        deadline.check("a page received")
    assert str(raised.value) == (
        "no complete answer within METRICS_CHUNK_TIMEOUT_SECONDS=30 s (a page received)"
    )


def test_a_query_names_the_namespace_and_dimension_of_its_catalogue() -> None:
    [instance_query] = build_queries([A], ["CPUUtilization"], ["Average"])
    assert instance_query.to_api(300)["MetricStat"]["Metric"] == {
        "Namespace": "AWS/RDS",
        "MetricName": "CPUUtilization",
        "Dimensions": [{"Name": "DBInstanceIdentifier", "Value": A.instance_id}],
    }
    clusters = Namespace("AWS/RDS", "DBClusterIdentifier")
    [cluster_query] = build_queries([A], ["VolumeBytesUsed"], ["Maximum"], clusters)
    assert cluster_query.to_api(60)["MetricStat"] == {
        "Metric": {
            "Namespace": "AWS/RDS",
            "MetricName": "VolumeBytesUsed",
            "Dimensions": [{"Name": "DBClusterIdentifier", "Value": A.instance_id}],
        },
        "Period": 60,
        "Stat": "Maximum",
    }
