"""Throttled GetMetricData calls: retried by botocore, or a clear failure once retries run out."""

import time
from datetime import timedelta
from typing import Any

import pytest
from dagster import DagsterEventType, materialize
from moto.cloudwatch.responses import CloudWatchResponse

from metrics_pipeline.collection.cloudwatch import RequestStats
from metrics_pipeline.local_aws import cloudwatch as local_cloudwatch
from metrics_pipeline.quality.alerts import root_cause
from metrics_pipeline.warehouse.resources import WarehouseResource
from metrics_pipeline_tests.helpers import make_aws, make_collection, rds_instances, rds_metrics
from metrics_pipeline_tests.moto_fleet import TWO_DAYS_AGO, create_instance, put_metrics

HOUR = TWO_DAYS_AGO

pytestmark = [pytest.mark.usefixtures("moto_aws"), pytest.mark.storage_neutral]


@pytest.fixture
def throttle_first(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """moto answers the first `count` GetMetricData calls with CloudWatch's throttling error."""
    state = {"count": 0, "seen": 0}

    def throttled(self: CloudWatchResponse) -> Any:
        state["seen"] += 1
        if state["seen"] <= state["count"]:
            raise local_cloudwatch.Throttling()
        return local_cloudwatch.get_metric_data(self)

    monkeypatch.setattr(CloudWatchResponse, "get_metric_data", throttled)
    return state


def run(warehouse: WarehouseResource, **aws_overrides: Any) -> Any:
    aws = make_aws(regions=["us-east-1"], **aws_overrides)
    collection = make_collection(metrics=["CPUUtilization"])
    materialize([rds_instances], resources={"aws": aws, "warehouse": warehouse})
    return materialize(
        [rds_metrics],
        partition_key=HOUR.strftime("%Y-%m-%d-%H:%M"),
        resources={"aws": aws, "collection": collection, "warehouse": warehouse},
        raise_on_error=False,
    )


def test_throttled_calls_are_retried(
    warehouse: WarehouseResource, throttle_first: dict[str, int]
) -> None:
    create_instance("us-east-1", "orders-db")
    expected = put_metrics(
        "us-east-1", ["orders-db"], ["CPUUtilization"], HOUR, HOUR + timedelta(hours=1)
    )
    throttle_first["count"] = 2
    result = run(warehouse, max_attempts=4)

    assert result.success
    [event] = result.asset_materializations_for_node("rds_metrics")
    assert event.metadata["throttled_calls"].value == 2
    assert event.metadata["retried_calls"].value == 2
    assert event.metadata["cloudwatch_requests"].value == 1
    assert event.metadata["rows_written"].value == len(expected) // 5


def test_exhausted_retries_fail_the_run_clearly(
    warehouse: WarehouseResource, throttle_first: dict[str, int]
) -> None:
    create_instance("us-east-1", "orders-db")
    throttle_first["count"] = 100
    result = run(warehouse, max_attempts=2)

    assert not result.success
    error = root_cause(result.get_step_failure_events()[0].step_failure_data.error)
    assert error.message == (
        "dagster._core.definitions.events.Failure: GetMetricData in us-east-1 failed after 2 "
        "attempt(s): Throttling: Rate exceeded\n"
    )
    # Throttling is transient: the step retry policy ran the step three more times.
    retries = [e for e in result.all_events if e.event_type == DagsterEventType.STEP_UP_FOR_RETRY]
    assert len(retries) == 3
    assert throttle_first["seen"] == 2 * 4


def test_request_rate_is_capped_per_region() -> None:
    aws = make_aws(regions=["us-east-1"], max_requests_per_second=4)
    stats = RequestStats()
    client = aws.client("rds", "us-east-1", stats)
    started = time.monotonic()
    for _ in range(6):
        client.describe_db_instances()
    # The bucket starts empty and refills at 4 per second: six calls take 1.5 s, less the few
    # milliseconds by which botocore's own clock and sleep can release a token early (1.497 s
    # was seen); uncapped, six calls to moto take a few milliseconds.
    assert time.monotonic() - started >= 1.45
    assert stats.http_requests == 6
