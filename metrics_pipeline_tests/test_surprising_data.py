"""CloudWatch answers that should not happen, stored correctly or skipped with a reason:
NaN, a period sent twice (same or different values), a point outside the window, a metric
with no data at all."""

import math
from datetime import UTC, timedelta

import pytest
from dagster import instance_for_test, materialize
from moto.cloudwatch.responses import CloudWatchResponse
from moto.core.responses import ActionResult

from metrics_pipeline.warehouse.resources import WarehouseResource
from metrics_pipeline_tests.helpers import make_aws, make_collection, rds_instances, rds_metrics
from metrics_pipeline_tests.moto_fleet import TWO_DAYS_AGO, create_instance

pytestmark = pytest.mark.storage_neutral

HOUR = TWO_DAYS_AGO.replace(tzinfo=UTC)


def surprising_answer(self: CloudWatchResponse) -> ActionResult:
    periods = [HOUR + timedelta(minutes=5 * n) for n in range(12)]
    cpu = [(t, float(n)) for n, t in enumerate(periods)]
    cpu[3] = (periods[3], math.nan)
    cpu += [(periods[5], 5.0), (periods[7], 70.0), (HOUR + timedelta(hours=1), 99.0)]
    results = []
    for query in self._get_params()["MetricDataQueries"]:
        is_cpu = query["MetricStat"]["Metric"]["MetricName"] == "CPUUtilization"
        points = cpu if is_cpu else []  # FreeableMemory: no data at all
        results.append(
            {
                "id": query["Id"],
                "label": query["Id"],
                "timestamps": [t for t, _ in points],
                "values": [v for _, v in points],
                "status_code": "Complete",
            }
        )
    return ActionResult({"MetricDataResults": results})


@pytest.mark.usefixtures("moto_aws")
def test_surprises_are_skipped_with_a_reason(
    monkeypatch: pytest.MonkeyPatch, warehouse: WarehouseResource
) -> None:
    create_instance("us-east-1", "orders-db")
    collection = make_collection(
        metrics=["CPUUtilization", "FreeableMemory"], statistics=["Average"]
    )
    resources = {"aws": make_aws(), "collection": collection, "warehouse": warehouse}
    materialize([rds_instances], resources=resources)
    monkeypatch.setattr(CloudWatchResponse, "get_metric_data", surprising_answer)

    with instance_for_test() as instance:
        result = materialize(
            [rds_metrics],
            partition_key=TWO_DAYS_AGO.strftime("%Y-%m-%d-%H:%M"),
            resources=resources,
            instance=instance,
        )
        logged = [entry.user_message for entry in instance.all_logs(result.run_id)]
    assert result.success
    with warehouse.reader() as conn:
        rows = conn.execute("SELECT metric, ts, average FROM rds_metrics ORDER BY ts").fetchall()
        [(datapoints,)] = conn.execute("SELECT datapoints FROM rds_metric_fetches").fetchall()
        [(skipped,)] = conn.execute("SELECT skipped_datapoints FROM pipeline_runs").fetchall()
    kept = [0, 1, 2, 4, 5, 6, 8, 9, 10, 11]  # 3 was NaN; 7 came twice with different values
    assert rows == [
        ("CPUUtilization", (HOUR + timedelta(minutes=5 * n)).replace(tzinfo=None), float(n))
        for n in kept
    ]
    assert datapoints == 10
    assert skipped == 5  # NaN, outside the window, the repeat of 5, both values of 7
    assert any(
        "Skipped datapoints CloudWatch sent: 1 not a number, 1 outside window, "
        "3 repeated or conflicting" in message
        for message in logged
    )
