"""The local AWS: real limits, paging, determinism, realistic shapes, throttling, late data,
outages and a fleet that changes while it runs."""

import re
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import boto3
import numpy as np
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from metrics_pipeline.collection.cloudwatch import build_queries
from metrics_pipeline.local_aws.fleet import SimulatedInstance, default_fleet, simulated_accounts
from metrics_pipeline.local_aws.server import LocalAws, start
from metrics_pipeline.local_aws.signals import MINUTE, latest_busy_hour, minute_values, series
from metrics_pipeline.local_aws.simulator import Faults
from metrics_pipeline.warehouse.instances import Instance
from metrics_pipeline_tests.helpers import busy_hour

NOW = datetime.now(UTC).replace(second=0, microsecond=0)
HOUR = NOW.replace(minute=0) - timedelta(hours=3)
STATS = ["Average", "Minimum", "Maximum", "Sum", "SampleCount"]


@pytest.fixture
def local_aws() -> Iterator[LocalAws]:
    local = start(default_fleet(NOW))
    yield local
    local.stop()


def client(
    local: LocalAws, service: str = "cloudwatch", region: str = "us-east-1", attempts: int = 1
):
    return boto3.client(
        service,
        region_name=region,
        endpoint_url=local.url,
        aws_access_key_id="local",
        aws_secret_access_key="local",
        config=Config(retries={"mode": "standard", "total_max_attempts": attempts}),
    )


def cpu_query(instance_id: str = "orders-db", stat: str = "Average", period: int = 300) -> dict:
    [query] = build_queries([Instance("1", "us-east-1", instance_id)], ["CPUUtilization"], [stat])
    return query.to_api(period)


def fetch(
    cw, queries: list[dict], start: datetime, end: datetime, page_size: int | None = None
) -> list[dict]:
    config = {"PageSize": page_size} if page_size else {}
    pages = cw.get_paginator("get_metric_data").paginate(
        MetricDataQueries=queries, StartTime=start, EndTime=end, ScanBy="TimestampAscending",
        PaginationConfig=config,
    )  # fmt: skip
    return list(pages)


def test_fleet_is_in_rds_with_its_details(local_aws: LocalAws) -> None:
    east = client(local_aws, "rds").describe_db_instances()["DBInstances"]
    west = client(local_aws, "rds", "eu-west-1").describe_db_instances()["DBInstances"]
    by_id = {d["DBInstanceIdentifier"]: d for d in east + west}
    assert set(by_id) == {i.instance_id for i in default_fleet(NOW)}
    assert {d["Engine"] for d in by_id.values()} >= {"postgres", "mysql", "mariadb"}
    assert by_id["legacy-db"]["DBInstanceStatus"] == "stopped"
    assert by_id["reports-db"]["InstanceCreateTime"] > NOW - timedelta(hours=2)  # the fleet's clock
    assert {t["Key"]: t["Value"] for t in by_id["orders-db"]["TagList"]} == {
        "team": "shop",
        "env": "prod",
    }


def test_every_database_has_its_own_dbi_resource_id(local_aws: LocalAws) -> None:
    described = [
        (d["DBInstanceIdentifier"], d["DbiResourceId"])
        for region in ("us-east-1", "eu-west-1")
        for d in client(local_aws, "rds", region).describe_db_instances()["DBInstances"]
    ]
    assert sorted(described) == sorted(
        (i.instance_id, i.dbi_resource_id) for i in default_fleet(NOW)
    )
    assert len({dbi for _, dbi in described}) == len(described)
    assert all(re.fullmatch(r"db-[A-Z2-7]{26}", dbi) for _, dbi in described)


def test_values_are_generated_deterministically(local_aws: LocalAws) -> None:
    cw = client(local_aws)
    window = (HOUR, HOUR + timedelta(hours=1))
    first = fetch(cw, [cpu_query()], *window)[0]["MetricDataResults"][0]
    again = fetch(cw, [cpu_query()], *window)[0]["MetricDataResults"][0]
    assert first["Values"] == again["Values"] and len(first["Values"]) == 12
    profile = default_fleet(NOW)[0].profile(7)
    seconds, values = series(profile, "CPUUtilization", "Average", 300, *window, datetime.now(UTC))
    assert [t.timestamp() for t in first["Timestamps"]] == seconds.tolist()
    assert first["Values"] == pytest.approx(values.tolist())
    other_seed = default_fleet(NOW)[0].profile(8)
    _, different = series(other_seed, "CPUUtilization", "Average", 300, *window, datetime.now(UTC))
    assert not np.allclose(values, different)


def test_statistics_agree_with_each_other(local_aws: LocalAws) -> None:
    cw = client(local_aws)
    results = fetch(
        cw, [cpu_query(stat=s) | {"Id": s.lower()} for s in STATS], HOUR, HOUR + timedelta(hours=1)
    )
    by_stat = {r["Id"]: np.array(r["Values"]) for r in results[0]["MetricDataResults"]}
    assert np.all(by_stat["samplecount"] == 5)  # five one-minute samples per 5-minute period
    assert np.allclose(by_stat["sum"], by_stat["average"] * 5)
    assert np.all(by_stat["minimum"] <= by_stat["average"])
    assert np.all(by_stat["average"] <= by_stat["maximum"])


def test_shapes_look_like_databases() -> None:
    profile = default_fleet(NOW)[0].profile(7)
    two_weeks_ago = (NOW - timedelta(days=14)).replace(hour=0, minute=0)
    week_start = two_weeks_ago - timedelta(days=two_weeks_ago.weekday())  # a Monday, in its life
    week_end = week_start + timedelta(days=7)
    t, cpu = series(profile, "CPUUtilization", "Average", 3600, week_start, week_end, week_end)
    hours = (t // 3600) % 24
    afternoon = cpu[hours == 14].mean()
    night = cpu[hours == 3].mean()
    assert afternoon > night + 10  # daily cycle
    weekday = cpu[: 5 * 24].mean()
    weekend = cpu[5 * 24 :].mean()
    assert weekday > weekend  # weekly cycle
    _, connections = series(
        profile, "DatabaseConnections", "Average", 3600, week_start, week_end, week_end
    )
    assert np.corrcoef(cpu, connections)[0, 1] > 0.8  # connections follow CPU
    _, free = series(profile, "FreeStorageSpace", "Average", 3600, week_start, week_end, week_end)
    assert free[-1] < free[0]  # a slow storage leak
    assert np.all((cpu >= 0) & (cpu <= 100))


@pytest.mark.parametrize(
    "day",
    [datetime(2026, 12, 7, 0, 25, tzinfo=UTC), datetime(2026, 12, 5, 0, 25, tzinfo=UTC), NOW],
    ids=["monday", "saturday", "now"],
)
def test_every_database_has_load_in_each_minute_of_the_busy_hour_and_the_one_before(
    day: datetime,
) -> None:
    """What the tests that need load (statements, wait events) rely on, whatever the hour
    they run at, each hour of a weekday and of a weekend: a recent hour may be a night
    without any, and the busy hour is recent enough for a dashboard's last day."""
    for now in (day + timedelta(hours=n) for n in range(24)):
        fleet = default_fleet(now, accounts=simulated_accounts(2))
        hour = busy_hour(now)
        assert now - timedelta(hours=16) < hour <= now - timedelta(hours=2)
        first = int((hour - timedelta(hours=1)).timestamp()) // MINUTE
        minutes = np.arange(first, first + 120, dtype=np.int64)
        for simulated in fleet:
            load = minute_values(simulated.profile(7), "DBLoad", minutes)
            assert (load > 0).all(), (now, simulated)
    night = (
        int((latest_busy_hour(day, hours_from_peak=0) - timedelta(hours=12)).timestamp()) // MINUTE
    )
    minutes = np.arange(night, night + 120, dtype=np.int64)
    quiet = [s for s in fleet if (minute_values(s.profile(7), "DBLoad", minutes) == 0).any()]
    assert quiet  # the hours the helper avoids


def test_stopped_and_new_instances_have_data_only_when_alive(local_aws: LocalAws) -> None:
    cw = client(local_aws, region="eu-west-1")
    recent = (NOW - timedelta(hours=6), NOW)
    [page] = fetch(
        cw,
        [cpu_query("legacy-db") | {"Id": "stopped"}, cpu_query("reports-db") | {"Id": "new"}],
        *recent,
    )
    values = {r["Id"]: r for r in page["MetricDataResults"]}
    assert values["stopped"]["Values"] == []
    created = next(i for i in default_fleet(NOW) if i.instance_id == "reports-db").created_at
    assert values["new"]["Timestamps"] and min(values["new"]["Timestamps"]) >= created - timedelta(
        minutes=5
    )


def test_limits_and_paging(local_aws: LocalAws) -> None:
    cw = client(local_aws)
    instances = [Instance("1", "us-east-1", i.instance_id) for i in default_fleet(NOW)[:3]]
    queries = [
        q.to_api(60) for q in build_queries(instances, ["CPUUtilization", "ReadIOPS"], STATS)
    ]
    window = (HOUR, HOUR + timedelta(hours=3))
    whole = fetch(cw, queries, *window)
    paged = fetch(cw, queries, *window, page_size=1000)
    assert len(whole) == 1 and len(paged) == 6  # 30 queries x 180 points = 5,400 datapoints

    def assembled(pages: list[dict]) -> dict[str, list]:
        out: dict[str, list] = {}
        for page in pages:
            for r in page["MetricDataResults"]:
                out.setdefault(r["Id"], []).extend(zip(r["Timestamps"], r["Values"], strict=True))
        return out

    assert assembled(paged) == assembled(whole)
    too_many = [q.to_api(300) for q in build_queries(instances * 34, ["CPUUtilization"], STATS)]
    with pytest.raises(ClientError, match="must not have a size greater than 500"):
        cw.get_metric_data(MetricDataQueries=too_many[:501], StartTime=window[0], EndTime=window[1])


@pytest.mark.parametrize(
    ("faults", "code"),
    [
        (Faults(max_requests_per_second=2), "Throttling"),
        (Faults(max_datapoints_per_second=20), "Throttling"),
    ],
)
def test_quotas_answer_with_the_throttling_error(faults: Faults, code: str) -> None:
    local = start(default_fleet(NOW), faults=faults)
    try:
        cw = client(local)
        errors = []
        for _ in range(6):
            try:
                cw.get_metric_data(
                    MetricDataQueries=[cpu_query()],
                    StartTime=HOUR,
                    EndTime=HOUR + timedelta(hours=1),
                )
            except ClientError as error:
                errors.append(error.response["Error"]["Code"])
        assert errors and set(errors) == {code}
        assert len(errors) < 6  # the first request is within the quota
    finally:
        local.stop()


def test_outage_fails_requests_until_it_ends() -> None:
    now = datetime.now(UTC)
    local = start(
        default_fleet(NOW),
        faults=Faults(outages=[(now - timedelta(minutes=1), now + timedelta(seconds=3))]),
    )
    try:
        cw = client(local)
        with pytest.raises(ClientError) as failed:
            cw.get_metric_data(
                MetricDataQueries=[cpu_query()], StartTime=HOUR, EndTime=HOUR + timedelta(hours=1)
            )
        assert failed.value.response["ResponseMetadata"]["HTTPStatusCode"] == 500
        time.sleep(3.5)
        ok = cw.get_metric_data(
            MetricDataQueries=[cpu_query()], StartTime=HOUR, EndTime=HOUR + timedelta(hours=1)
        )
        assert len(ok["MetricDataResults"][0]["Values"]) == 12
    finally:
        local.stop()


def test_late_publishing_hides_the_newest_minutes() -> None:
    local = start(default_fleet(NOW), faults=Faults(late_minutes=20))
    try:
        now = datetime.now(UTC)
        window = (now - timedelta(hours=1), now)
        [page] = fetch(client(local), [cpu_query(period=60)], *window)
        newest = max(page["MetricDataResults"][0]["Timestamps"])
        assert now - timedelta(minutes=22) <= newest < now - timedelta(minutes=20)
    finally:
        local.stop()


def test_an_instance_created_while_running_appears(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("metrics_pipeline.local_aws.server.FLEET_CHECK_SECONDS", 0.5)
    soon = datetime.now(UTC) + timedelta(seconds=2)
    fleet = [
        *default_fleet(NOW),
        SimulatedInstance("newcomer-db", "us-east-1", "postgres", "db.t3.medium", 100, soon),
    ]
    local = start(fleet)
    try:
        rds = client(local, "rds")

        def ids() -> set[str]:
            return {d["DBInstanceIdentifier"] for d in rds.describe_db_instances()["DBInstances"]}

        assert "newcomer-db" not in ids()
        deadline = time.monotonic() + 15
        while "newcomer-db" not in ids() and time.monotonic() < deadline:
            time.sleep(0.5)
        assert "newcomer-db" in ids()
    finally:
        local.stop()


@pytest.mark.e2e
def test_command_line_rejects_bad_arguments() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "metrics_pipeline.local_aws", "--regions", "us-east-1"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert result.returncode == 2
    assert "--regions: give at least two comma-separated regions" in result.stderr
    assert "Traceback" not in result.stderr


# An instance older than CloudWatch's memory, asked about at a fixed time by the fleet's clock.
ASKED_AT = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
VETERAN = SimulatedInstance(
    "veteran-db", "us-east-1", "postgres", "db.m6g.large", 500, ASKED_AT - timedelta(days=600)
)


@pytest.fixture
def local_aws_at_a_fixed_time() -> Iterator[LocalAws]:
    local = start([VETERAN], clock=lambda: ASKED_AT)
    yield local
    local.stop()


def served(local: LocalAws, start: datetime, end: datetime, period: int, stat: str = "Average"):
    [page] = fetch(client(local), [cpu_query("veteran-db", stat, period)], start, end)
    [result] = page["MetricDataResults"]
    return [t.timestamp() for t in result["Timestamps"]], result["Values"]


def generated(start: datetime, end: datetime, period: int, stat: str = "Average"):
    profile = VETERAN.profile(7)
    seconds, values = series(profile, "CPUUtilization", stat, period, start, end, ASKED_AT)
    return seconds.tolist(), values.tolist()


@pytest.mark.parametrize(
    ("days_ago", "finest", "refused"),
    [(2, 60, 30), (20, 300, 60), (100, 3600, 300), (400, 3600, 1800)],
)
def test_a_period_finer_than_cloudwatch_keeps_at_that_age_gets_no_datapoints(
    local_aws_at_a_fixed_time: LocalAws, days_ago: int, finest: int, refused: int
) -> None:
    start = ASKED_AT - timedelta(days=days_ago)
    end = start + timedelta(hours=2)
    assert served(local_aws_at_a_fixed_time, start, end, refused) == ([], [])
    timestamps, values = served(local_aws_at_a_fixed_time, start, end, finest)
    assert len(values) == 7200 // finest
    assert (timestamps, values) == generated(start, end, finest)
    # A coarser multiple of the resolution is answered too.
    assert len(served(local_aws_at_a_fixed_time, start, end, 2 * finest)[1]) == 3600 // finest


def test_start_time_is_rounded_down_to_the_resolution_kept_at_its_age(
    local_aws_at_a_fixed_time: LocalAws,
) -> None:
    hour = ASKED_AT - timedelta(days=100)
    timestamps, _ = served(
        local_aws_at_a_fixed_time, hour + timedelta(minutes=17), hour + timedelta(hours=3), 3600
    )
    assert timestamps == [(hour + timedelta(hours=h)).timestamp() for h in range(3)]
    five = ASKED_AT - timedelta(days=20)
    timestamps, _ = served(
        local_aws_at_a_fixed_time, five + timedelta(minutes=7), five + timedelta(minutes=30), 300
    )
    assert timestamps[0] == (five + timedelta(minutes=5)).timestamp()


def test_nothing_older_than_455_days_is_returned(local_aws_at_a_fixed_time: LocalAws) -> None:
    oldest = ASKED_AT - timedelta(days=455)
    timestamps, values = served(
        local_aws_at_a_fixed_time, oldest - timedelta(days=2), oldest + timedelta(hours=5), 3600
    )
    assert timestamps == [(oldest + timedelta(hours=h)).timestamp() for h in range(5)]
    assert values == generated(oldest, oldest + timedelta(hours=5), 3600)[1]


def test_percentiles_are_of_the_periods_one_minute_samples(
    local_aws_at_a_fixed_time: LocalAws,
) -> None:
    start = ASKED_AT - timedelta(days=200)
    end = start + timedelta(hours=6)
    _, minutes = generated(start, end, 60)
    samples = np.array(minutes).reshape(6, 60)
    _, p0 = served(local_aws_at_a_fixed_time, start, end, 3600, "p0")
    _, p100 = served(local_aws_at_a_fixed_time, start, end, 3600, "p100")
    assert p0 == samples.min(axis=1).tolist()
    assert p100 == samples.max(axis=1).tolist()
    for percentile in (50, 90, 95, 99, 99.9):
        _, values = served(local_aws_at_a_fixed_time, start, end, 3600, f"p{percentile}")
        below = (samples <= np.array(values)[:, None]).mean(axis=1)
        # At least that share of the hour's samples is at or below it, and not much more.
        assert np.all(below >= percentile / 100 - 1 / 60), percentile
        assert np.all(below <= percentile / 100 + 1 / 60), percentile


@pytest.mark.parametrize("stat", ["p101", "P99", "Median", "p-1"])
def test_an_unknown_statistic_is_refused_naming_it(local_aws: LocalAws, stat: str) -> None:
    with pytest.raises(ClientError, match=f"The value {stat} for parameter .*Stat is not valid"):
        fetch(client(local_aws), [cpu_query(stat=stat)], HOUR, HOUR + timedelta(hours=1))
