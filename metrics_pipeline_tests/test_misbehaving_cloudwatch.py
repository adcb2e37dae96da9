"""CloudWatch answers that never finish, do not parse, or hold more than was asked.

GetMetricData goes to a real HTTP server on loopback that misbehaves (the rest of AWS to a
moto server): endless pages, a body trickled a byte at a time, truncated JSON, an HTML page
with HTTP 200, a page beyond MaxDatapoints. Each fails its chunk with one line after a bounded
number of requests and bytes; nothing of the chunk is written, so the fetch log does not mark
its hour settled and the gap sensor's next look asks for it again.
"""

from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from dagster import materialize

from metrics_pipeline.healing.gaps import HourStatus, find_gaps
from metrics_pipeline.hours import HOUR, partition_key
from metrics_pipeline.quality.alerts import root_cause
from metrics_pipeline.resources import build_resources
from metrics_pipeline.warehouse.fetch_log import RDS_FETCH_LOG
from metrics_pipeline.warehouse.instances import Instance, read_inventory
from metrics_pipeline.warehouse.resources import WarehouseResource
from metrics_pipeline_tests.helpers import (
    STEP_ATTEMPTS,
    make_aws,
    make_collection,
    rds_instances,
    rds_metrics,
    settings_for_tests,
)
from metrics_pipeline_tests.misbehaving_cloudwatch import (
    Answer,
    MisbehavingCloudWatch,
    Request,
    answer_cut_short,
    by_region,
    complete,
    empty_object,
    endless_pages,
    html_page,
    oversized,
    trickled,
)
from metrics_pipeline_tests.moto_fleet import ACCOUNT_ID, TWO_DAYS_AGO, create_instance

pytestmark = pytest.mark.storage_neutral

HOUR_START = TWO_DAYS_AGO
EPOCH = HOUR_START.replace(tzinfo=UTC).timestamp()
ORDERS = Instance(ACCOUNT_ID, "us-east-1", "orders-db")
USERS = Instance(ACCOUNT_ID, "eu-west-1", "users-db")
# One metric, CloudWatch's five statistics: five queries of 12 datapoints for the hour.
METRICS = ["CPUUtilization"]


@pytest.fixture
def cloudwatch(
    moto_server: str, monkeypatch: pytest.MonkeyPatch
) -> Iterator[MisbehavingCloudWatch]:
    """CloudWatch at the misbehaving server, every other service at the moto server."""
    server = MisbehavingCloudWatch(endless_pages).start()
    monkeypatch.setenv("AWS_ENDPOINT_URL_CLOUDWATCH", server.url)
    create_instance("us-east-1", "orders-db")
    yield server
    server.stop()


def collect(
    warehouse: WarehouseResource, aws: dict[str, Any] | None = None, **collection: Any
) -> Any:
    resources = {
        "aws": make_aws(**{"regions": ["us-east-1"], "max_attempts": 2, **(aws or {})}),
        "collection": make_collection(metrics=METRICS, **collection),
        "warehouse": warehouse,
    }
    assert materialize([rds_instances], resources=resources).success
    return materialize(
        [rds_metrics],
        partition_key=partition_key(HOUR_START),
        resources=resources,
        raise_on_error=False,
    )


def failure_line(result: Any) -> str:
    """The line the (last) step failure gives, as the alert shows it."""
    assert not result.success
    error = root_cause(result.get_step_failure_events()[-1].step_failure_data.error)
    message = error.message.removeprefix("dagster._core.definitions.events.Failure: ")
    assert message.count("\n") <= 1, message
    return message.strip()


def fetch_log(warehouse: WarehouseResource) -> list[tuple[str, int, bool]]:
    with warehouse.reader() as conn:
        return conn.execute(
            "SELECT instance_id, datapoints, settled FROM rds_metric_fetches ORDER BY 1"
        ).fetchall()


def assert_healing_asks_again(warehouse: WarehouseResource, lacking: set[Instance]) -> None:
    """The gap sensor's reading of the fetch log: the hour lacks `lacking`, even where Dagster
    counted the partition materialized."""
    with warehouse.reader() as conn:
        settled = RDS_FETCH_LOG.settled(conn, HOUR_START, HOUR_START + HOUR)
        inventory = read_inventory(conn)
    gaps = find_gaps([HOUR_START], inventory, settled, {HOUR_START: HourStatus.MATERIALIZED})
    assert [(gap.hour, gap.lacking) for gap in gaps] == [(HOUR_START, frozenset(lacking))]


def test_endless_pages_stop_at_the_page_bound(
    cloudwatch: MisbehavingCloudWatch, warehouse: WarehouseResource
) -> None:
    result = collect(warehouse)

    # Five queries of 12 datapoints fill one page: at most 2 × 1 + 3 pages, then the chunk
    # fails without a step retry (each page is billed); the gap sensor asks later.
    assert failure_line(result) == (
        "GetMetricData in us-east-1: a request still answered with a NextToken after 5 pages, "
        f"more than 5 queries of {HOUR_START:%Y-%m-%d %H:%M} to "
        f"{HOUR_START + HOUR:%Y-%m-%d %H:%M} UTC can fill; stopped"
    )
    assert len(cloudwatch.requests) == 5
    assert [r.params.get("NextToken") for r in cloudwatch.requests] == [
        None,
        "page-2",
        "page-3",
        "page-4",
        "page-5",
    ]
    assert fetch_log(warehouse) == []
    assert_healing_asks_again(warehouse, {ORDERS})


def test_a_trickled_answer_fails_at_the_chunk_deadline(
    cloudwatch: MisbehavingCloudWatch, warehouse: WarehouseResource
) -> None:
    # A byte every 0.2 s never trips the 1 s read timeout: only the deadline ends it.
    cloudwatch.answer = trickled(EPOCH, pause=0.2)
    result = collect(warehouse, aws={"read_timeout_seconds": 1}, chunk_timeout_seconds=4)

    line = failure_line(result)
    assert line.startswith(
        "GetMetricData in us-east-1: no complete answer within METRICS_CHUNK_TIMEOUT_SECONDS=4 s"
    )
    [request] = cloudwatch.requests  # no botocore retry, no step retry
    whole = len(complete(EPOCH)(request).body)  # type: ignore[arg-type]
    assert 0 < request.bytes_sent < whole
    assert not request.finished
    assert fetch_log(warehouse) == []
    assert_healing_asks_again(warehouse, {ORDERS})


def test_the_run_deadline_commits_what_was_complete(
    cloudwatch: MisbehavingCloudWatch, warehouse: WarehouseResource
) -> None:
    create_instance("eu-west-1", "users-db")
    cloudwatch.answer = by_region(
        {"us-east-1": complete(EPOCH), "eu-west-1": trickled(EPOCH, pause=0.2)}
    )
    result = collect(
        warehouse,
        aws={"regions": ["us-east-1", "eu-west-1"], "read_timeout_seconds": 1},
        run_timeout_seconds=8,
    )

    line = failure_line(result)
    assert line.startswith(
        "GetMetricData in eu-west-1: no complete answer within METRICS_RUN_TIMEOUT_SECONDS=8 s"
    )
    assert line.endswith(
        "(1 of 2 account/region(s) failed; committed, every hour of the window: "
        f"{ACCOUNT_ID}/us-east-1 (1 of 1 instances))"
    )
    assert sorted(r.region for r in cloudwatch.requests) == ["eu-west-1", "us-east-1"]
    # us-east-1's whole answer is stored and settled (5 statistics × 12 periods); eu-west-1's
    # hour is left for the gap sensor.
    assert fetch_log(warehouse) == [("orders-db", 60, True)]
    assert_healing_asks_again(warehouse, {USERS})


MALFORMED: list[Any] = [
    pytest.param(html_page, "an answer that is not JSON (", id="html-with-200"),
    pytest.param(answer_cut_short(EPOCH), "an answer that is not JSON (", id="truncated-json"),
    pytest.param(empty_object, "an answer without MetricDataResults; not stored", id="empty"),
]


@pytest.mark.parametrize(("answer", "says"), MALFORMED)
def test_a_malformed_answer_is_an_error_and_the_hour_stays_a_gap(
    cloudwatch: MisbehavingCloudWatch,
    warehouse: WarehouseResource,
    answer: Callable[[Request], Answer],
    says: str,
) -> None:
    cloudwatch.answer = answer
    result = collect(warehouse)

    assert failure_line(result).startswith(f"GetMetricData in us-east-1: {says}")
    # Retried by the step (another answer may parse), then the run fails.
    assert len(cloudwatch.requests) == STEP_ATTEMPTS
    assert fetch_log(warehouse) == []
    assert_healing_asks_again(warehouse, {ORDERS})


def test_a_page_beyond_max_datapoints_is_refused_while_it_is_read(
    cloudwatch: MisbehavingCloudWatch, warehouse: WarehouseResource
) -> None:
    # 2,000,000 datapoints per query (some 190 MB) where 1,000 were asked.
    cloudwatch.answer = oversized(EPOCH, points=2_000_000)
    result = collect(warehouse, aws={"max_datapoints_per_request": 1000})

    assert failure_line(result) == (
        "GetMetricData in us-east-1: an answer of more than 150,016 bytes, more than the "
        "MaxDatapoints asked can fill; refused"
    )
    assert [r.params["MaxDatapoints"] for r in cloudwatch.requests] == [1000] * STEP_ATTEMPTS
    # The client stopped reading past the bound: the server could not write the rest (what
    # it wrote at all is what the sockets' buffers took, a few MB on loopback).
    assert all(not r.finished and r.bytes_sent < 20_000_000 for r in cloudwatch.requests)
    assert fetch_log(warehouse) == []
    assert_healing_asks_again(warehouse, {ORDERS})


def test_a_page_with_more_datapoints_than_asked_is_refused(
    cloudwatch: MisbehavingCloudWatch, warehouse: WarehouseResource
) -> None:
    # 5 queries × 1,000 datapoints, compact enough to pass the byte bound of 1,000 asked.
    cloudwatch.answer = oversized(EPOCH, points=1000)
    result = collect(warehouse, aws={"max_datapoints_per_request": 1000})

    assert failure_line(result) == (
        "GetMetricData in us-east-1: a page of 5,000 datapoints, more than the 1,000 asked "
        "(MaxDatapoints); refused"
    )
    assert len(cloudwatch.requests) == STEP_ATTEMPTS
    assert fetch_log(warehouse) == []
    assert_healing_asks_again(warehouse, {ORDERS})


def test_a_whole_answer_is_stored_and_settled(
    cloudwatch: MisbehavingCloudWatch, warehouse: WarehouseResource
) -> None:
    """The same server answering well: the bounds let a whole answer through."""
    cloudwatch.answer = complete(EPOCH)
    result = collect(warehouse, aws={"read_timeout_seconds": 1}, chunk_timeout_seconds=30)

    assert result.success
    assert len(cloudwatch.requests) == 1
    assert fetch_log(warehouse) == [("orders-db", 60, True)]
    with warehouse.reader() as conn:
        rows = conn.execute("SELECT ts, average FROM rds_metrics ORDER BY ts").fetchall()
    assert rows == [
        (datetime.fromtimestamp(EPOCH + 300 * n, UTC).replace(tzinfo=None), float(n))
        for n in range(12)
    ]


def test_the_bounds_come_from_the_settings() -> None:
    settings = settings_for_tests(
        METRICS_AWS_CONNECT_TIMEOUT_SECONDS="3",
        METRICS_AWS_READ_TIMEOUT_SECONDS="7",
        METRICS_CHUNK_TIMEOUT_SECONDS="120",
        METRICS_RUN_TIMEOUT_SECONDS="900",
    )
    resources = build_resources(settings)
    client = resources["aws"].client("cloudwatch", "us-east-1")  # type: ignore[attr-defined]
    assert (client.meta.config.connect_timeout, client.meta.config.read_timeout) == (3, 7)
    collection = resources["collection"]
    assert (collection.chunk_timeout_seconds, collection.run_timeout_seconds) == (120, 900)  # type: ignore[attr-defined]
