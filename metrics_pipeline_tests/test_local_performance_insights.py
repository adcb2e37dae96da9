"""The local AWS's Performance Insights, asked by botocore's own PI client in both protocols PI
is spoken in (JSON 1.1, which botocore 1.44 picks, and smithy-rpc-v2-cbor, which the model
lists first): DB load as the CloudWatch DBLoad of the same minutes, split among keys that add
up to it, PI's limits and errors, its retention, paging, and statements cut at 500 bytes but
whole in their details; the other services answer on the same endpoint as before."""

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
import botocore.session
import numpy as np
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError
from botocore.parsers import RpcV2CBORParser

from metrics_pipeline.local_aws.fleet import ACCOUNT_ID, SimulatedInstance
from metrics_pipeline.local_aws.pi_protocol import (
    CBOR_PATH,
    documented_element_bytes,
    documented_periods,
)
from metrics_pipeline.local_aws.server import LocalAws, start
from metrics_pipeline.local_aws.signals import Profile, minute_values, series
from metrics_pipeline.local_aws.simulator import ClientKeys, account_credentials

NOW = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
CREATED = NOW - timedelta(days=30)
HOUR = timedelta(hours=1)
REGION = "us-east-1"
OTHER_ACCOUNT = "222222222222"
FLEET = [
    SimulatedInstance(
        "orders-pg", REGION, "postgres", "db.r6g.large", 100, CREATED, performance_insights_days=7
    ),
    SimulatedInstance(
        "catalog-my", REGION, "mysql", "db.m6g.large", 100, CREATED, performance_insights_days=31
    ),
    SimulatedInstance("plain-pg", REGION, "postgres", "db.t3.medium", 100, CREATED),
    # Stopped two days before NOW (the simulator's rule): PI has nothing of it since.
    SimulatedInstance(
        "stopped-pg",
        REGION,
        "postgres",
        "db.t3.medium",
        100,
        CREATED,
        stopped=True,
        performance_insights_days=7,
    ),
    SimulatedInstance(
        "later-pg", REGION, "postgres", "db.t3.medium", 100, NOW + HOUR, performance_insights_days=7
    ),
    # Another account's instance of the same name: another database, its own resource id.
    SimulatedInstance(
        "orders-pg",
        REGION,
        "postgres",
        "db.r6g.large",
        100,
        CREATED,
        account_id=OTHER_ACCOUNT,
        performance_insights_days=7,
    ),
]
# Yesterday's peak hour (the simulated load peaks at 14:00 UTC): every minute has sessions.
PEAK = (NOW - timedelta(days=1)).replace(hour=14)
KEYS: ClientKeys = {"aws_access_key_id": "x", "aws_secret_access_key": "x"}
LONG_SQL_PREFIX = "SELECT c.id, c.name, c.email, c.country, c.segment, c.created_at, "


@pytest.fixture(scope="module")
def local() -> Iterator[LocalAws]:
    local = start(FLEET, clock=lambda: NOW)
    assert int(local.url.rsplit(":", 1)[1]) > 0  # the port it bound, not the 0 asked for
    yield local
    local.stop()
    with pytest.raises(urllib.error.URLError):  # stopped: nobody listens any more
        urllib.request.urlopen(f"{local.url}/moto-api/", timeout=5)


@pytest.fixture(scope="module")
def resource_ids(local: LocalAws) -> dict[str, str]:
    rds = boto3.client("rds", endpoint_url=local.url, region_name=REGION, **KEYS)
    return {
        d["DBInstanceIdentifier"]: d["DbiResourceId"]
        for d in rds.describe_db_instances()["DBInstances"]
    }


def pi_client(
    local: LocalAws,
    protocol: str,
    data_path: Path,
    region: str = REGION,
    keys: ClientKeys = KEYS,
    **config: Any,
) -> Any:
    """botocore's PI client; for CBOR, from a copy of botocore's model that lists only it."""
    session = botocore.session.get_session()
    if protocol == "cbor":
        model = session.get_component("data_loader").load_service_model("pi", "service-2")
        model["metadata"]["protocols"] = ["smithy-rpc-v2-cbor"]
        folder = data_path / "pi" / model["metadata"]["apiVersion"]
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "service-2.json").write_text(json.dumps(model))
        session.get_component("data_loader").search_paths.insert(0, str(data_path))
    client = boto3.Session(botocore_session=session).client(
        "pi", endpoint_url=local.url, region_name=region, config=Config(**config), **keys
    )
    expected = {"json": "json", "cbor": "smithy-rpc-v2-cbor"}[protocol]
    assert client.meta.service_model.resolved_protocol == expected
    return client


@pytest.fixture(scope="module", params=["json", "cbor"])
def protocol(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(scope="module")
def pi(local: LocalAws, protocol: str, tmp_path_factory: pytest.TempPathFactory) -> Any:
    return pi_client(local, protocol, tmp_path_factory.mktemp("botocore-data"))


@pytest.fixture(scope="module")
def unchecked_pi(local: LocalAws, protocol: str, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """A client that sends what it is given: the server's checks are what answers."""
    data_path = tmp_path_factory.mktemp("botocore-data")
    return pi_client(local, protocol, data_path, parameter_validation=False)


def profile(local: LocalAws, instance_id: str) -> Profile:
    found = local.simulator.profile(ACCOUNT_ID, REGION, instance_id)
    assert found is not None
    return found


def minutes_of(start: datetime, end: datetime) -> np.ndarray:
    return np.arange(start.timestamp() // 60, end.timestamp() // 60, dtype=np.int64)


def metrics(pi: Any, identifier: str, start: datetime, end: datetime, **kwargs: Any) -> Any:
    return pi.get_resource_metrics(
        ServiceType="RDS", Identifier=identifier, StartTime=start, EndTime=end, **kwargs
    )


def points(entry: dict[str, Any]) -> tuple[list[datetime], list[float]]:
    return (
        [p["Timestamp"].astimezone(UTC) for p in entry["DataPoints"]],
        [p["Value"] for p in entry["DataPoints"]],
    )


def grouped(pi: Any, identifier: str, group: str, **group_by: Any) -> list[dict[str, Any]]:
    """The peak hour's minutes of db.load.avg: the total first, then the group's keys."""
    answer = metrics(
        pi,
        identifier,
        PEAK,
        PEAK + HOUR,
        PeriodInSeconds=60,
        MetricQueries=[{"Metric": "db.load.avg", "GroupBy": {"Group": group, **group_by}}],
    )
    assert "NextToken" not in answer
    return list(answer["MetricList"])


def test_the_documented_periods_and_element_size_are_read_from_botocores_model() -> None:
    assert documented_periods() == (1, 60, 300, 3600, 86400)
    assert documented_element_bytes() == 500


def test_total_load_per_minute_is_cloudwatchs_dbload(
    local: LocalAws, pi: Any, resource_ids: dict[str, str]
) -> None:
    answer = metrics(
        pi,
        resource_ids["orders-pg"],
        PEAK,
        PEAK + HOUR,
        PeriodInSeconds=60,
        PeriodAlignment="START_TIME",
        MetricQueries=[{"Metric": "db.load.avg"}],
    )
    seconds, expected = series(
        profile(local, "orders-pg"), "DBLoad", "Average", 60, PEAK, PEAK + HOUR, NOW
    )
    assert len(expected) == 60  # the peak hour has load in every minute
    assert answer["Identifier"] == resource_ids["orders-pg"]
    assert answer["AlignedStartTime"] == PEAK
    assert answer["AlignedEndTime"] == PEAK + HOUR
    [total] = answer["MetricList"]
    assert total["Key"] == {"Metric": "db.load.avg"}
    timestamps, values = points(total)
    assert timestamps == [datetime.fromtimestamp(s, UTC) for s in seconds.tolist()]
    assert values == pytest.approx(expected.tolist())

    cloudwatch = boto3.client("cloudwatch", endpoint_url=local.url, region_name=REGION, **KEYS)
    served = cloudwatch.get_metric_data(
        MetricDataQueries=[
            {
                "Id": "load",
                "MetricStat": {
                    "Metric": {
                        "Namespace": "AWS/RDS",
                        "MetricName": "DBLoad",
                        "Dimensions": [{"Name": "DBInstanceIdentifier", "Value": "orders-pg"}],
                    },
                    "Period": 60,
                    "Stat": "Average",
                },
            }
        ],
        StartTime=PEAK,
        EndTime=PEAK + HOUR,
        ScanBy="TimestampAscending",
    )["MetricDataResults"][0]
    assert [t.astimezone(UTC) for t in served["Timestamps"]] == timestamps
    assert served["Values"] == pytest.approx(values)


def test_periods_average_the_minutes_and_quiet_minutes_are_zero(
    local: LocalAws, pi: Any, resource_ids: dict[str, str]
) -> None:
    start = PEAK.replace(hour=3)
    end = PEAK.replace(hour=10)
    answer = metrics(
        pi,
        resource_ids["orders-pg"],
        start,
        end,
        PeriodInSeconds=300,
        MetricQueries=[{"Metric": "db.load.avg"}, {"Metric": "db.load.max"}],
    )
    minute_load = minute_values(profile(local, "orders-pg"), "DBLoad", minutes_of(start, end))
    assert (minute_load == 0).any() and (minute_load > 0).any()  # quiet at night, not later
    average, highest = answer["MetricList"]
    period_ends = [start + timedelta(minutes=5 * n) for n in range(1, 85)]  # END_TIME
    assert points(average)[0] == points(highest)[0] == period_ends
    assert points(average)[1] == pytest.approx(minute_load.reshape(-1, 5).mean(1).tolist())
    assert points(highest)[1] == pytest.approx(minute_load.reshape(-1, 5).max(1).tolist())
    # CloudWatch has DBLoad only for minutes with sessions: its sums are PI's totals.
    seconds, sums = series(profile(local, "orders-pg"), "DBLoad", "Sum", 300, start, end, NOW)
    by_end = dict(zip(*points(average), strict=True))
    assert [by_end[datetime.fromtimestamp(s + 300, UTC)] * 5 for s in seconds] == pytest.approx(
        sums.tolist()
    )
    assert sum(v == 0 for v in by_end.values()) == 84 - len(sums)


def test_a_one_second_period_repeats_its_minutes_load(
    local: LocalAws, pi: Any, resource_ids: dict[str, str]
) -> None:
    end = PEAK + timedelta(minutes=3)
    answer = metrics(
        pi,
        resource_ids["orders-pg"],
        PEAK,
        end,
        PeriodInSeconds=1,
        PeriodAlignment="START_TIME",
        MetricQueries=[{"Metric": "db.load.avg"}],
    )
    timestamps, values = points(answer["MetricList"][0])
    assert timestamps == [PEAK + timedelta(seconds=n) for n in range(180)]
    minute_load = minute_values(profile(local, "orders-pg"), "DBLoad", minutes_of(PEAK, end))
    assert values == pytest.approx(np.repeat(minute_load, 60).tolist())


def test_without_a_period_one_is_chosen_for_at_most_200_datapoints(
    pi: Any, resource_ids: dict[str, str]
) -> None:
    answer = metrics(
        pi, resource_ids["orders-pg"], PEAK, PEAK + HOUR, MetricQueries=[{"Metric": "db.load.avg"}]
    )
    timestamps, _ = points(answer["MetricList"][0])
    assert timestamps == [PEAK + timedelta(minutes=n) for n in range(1, 61)]
    # A whole day that has passed whatever the time of day the test runs at.
    day_start = NOW - 25 * HOUR
    day = metrics(
        pi,
        resource_ids["orders-pg"],
        day_start,
        day_start + 24 * HOUR,
        MetricQueries=[{"Metric": "db.load.avg"}],
    )
    assert len(day["MetricList"][0]["DataPoints"]) == 24


@pytest.mark.parametrize(
    ("group", "count"),
    [
        ("db.wait_event", 6),
        ("db.wait_event_type", 5),
        ("db.sql_tokenized", 5),
        ("db.sql", 5),
        ("db.user", 3),
        ("db.host", 4),
        ("db", 3),
    ],
)
def test_a_groups_keys_add_up_to_the_total(
    pi: Any, resource_ids: dict[str, str], group: str, count: int
) -> None:
    total, *keys = grouped(pi, resource_ids["orders-pg"], group, Limit=25)
    assert len(keys) == count
    assert all(key["Key"]["Dimensions"] for key in keys)
    sums = np.sum([points(key)[1] for key in keys], axis=0)
    assert sums.tolist() == pytest.approx(points(total)[1])


def test_wait_events_are_the_engines_and_cpu_is_cpu_utilizations_share(
    local: LocalAws, pi: Any, resource_ids: dict[str, str]
) -> None:
    total, *waits = grouped(pi, resource_ids["catalog-my"], "db.wait_event")
    assert {w["Key"]["Dimensions"]["db.wait_event.name"] for w in waits} == {
        "CPU",
        "wait/io/file/innodb/innodb_data_file",
        "wait/io/table/sql/handler",
        "wait/synch/mutex/innodb/buf_pool_mutex",
        "wait/lock/table/sql/handler",
        "wait/io/socket/sql/client_connection",
    }
    [cpu] = [w for w in waits if w["Key"]["Dimensions"]["db.wait_event.name"] == "CPU"]
    assert cpu["Key"]["Dimensions"] == {"db.wait_event.name": "CPU", "db.wait_event.type": "CPU"}
    utilization = minute_values(
        profile(local, "catalog-my"), "CPUUtilization", minutes_of(PEAK, PEAK + HOUR)
    )
    assert points(cpu)[1] == pytest.approx(
        (np.array(points(total)[1]) * utilization / 100).tolist()
    )


def test_a_limit_keeps_the_keys_with_the_most_load(pi: Any, resource_ids: dict[str, str]) -> None:
    identifier = resource_ids["orders-pg"]
    total, *top = grouped(pi, identifier, "db.wait_event", Limit=2)
    described = pi.describe_dimension_keys(
        ServiceType="RDS",
        Identifier=identifier,
        StartTime=PEAK,
        EndTime=PEAK + HOUR,
        Metric="db.load.avg",
        GroupBy={"Group": "db.wait_event"},
    )["Keys"]
    assert len(described) == 6
    assert [t["Key"]["Dimensions"] for t in top] == [k["Dimensions"] for k in described[:2]]
    assert described[0]["Total"] > described[1]["Total"] > described[2]["Total"]
    assert [np.mean(points(t)[1]) for t in top] == pytest.approx(
        [k["Total"] for k in described[:2]]
    )
    assert np.sum([points(t)[1] for t in top]) < np.sum(points(total)[1])


def test_only_the_dimensions_asked_for_are_returned(pi: Any, resource_ids: dict[str, str]) -> None:
    _, *users = grouped(pi, resource_ids["orders-pg"], "db.user", Dimensions=["db.user.name"])
    assert sorted(u["Key"]["Dimensions"]["db.user.name"] for u in users) == [
        "admin",
        "app",
        "reporting",
    ]
    assert all(list(u["Key"]["Dimensions"]) == ["db.user.name"] for u in users)


def test_a_filter_keeps_the_load_of_the_matching_keys(
    pi: Any, resource_ids: dict[str, str]
) -> None:
    identifier = resource_ids["orders-pg"]
    _, *users = grouped(pi, identifier, "db.user")
    [app] = [u for u in users if u["Key"]["Dimensions"]["db.user.name"] == "app"]
    of_app = metrics(
        pi,
        identifier,
        PEAK,
        PEAK + HOUR,
        PeriodInSeconds=60,
        MetricQueries=[
            {
                "Metric": "db.load.avg",
                "Filter": {"db.user.name": "app", "db.wait_event.type": "IO"},
                "GroupBy": {"Group": "db.wait_event"},
            }
        ],
    )["MetricList"]
    total, *waits = of_app
    assert sorted(w["Key"]["Dimensions"]["db.wait_event.name"] for w in waits) == [
        "IO:DataFileRead",
        "IO:WALWrite",
    ]
    assert np.sum([points(w)[1] for w in waits], axis=0).tolist() == pytest.approx(points(total)[1])
    assert all(
        0 < t < a for t, a in zip(points(total)[1], points(app)[1], strict=True)
    )  # app's sessions waiting on IO: part of app's load


def test_dimension_keys_total_the_window_and_partition_it(
    pi: Any, resource_ids: dict[str, str]
) -> None:
    identifier = resource_ids["orders-pg"]
    total = points(grouped(pi, identifier, "db.user")[0])[1]
    answer = pi.describe_dimension_keys(
        ServiceType="RDS",
        Identifier=identifier,
        StartTime=PEAK,
        EndTime=PEAK + HOUR,
        Metric="db.load.avg",
        GroupBy={"Group": "db.wait_event_type"},
        PartitionBy={"Group": "db.user", "Dimensions": ["db.user.name"]},
    )
    assert answer["AlignedStartTime"] == PEAK
    assert sorted(p["Dimensions"]["db.user.name"] for p in answer["PartitionKeys"]) == [
        "admin",
        "app",
        "reporting",
    ]
    keys = answer["Keys"]
    assert sorted(k["Dimensions"]["db.wait_event_type.name"] for k in keys) == [
        "CPU",
        "Client",
        "IO",
        "LWLock",
        "Lock",
    ]
    assert sum(k["Total"] for k in keys) == pytest.approx(np.mean(total))
    for key in keys:
        assert len(key["Partitions"]) == 3
        assert sum(key["Partitions"]) == pytest.approx(key["Total"])


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (
            {"MetricQueries": [{"Metric": "db.load.avg"}] * 16},
            "at 'MetricQueries' failed to satisfy constraint: "
            "Member must have length less than or equal to 15",
        ),
        (
            {"MetricQueries": []},
            "Value [] at 'MetricQueries' failed to satisfy constraint: "
            "Member must have length greater than or equal to 1",
        ),
        (
            {"MaxResults": 26},
            "Value 26 at 'MaxResults' failed to satisfy constraint: "
            "Member must have value less than or equal to 25",
        ),
        (
            {"MaxResults": -1},
            "Value -1 at 'MaxResults' failed to satisfy constraint: "
            "Member must have value greater than or equal to 0",
        ),
        (
            {
                "MetricQueries": [
                    {"Metric": "db.load.avg", "GroupBy": {"Group": "db.user", "Limit": 26}}
                ]
            },
            "Value 26 at 'MetricQueries.1.GroupBy.Limit' failed to satisfy constraint: "
            "Member must have value less than or equal to 25",
        ),
        (
            {
                "MetricQueries": [
                    {"Metric": "db.load.avg", "GroupBy": {"Group": "db.user", "Limit": 0}}
                ]
            },
            "Value 0 at 'MetricQueries.1.GroupBy.Limit' failed to satisfy constraint: "
            "Member must have value greater than or equal to 1",
        ),
        (
            {"PeriodInSeconds": 120},
            "The parameter PeriodInSeconds must be one of 1, 60, 300, 3600, 86400.",
        ),
        ({"EndTime": PEAK}, "The parameter StartTime must be earlier than EndTime."),
        (
            {"ServiceType": "EC2"},
            "Value 'EC2' at 'ServiceType' failed to satisfy constraint: "
            "Member must satisfy enum value set: [RDS, DOCDB]",
        ),
        (
            {"MetricQueries": [{"Metric": "db.load.p99"}]},
            "The specified statistic is not a known statistic: db.load.p99",
        ),
        (
            {"MetricQueries": [{"Metric": "db.load.avg", "GroupBy": {"Group": "db.application"}}]},
            "This group is not a known group: db.application is not valid for current resource",
        ),
        (
            {"NextToken": "bm90LWEtdG9rZW4="},
            "The parameter NextToken is not valid.",
        ),
    ],
    ids=[
        "16-queries",
        "no-query",
        "26-results",
        "negative-results",
        "limit-26",
        "limit-0",
        "period",
        "empty-window",
        "service-type",
        "statistic",
        "group",
        "next-token",
    ],
)
def test_get_resource_metrics_refuses_what_pi_refuses(
    unchecked_pi: Any, resource_ids: dict[str, str], call: dict[str, Any], message: str
) -> None:
    request = {
        "ServiceType": "RDS",
        "Identifier": resource_ids["orders-pg"],
        "StartTime": PEAK,
        "EndTime": PEAK + HOUR,
        "MetricQueries": [{"Metric": "db.load.avg"}],
        **call,
    }
    with pytest.raises(ClientError) as refused:
        unchecked_pi.get_resource_metrics(**request)
    assert refused.value.response["Error"]["Code"] == "InvalidArgumentException"
    assert refused.value.response["Error"]["Message"].endswith(message)
    assert refused.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (
            {"GroupBy": {"Group": "db.sql", "Limit": 26}},
            "Value 26 at 'GroupBy.Limit' failed to satisfy constraint: "
            "Member must have value less than or equal to 25",
        ),
        (
            {"MaxResults": 26},
            "Value 26 at 'MaxResults' failed to satisfy constraint: "
            "Member must have value less than or equal to 25",
        ),
        (
            {"PartitionBy": {"Group": "db.user", "Limit": 0}},
            "Value 0 at 'PartitionBy.Limit' failed to satisfy constraint: "
            "Member must have value greater than or equal to 1",
        ),
        (
            {"GroupBy": {"Group": "db.user", "Dimensions": ["db.host.name"]}},
            "Dimensions: db.host.name not in the group db.user",
        ),
        ({"Filter": {"db.colour": "red"}}, "Filter: db.colour is not a known dimension"),
        (
            {"Metric": "db.load.max"},
            "Metric: db.load.max is not valid here (db.load.avg, db.sampledload.avg)",
        ),
        (
            {"AdditionalMetrics": ["db.sql_tokenized.stats.calls_per_sec.avg"]},
            "AdditionalMetrics: the local AWS simulates no per-SQL metrics",
        ),
    ],
    ids=[
        "limit",
        "results",
        "partition-limit",
        "dimension",
        "filter",
        "metric",
        "additional-metrics",
    ],
)
def test_describe_dimension_keys_refuses_what_pi_refuses(
    unchecked_pi: Any, resource_ids: dict[str, str], call: dict[str, Any], message: str
) -> None:
    request = {
        "ServiceType": "RDS",
        "Identifier": resource_ids["orders-pg"],
        "StartTime": PEAK,
        "EndTime": PEAK + HOUR,
        "Metric": "db.load.avg",
        "GroupBy": {"Group": "db.sql"},
        **call,
    }
    with pytest.raises(ClientError) as refused:
        unchecked_pi.describe_dimension_keys(**request)
    assert refused.value.response["Error"]["Code"] == "InvalidArgumentException"
    assert refused.value.response["Error"]["Message"] == message


def test_an_instance_without_performance_insights_is_not_authorized(
    local: LocalAws, pi: Any, resource_ids: dict[str, str], tmp_path: Path, protocol: str
) -> None:
    def refused(client: Any, identifier: str, service_type: str = "RDS") -> str:
        with pytest.raises(client.exceptions.NotAuthorizedException) as error:
            client.get_resource_metrics(
                ServiceType=service_type,
                Identifier=identifier,
                StartTime=PEAK,
                EndTime=PEAK + HOUR,
                MetricQueries=[{"Metric": "db.load.avg"}],
            )
        return str(error.value.response["Error"]["Message"])

    plain = resource_ids["plain-pg"]
    assert refused(pi, plain) == (
        f"The resource {plain} for service type RDS is not authorized for this account"
    )
    with_pi = resource_ids["orders-pg"]
    assert refused(pi, with_pi, "DOCDB") == (
        f"The resource {with_pi} for service type DOCDB is not authorized for this account"
    )
    assert refused(pi, "db-NOSUCHINSTANCE") == (
        "The resource db-NOSUCHINSTANCE for service type RDS is not authorized for this account"
    )
    other_region = pi_client(local, protocol, tmp_path, region="eu-west-1")
    assert refused(other_region, with_pi) == (
        f"The resource {with_pi} for service type RDS is not authorized for this account"
    )
    later, other = (
        next(i for i in FLEET if i.instance_id == name and i.account_id == account).dbi_resource_id
        for name, account in (("later-pg", ACCOUNT_ID), ("orders-pg", OTHER_ACCOUNT))
    )
    assert refused(pi, later) == (  # not created yet
        f"The resource {later} for service type RDS is not authorized for this account"
    )
    assert refused(pi, other) == (  # another account's
        f"The resource {other} for service type RDS is not authorized for this account"
    )
    as_other = pi_client(
        local, protocol, tmp_path, keys=account_credentials(local.url, OTHER_ACCOUNT)
    )
    answer = as_other.get_resource_metrics(
        ServiceType="RDS",
        Identifier=other,
        StartTime=PEAK,
        EndTime=PEAK + HOUR,
        MetricQueries=[{"Metric": "db.load.avg"}],
    )
    assert len(answer["MetricList"][0]["DataPoints"]) == 60


def test_nothing_older_than_the_instances_retention_is_returned(
    pi: Any, resource_ids: dict[str, str]
) -> None:
    start, end = NOW - timedelta(days=9), NOW - timedelta(days=6)
    week = metrics(
        pi,
        resource_ids["orders-pg"],
        start,
        end,
        PeriodInSeconds=3600,
        PeriodAlignment="START_TIME",
        MetricQueries=[{"Metric": "db.load.avg"}],
    )
    timestamps, _ = points(week["MetricList"][0])
    assert timestamps == [NOW - timedelta(days=7) + n * HOUR for n in range(24)]
    month = metrics(
        pi,
        resource_ids["catalog-my"],
        start,
        end,
        PeriodInSeconds=3600,
        PeriodAlignment="START_TIME",
        MetricQueries=[{"Metric": "db.load.avg"}],
    )
    timestamps, _ = points(month["MetricList"][0])
    assert timestamps == [start + n * HOUR for n in range(72)]


def test_a_stopped_instance_has_no_load_since_it_stopped(
    pi: Any, resource_ids: dict[str, str]
) -> None:
    start = NOW - timedelta(days=3)
    answer = metrics(
        pi,
        resource_ids["stopped-pg"],
        start,
        NOW,
        PeriodInSeconds=3600,
        PeriodAlignment="START_TIME",
        MetricQueries=[{"Metric": "db.load.avg"}],
    )
    timestamps, _ = points(answer["MetricList"][0])
    assert timestamps == [start + n * HOUR for n in range(24)]


def test_get_resource_metrics_pages_its_metric_list(pi: Any, resource_ids: dict[str, str]) -> None:
    request = {
        "ServiceType": "RDS",
        "Identifier": resource_ids["orders-pg"],
        "StartTime": PEAK,
        "EndTime": PEAK + HOUR,
        "PeriodInSeconds": 300,
        "MetricQueries": [
            {"Metric": "db.load.avg", "GroupBy": {"Group": "db.wait_event"}},
            {"Metric": "db.load.avg", "GroupBy": {"Group": "db.user"}},
        ],
    }
    whole = pi.get_resource_metrics(**request)["MetricList"]
    assert len(whole) == 1 + 6 + 1 + 3
    pages = []
    token: dict[str, str] = {}
    while True:
        answer = pi.get_resource_metrics(**request, MaxResults=4, **token)
        pages.append(answer["MetricList"])
        if "NextToken" not in answer:
            break
        token = {"NextToken": answer["NextToken"]}
    assert [len(p) for p in pages] == [4, 4, 3]
    assert [entry for p in pages for entry in p] == whole


def test_describe_dimension_keys_pages_its_keys(pi: Any, resource_ids: dict[str, str]) -> None:
    request = {
        "ServiceType": "RDS",
        "Identifier": resource_ids["orders-pg"],
        "StartTime": PEAK,
        "EndTime": PEAK + HOUR,
        "Metric": "db.load.avg",
        "GroupBy": {"Group": "db.sql"},
    }
    whole = pi.describe_dimension_keys(**request)["Keys"]
    first = pi.describe_dimension_keys(**request, MaxResults=2)
    second = pi.describe_dimension_keys(**request, MaxResults=2, NextToken=first["NextToken"])
    last = pi.describe_dimension_keys(**request, MaxResults=2, NextToken=second["NextToken"])
    assert "NextToken" not in last
    assert [len(a["Keys"]) for a in (first, second, last)] == [2, 2, 1]
    assert first["Keys"] + second["Keys"] + last["Keys"] == whole


def test_statements_are_cut_at_500_bytes_and_whole_in_their_details(
    pi: Any, resource_ids: dict[str, str]
) -> None:
    def statements(identifier: str, group: str) -> list[dict[str, str]]:
        return [
            key["Dimensions"]
            for key in pi.describe_dimension_keys(
                ServiceType="RDS",
                Identifier=identifier,
                StartTime=PEAK,
                EndTime=PEAK + HOUR,
                Metric="db.load.avg",
                GroupBy={"Group": group},
            )["Keys"]
        ]

    identifier = resource_ids["orders-pg"]
    digests = {d["db.sql_tokenized.statement"] for d in statements(identifier, "db.sql_tokenized")}
    assert (
        "UPDATE inventory SET quantity = quantity - $1 WHERE product_id = $2 AND quantity >= $3"
        in digests
    )
    [long_digest] = [d for d in digests if d.startswith(LONG_SQL_PREFIX)]
    assert len(long_digest.encode()) == 500
    assert all(len(d.encode()) < 500 for d in digests - {long_digest})
    my_digests = {
        d["db.sql_tokenized.statement"]
        for d in statements(resource_ids["catalog-my"], "db.sql_tokenized")
    }
    assert (
        "UPDATE inventory SET quantity = quantity - ? WHERE product_id = ? AND quantity >= ?"
        in my_digests
    )

    [long_sql] = [
        s
        for s in statements(identifier, "db.sql")
        if s["db.sql.statement"].startswith(LONG_SQL_PREFIX)
    ]
    assert len(long_sql["db.sql.statement"].encode()) == 500
    details = pi.get_dimension_key_details(
        ServiceType="RDS",
        Identifier=identifier,
        Group="db.sql",
        GroupIdentifier=long_sql["db.sql.id"],
        RequestedDimensions=["statement"],
    )["Dimensions"]
    [detail] = details
    assert detail["Dimension"] == "db.sql.statement"
    assert detail["Status"] == "AVAILABLE"
    full = detail["Value"]
    assert len(full.encode()) == 829
    assert full.startswith(long_sql["db.sql.statement"])
    assert full.endswith(
        "HAVING SUM(o.total) > 1000 ORDER BY lifetime_value DESC, last_order DESC LIMIT 100"
    )


@pytest.mark.parametrize(
    ("call", "message"),
    [
        ({"GroupIdentifier": "NOSUCHSQL"}, "GroupIdentifier: NOSUCHSQL is not a db.sql.id here"),
        (
            {"Group": "db.execution_plan"},
            "Group: the local AWS keeps details of db.sql only, not db.execution_plan",
        ),
        (
            {"RequestedDimensions": ["db.sql.plan"]},
            "RequestedDimensions: db.sql.plan not in db.sql",
        ),
    ],
    ids=["identifier", "group", "dimension"],
)
def test_dimension_key_details_refuse_what_they_do_not_have(
    pi: Any, resource_ids: dict[str, str], call: dict[str, Any], message: str
) -> None:
    with pytest.raises(pi.exceptions.InvalidArgumentException) as refused:
        pi.get_dimension_key_details(
            **{
                "ServiceType": "RDS",
                "Identifier": resource_ids["orders-pg"],
                "Group": "db.sql",
                "GroupIdentifier": "NOSUCHSQL",
                **call,
            }
        )
    assert refused.value.response["Error"]["Message"] == message


def test_cloudwatch_rds_and_sts_still_answer_on_the_same_endpoint(
    local: LocalAws, resource_ids: dict[str, str]
) -> None:
    assert sorted(resource_ids) == ["catalog-my", "orders-pg", "plain-pg", "stopped-pg"]
    sts = boto3.client("sts", endpoint_url=local.url, region_name=REGION, **KEYS)
    assert sts.get_caller_identity()["Account"] == ACCOUNT_ID
    cloudwatch = boto3.client("cloudwatch", endpoint_url=local.url, region_name=REGION, **KEYS)
    cloudwatch.put_metric_data(
        Namespace="Local/PiTest", MetricData=[{"MetricName": "Answers", "Value": 42.0}]
    )
    listed = cloudwatch.list_metrics(Namespace="Local/PiTest")["Metrics"]
    assert [m["MetricName"] for m in listed] == ["Answers"]


def test_requests_pi_cannot_read_are_refused_in_its_protocol(local: LocalAws) -> None:
    def post(path: str, headers: dict[str, str], body: bytes) -> tuple[int, Any, bytes]:
        request = urllib.request.Request(local.url + path, body, headers, method="POST")
        with pytest.raises(urllib.error.HTTPError) as answered:
            urllib.request.urlopen(request)
        return answered.value.code, answered.value.headers, answered.value.read()

    signed = "AWS4-HMAC-SHA256 Credential=x/20250101/us-east-1/pi/aws4_request, Signature=0"
    status, headers, body = post(
        CBOR_PATH + "GetResourceMetrics",
        {
            "smithy-protocol": "rpc-v2-cbor",
            "Content-Type": "application/cbor",
            "Authorization": signed,
        },
        b"\xff\xff",
    )
    assert (status, headers["Content-Type"], headers["smithy-protocol"]) == (
        400,
        "application/cbor",
        "rpc-v2-cbor",
    )
    parser = RpcV2CBORParser()
    error = parser.parse_data_item(parser.get_peekable_stream_from_bytes(body))
    assert error["__type"] == "InvalidArgumentException"
    assert error["message"].startswith("The request body is not CBOR")

    status, headers, body = post(
        "/",
        {
            "X-Amz-Target": "PerformanceInsightsv20180227.DescribeDimensionKeys",
            "Content-Type": "application/x-amz-json-1.1",
        },
        json.dumps(
            {
                "ServiceType": "RDS",
                "Identifier": "db-ANY",
                "StartTime": PEAK.timestamp(),
                "EndTime": (PEAK + HOUR).timestamp(),
                "Metric": "db.load.avg",
                "GroupBy": {"Group": "db.sql"},
            }
        ).encode(),
    )
    assert (status, headers["Content-Type"]) == (400, "application/x-amz-json-1.1")
    assert json.loads(body) == {
        "__type": "NotAuthorizedException",
        "message": "The resource db-ANY for service type RDS is not authorized for this account",
    }
