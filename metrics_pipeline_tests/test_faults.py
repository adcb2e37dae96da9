"""Nothing lost: what a bad day at AWS, or a killed process, does to the warehouse.

Transient AWS failures are retried by the assets' step retry policy and the run completes with
exact data; configuration errors fail at once, without a retry; a run whose retries run out
fails with the AWS error's own line and the gap sensor heals its hours; an outage of several
hours is healed hour by hour, nothing duplicated; and a writer killed with SIGKILL in the
middle of its DuckDB transaction leaves the old rows or the new, never a mix.

AWS is moto in-process (with CloudWatch's real limits) or the project's local AWS simulator on
a loopback moto server; faults are CloudWatch's own answers (Throttling, HTTP 500), injected
where moto answers GetMetricData.
"""

import itertools
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import pytest
from dagster import (
    DagsterEvent,
    DagsterEventType,
    DagsterInstance,
    SensorDefinition,
    SensorResult,
    SkipReason,
    build_run_status_sensor_context,
    build_sensor_context,
    instance_for_test,
    materialize,
)
from moto.cloudwatch.exceptions import CloudWatchException
from moto.cloudwatch.responses import CloudWatchResponse
from moto.rds.exceptions import RDSClientError
from moto.rds.responses import RDSResponse

from metrics_pipeline.catalog import STATISTIC_COLUMNS
from metrics_pipeline.collection.resources import AwsResource, CollectionResource
from metrics_pipeline.collection.source import CLOUDWATCH_RDS
from metrics_pipeline.dagster_runs import RANGE_END_TAG, RANGE_START_TAG, range_tags
from metrics_pipeline.healing.sensors import build_gap_healing_sensor
from metrics_pipeline.hours import healing_hours, partition_key
from metrics_pipeline.local_aws import cloudwatch as local_cloudwatch
from metrics_pipeline.local_aws.fleet import SimulatedInstance
from metrics_pipeline.local_aws.server import LocalAws, start
from metrics_pipeline.local_aws.signals import series
from metrics_pipeline.quality.alerts import cause_line, root_cause
from metrics_pipeline.warehouse.resources import WarehouseResource
from metrics_pipeline_tests.helpers import (
    STEP_ATTEMPTS,
    TEST_PARTITIONS,
    TEST_SETTINGS,
    free_port,
    hold_write_lock,
    make_aws,
    make_collection,
    rds_instances,
    rds_metrics,
    run_failure_alert,
)
from metrics_pipeline_tests.moto_fleet import (
    STAT_COLUMNS,
    TWO_DAYS_AGO,
    create_instance,
    put_metrics,
)

pytestmark = pytest.mark.storage_kinds(
    "duckdb",
    reason="reads the DuckDB file directly and kills or locks its writer; the lake's own "
    "crash and lock tests are in test_lake.py",
)

HOUR = TWO_DAYS_AGO
SETTLE = timedelta(minutes=15)  # the default METRICS_SETTLE_MINUTES, which the sensor uses

Expected = dict[tuple[str, str, datetime, str], float | None]


def step_events(result: Any, event_type: DagsterEventType, step: str) -> list[DagsterEvent]:
    return [e for e in result.all_events if e.event_type == event_type and e.step_key == step]


def failure_message(result: Any) -> str:
    """The error that failed the step, beneath Dagster's "Exceeded max_retries"."""
    [failure] = result.get_step_failure_events()
    return root_cause(failure.step_failure_data.error).message


def stored(database: str) -> Expected:
    """Every value of rds_metrics, keyed like the expected values."""
    with duckdb.connect(database, read_only=True) as conn:
        rows = conn.execute(
            "SELECT instance_id, metric, ts, average, minimum, maximum, sum, sample_count "
            "FROM rds_metrics"
        ).fetchall()
    return {
        (r[0], r[1], r[2], c): v for r in rows for c, v in zip(STAT_COLUMNS, r[3:], strict=True)
    }


def key_counts(database: str) -> tuple[int, int]:
    """(rows, distinct keys) of rds_metrics: equal when nothing is duplicated."""
    with duckdb.connect(database, read_only=True) as conn:
        [counts] = conn.execute(
            "SELECT count(*), count(DISTINCT (account_id, region, instance_id, metric, ts)) "
            "FROM rds_metrics"
        ).fetchall()
    return counts


@dataclass
class CloudWatchFaults:
    """GetMetricData as a bad day answers it: `rule(call_number, region)` returns the error
    CloudWatch answers that call with (numbered from 1, retries included), or None."""

    rule: Callable[[int, str], Exception | None] = lambda number, region: None
    calls: list[tuple[str, bool]] = field(default_factory=list)  # (region, failed)


@pytest.fixture
def cloudwatch_faults(monkeypatch: pytest.MonkeyPatch) -> CloudWatchFaults:
    """Wraps moto's GetMetricData as installed now: with the simulator, request this fixture
    after `local_aws` (whose start installs the simulator's handler)."""
    faults = CloudWatchFaults()
    answer = CloudWatchResponse.get_metric_data

    def faulty(self: CloudWatchResponse) -> Any:
        error = faults.rule(len(faults.calls) + 1, self.region)
        faults.calls.append((self.region, error is not None))
        if error is not None:
            raise error
        return answer(self)

    monkeypatch.setattr(CloudWatchResponse, "get_metric_data", faulty)
    return faults


class AccessDenied(CloudWatchException):
    code = "AccessDenied"
    message = "User is not authorized to perform: cloudwatch:GetMetricData"


# Transient answers, and the line each gives in the failure: botocore retries both.
TRANSIENT = [
    pytest.param(local_cloudwatch.Throttling, "Throttling: Rate exceeded", id="throttling"),
    pytest.param(
        local_cloudwatch.InternalServiceFault,
        "InternalServiceError: Internal service error",
        id="http-500",
    ),
]


# 1. Transient failures are retried by the step; configuration errors are not.


@pytest.mark.usefixtures("moto_aws")
@pytest.mark.parametrize(("error", "line"), TRANSIENT)
def test_transient_failure_is_retried_by_the_step_and_the_data_is_exact(
    warehouse: WarehouseResource,
    cloudwatch_faults: CloudWatchFaults,
    error: type[Exception],
    line: str,
) -> None:
    metrics = ["CPUUtilization", "FreeableMemory"]
    create_instance("us-east-1", "orders-db")
    create_instance("eu-west-1", "users-db")
    end = HOUR + timedelta(hours=1)
    expected = put_metrics("us-east-1", ["orders-db"], metrics, HOUR, end)
    expected |= put_metrics("eu-west-1", ["users-db"], metrics, HOUR, end)
    resources = {
        "aws": make_aws(max_attempts=2),
        "collection": make_collection(metrics=metrics),
        "warehouse": warehouse,
    }
    assert materialize([rds_instances], resources=resources).success

    # Both of botocore's attempts at eu-west-1's first call fail: the first step attempt
    # commits us-east-1 and fails.
    failures = iter([True, True])
    cloudwatch_faults.rule = lambda number, region: (
        error() if region == "eu-west-1" and next(failures, False) else None
    )
    result = materialize([rds_metrics], partition_key=partition_key(HOUR), resources=resources)

    assert result.success
    [retry] = step_events(result, DagsterEventType.STEP_UP_FOR_RETRY, "rds_metrics")
    cause = retry.step_retry_data.error.cause
    assert f"GetMetricData in eu-west-1 failed after 2 attempt(s): {line}" in cause.message
    assert "committed, every hour of the window: 123456789012/us-east-1 (1 of 1" in cause.message
    assert len(step_events(result, DagsterEventType.STEP_RESTARTED, "rds_metrics")) == 1
    # Regions are fetched side by side; the retry fetched only the region not yet written.
    calls = cloudwatch_faults.calls
    assert [failed for region, failed in calls if region == "eu-west-1"] == [True, True, False]
    assert [failed for region, failed in calls if region == "us-east-1"] == [False]
    assert stored(warehouse.database) == expected
    assert key_counts(warehouse.database) == (2 * 2 * 12, 2 * 2 * 12)


@pytest.mark.usefixtures("moto_aws")
@pytest.mark.filterwarnings("ignore:Exception\\(RDSClientError\\):UserWarning")
def test_discovery_is_retried_by_the_step(
    warehouse: WarehouseResource, monkeypatch: pytest.MonkeyPatch
) -> None:
    create_instance("us-east-1", "orders-db", engine="postgres")
    create_instance("eu-west-1", "users-db", engine="mysql")
    calls: list[str] = []
    describe = RDSResponse.describe_db_instances

    def throttled_twice(self: RDSResponse) -> Any:
        calls.append(self.region)
        if len(calls) <= 2:
            raise RDSClientError("Throttling", "Rate exceeded")
        return describe(self)

    monkeypatch.setattr(RDSResponse, "describe_db_instances", throttled_twice)
    resources = {"aws": make_aws(max_attempts=2), "warehouse": warehouse}
    result = materialize([rds_instances], resources=resources)

    assert result.success
    [retry] = step_events(result, DagsterEventType.STEP_UP_FOR_RETRY, "rds_instances")
    assert (
        "DescribeDBInstances in us-east-1 failed after 2 attempt(s): Throttling: Rate exceeded"
        in retry.step_retry_data.error.cause.message
    )
    assert calls == ["us-east-1", "us-east-1", "us-east-1", "eu-west-1"]
    with duckdb.connect(warehouse.database, read_only=True) as conn:
        inventory = conn.execute(
            "SELECT region, instance_id, engine FROM rds_instances ORDER BY instance_id"
        ).fetchall()
    assert inventory == [("us-east-1", "orders-db", "postgres"), ("eu-west-1", "users-db", "mysql")]


def test_refused_connection_is_retried_then_fails_with_one_clear_line(
    warehouse: WarehouseResource,
) -> None:
    endpoint = f"http://127.0.0.1:{free_port()}"
    aws = make_aws(endpoint_url=endpoint, max_attempts=1)
    result = materialize(
        [rds_instances], resources={"aws": aws, "warehouse": warehouse}, raise_on_error=False
    )

    assert not result.success
    retries = step_events(result, DagsterEventType.STEP_UP_FOR_RETRY, "rds_instances")
    assert len(retries) == STEP_ATTEMPTS - 1 == 3
    message = failure_message(result)
    assert (
        "GetCallerIdentity in us-east-1 failed: Could not connect to the endpoint URL: "
        f'"{endpoint}/"' in message
    )
    assert "Exceeded max_retries" not in message


@pytest.mark.usefixtures("moto_aws")
def test_unforeseen_error_is_retried_then_fails_with_its_own_line(tmp_path: Path) -> None:
    create_instance("us-east-1", "orders-db")
    not_a_file = tmp_path / "metrics.duckdb"
    not_a_file.mkdir()  # passes the writable check; DuckDB cannot open it
    resources = {"aws": make_aws(), "warehouse": WarehouseResource(database=str(not_a_file))}
    result = materialize([rds_instances], resources=resources, raise_on_error=False)

    assert not result.success
    assert len(step_events(result, DagsterEventType.STEP_UP_FOR_RETRY, "rds_instances")) == 3
    assert failure_message(result).startswith(
        f'_duckdb.IOException: IO Error: Could not read from file "{not_a_file}": Is a directory'
    )
    # The alert's cause line keeps the class of an unforeseen error, not its module.
    [failure] = result.get_step_failure_events()
    assert cause_line(failure.step_failure_data.error) == (
        f'IOException: IO Error: Could not read from file "{not_a_file}": Is a directory'
    )


@dataclass
class ConfigErrorCase:
    """A run that cannot succeed however often it is tried: what sets it up, and its line."""

    setup: Callable[[WarehouseResource, CloudWatchFaults], dict[str, Any]]
    line: str
    get_metric_data_calls: int = 0


def _discovered(warehouse: WarehouseResource, **warehouse_overrides: Any) -> dict[str, Any]:
    create_instance("us-east-1", "orders-db")
    target = WarehouseResource(database=warehouse.database, **warehouse_overrides)
    resources = {
        "aws": make_aws(),
        "collection": make_collection(metrics=["CPUUtilization"]),
        "warehouse": target,
    }
    assert materialize([rds_instances], resources=resources).success
    return {"resources": resources}


def _unknown_instance(warehouse: WarehouseResource, _: CloudWatchFaults) -> dict[str, Any]:
    return {
        **_discovered(warehouse),
        "run_config": {"ops": {"rds_metrics": {"config": {"instances": ["nope-db"]}}}},
    }


def _outside_retention(warehouse: WarehouseResource, _: CloudWatchFaults) -> dict[str, Any]:
    return _discovered(warehouse, retention_days=1)  # HOUR is two days ago


def _access_denied(warehouse: WarehouseResource, faults: CloudWatchFaults) -> dict[str, Any]:
    faults.rule = lambda number, region: AccessDenied()
    return _discovered(warehouse)


def _lock_held(warehouse: WarehouseResource, _: CloudWatchFaults) -> dict[str, Any]:
    setup = _discovered(warehouse, lock_timeout_seconds=0.5)
    return {**setup, "lock_holder": hold_write_lock(warehouse.database, 60)}


CONFIG_ERRORS = [
    pytest.param(
        ConfigErrorCase(
            _unknown_instance,
            "instances: unknown instance id(s) nope-db; the inventory (rds_instances) "
            "does not list them.",
        ),
        id="unknown-instance",
    ),
    pytest.param(
        ConfigErrorCase(
            _outside_retention,
            "the oldest hour that can be collected (METRICS_RETENTION_DAYS=1)",
        ),
        id="outside-retention",
    ),
    pytest.param(
        ConfigErrorCase(
            _access_denied,
            "GetMetricData in us-east-1 failed after 1 attempt(s): AccessDenied: "
            "User is not authorized to perform: cloudwatch:GetMetricData",
            get_metric_data_calls=1,
        ),
        id="access-denied",
    ),
    pytest.param(
        ConfigErrorCase(
            _lock_held,
            "is locked by another process and was not released within 0.5 s "
            "(METRICS_LOCK_TIMEOUT_SECONDS)",
            get_metric_data_calls=0,  # the run checks the warehouse before it asks AWS
        ),
        id="lock-timeout",
        marks=pytest.mark.e2e,  # a process holds the lock
    ),
]


@pytest.mark.usefixtures("moto_aws")
@pytest.mark.filterwarnings("ignore:Exception\\(AccessDenied\\):UserWarning")
@pytest.mark.parametrize("case", CONFIG_ERRORS)
def test_configuration_errors_fail_once_without_a_retry(
    warehouse: WarehouseResource, cloudwatch_faults: CloudWatchFaults, case: ConfigErrorCase
) -> None:
    setup = case.setup(warehouse, cloudwatch_faults)
    holder = setup.pop("lock_holder", None)
    try:
        result = materialize(
            [rds_metrics], partition_key=partition_key(HOUR), raise_on_error=False, **setup
        )
    finally:
        if holder is not None:
            holder.kill()
            holder.wait()

    assert not result.success
    assert step_events(result, DagsterEventType.STEP_UP_FOR_RETRY, "rds_metrics") == []
    assert step_events(result, DagsterEventType.STEP_RESTARTED, "rds_metrics") == []
    assert case.line in failure_message(result)
    assert len(cloudwatch_faults.calls) == case.get_metric_data_calls


# 2 and 3. Runs that still fail are healed by the gap sensor, hour by hour.

CREATED = datetime.now(UTC) - timedelta(days=30)
FLEET = [
    SimulatedInstance("orders-db", "us-east-1", "postgres", "db.r6g.large", 500, CREATED),
    SimulatedInstance("users-db", "us-east-1", "mariadb", "db.t3.medium", 100, CREATED),
    SimulatedInstance("reports-db", "eu-west-1", "postgres", "db.t3.medium", 50, CREATED),
]
SENSOR_METRICS = ["CPUUtilization"]


@pytest.fixture
def local_aws() -> Iterator[LocalAws]:
    """The project's local AWS (a moto server on loopback) with a three-instance fleet."""
    local = start(FLEET)
    yield local
    local.stop()


@pytest.fixture
def instance() -> Iterator[DagsterInstance]:
    with instance_for_test() as test_instance:
        yield test_instance


@pytest.fixture
def sensor_now() -> datetime:
    """The moment the gap sensor is evaluated at: its clock stays there for the whole test, so
    an hour that settles while the test runs does not change what it asks for."""
    return datetime.now(UTC).replace(tzinfo=None)


@pytest.fixture
def sensor_hours(sensor_now: datetime) -> list[datetime]:
    """The settled hours the gap sensor looks at (its default three days)."""
    return healing_hours(sensor_now, 3, SETTLE)


def simulated(local: LocalAws, first: datetime, end: datetime, metrics: list[str]) -> Expected:
    """What the simulator publishes for [first, end): its signal model, evaluated here."""
    expected: Expected = {}
    for simulated_instance in local.simulator.fleet.values():
        profile = local.simulator.profile(
            simulated_instance.account_id,
            simulated_instance.region,
            simulated_instance.instance_id,
        )
        for metric in metrics:
            for statistic, column in STATISTIC_COLUMNS.items():
                seconds, values = series(
                    profile,
                    metric,
                    statistic,
                    300,
                    first.replace(tzinfo=UTC),
                    end.replace(tzinfo=UTC),
                    datetime.now(UTC),
                )
                for second, value in zip(seconds.tolist(), values.tolist(), strict=True):
                    ts = datetime.fromtimestamp(second, UTC).replace(tzinfo=None)
                    expected[(simulated_instance.instance_id, metric, ts, column)] = value
    return expected


def sensor_aws(local: LocalAws) -> AwsResource:
    return make_aws(endpoint_url=local.url, max_attempts=2)


def sensor_collection() -> CollectionResource:
    return make_collection(metrics=SENSOR_METRICS)


def gap_healing_sensor_at(now: datetime) -> SensorDefinition:
    return build_gap_healing_sensor(
        TEST_SETTINGS, (CLOUDWATCH_RDS,), TEST_PARTITIONS, clock=lambda: now
    )


def heal(
    instance: DagsterInstance, resources: dict[str, Any], now: datetime
) -> list[tuple[str, str, dict]]:
    """Evaluates the gap sensor at `now` as the daemon would and executes the runs it
    requests; returns what it requested: (first hour, last hour, run config) per run."""
    context = build_sensor_context(instance=instance, resources=resources)
    result = gap_healing_sensor_at(now)(context)
    assert isinstance(result, SensorResult), result
    for request in result.run_requests:
        healed = materialize(
            [rds_metrics],
            instance=instance,
            resources=resources,
            tags=request.tags,
            run_config=request.run_config,
        )
        assert healed.success
    return [
        (r.tags[RANGE_START_TAG], r.tags[RANGE_END_TAG], r.run_config) for r in result.run_requests
    ]


def assert_nothing_left_to_heal(
    instance: DagsterInstance, resources: dict[str, Any], now: datetime
) -> None:
    context = build_sensor_context(instance=instance, resources=resources)
    after = gap_healing_sensor_at(now)(context)
    assert isinstance(after, SkipReason)
    assert "No gaps" in (after.skip_message or "")


def alert_for(instance: DagsterInstance, run_id: str, caplog: pytest.LogCaptureFixture) -> str:
    """The line run_failure_alert gives for the failed run."""
    [failure] = instance.all_logs(run_id, of_type=DagsterEventType.RUN_FAILURE)
    context = build_run_status_sensor_context(
        sensor_name="run_failure_alert",
        dagster_event=failure.dagster_event,
        dagster_instance=instance,
        dagster_run=instance.get_run_by_id(run_id),
    ).for_run_failure()
    with caplog.at_level(logging.ERROR, logger="metrics_pipeline.alerts"):
        run_failure_alert(context)
    [line] = [r.getMessage() for r in caplog.records if r.name == "metrics_pipeline.alerts"]
    return line


def fetch_log(database: str) -> tuple[int, int]:
    """(entries, settled entries) of the fetch log."""
    with duckdb.connect(database, read_only=True) as conn:
        [counts] = conn.execute(
            "SELECT count(*), count(*) FILTER (settled) FROM rds_metric_fetches"
        ).fetchall()
    return counts


@pytest.mark.parametrize(("error", "line"), TRANSIENT)
def test_retries_run_out_mid_run_then_the_gap_sensor_heals_the_hours(
    local_aws: LocalAws,
    cloudwatch_faults: CloudWatchFaults,
    instance: DagsterInstance,
    warehouse: WarehouseResource,
    sensor_now: datetime,
    sensor_hours: list[datetime],
    caplog: pytest.LogCaptureFixture,
    error: type[Exception],
    line: str,
) -> None:
    hours = sensor_hours
    failing = hours[-3:]
    resources = {
        "aws": sensor_aws(local_aws),
        "collection": sensor_collection(),
        "warehouse": warehouse,
    }
    assert materialize([rds_instances], resources=resources, instance=instance).success
    assert materialize(
        [rds_metrics], resources=resources, instance=instance, tags=range_tags(hours[0], hours[-4])
    ).success

    # us-east-1 fails throughout; eu-west-1 (fetched first) answers: each attempt dies mid-run.
    cloudwatch_faults.rule = lambda number, region: error() if region == "us-east-1" else None
    failed = materialize(
        [rds_metrics],
        resources=resources,
        instance=instance,
        tags=range_tags(failing[0], failing[-1]),
        raise_on_error=False,
    )

    assert not failed.success
    assert failure_message(failed).startswith(
        "dagster._core.definitions.events.Failure: "
        f"GetMetricData in us-east-1 failed after 2 attempt(s): {line}\n"
    )
    assert len(step_events(failed, DagsterEventType.STEP_UP_FOR_RETRY, "rds_metrics")) == 3
    assert alert_for(instance, failed.run_id, caplog) == (
        f"ALERT metrics_pipeline run {failed.run_id} of __ephemeral_asset_job__ for "
        f"{partition_key(failing[0])}..{partition_key(failing[-1])} failed: GetMetricData in "
        f"us-east-1 failed after 2 attempt(s): {line} "
        f"(gave up after {STEP_ATTEMPTS} step attempts)"
    )
    # After the setup's two calls, the first attempt fetched and wrote eu-west-1 beside using
    # up botocore's two attempts on us-east-1; the retries asked only for us-east-1.
    calls = cloudwatch_faults.calls[2:]
    assert [failed for region, failed in calls if region == "eu-west-1"] == [False]
    assert [failed for region, failed in calls if region == "us-east-1"] == 2 * STEP_ATTEMPTS * [
        True
    ]
    # Whole instance-hours: eu-west-1's are in, us-east-1's are not.
    stored_before = stored(warehouse.database)
    assert {k[0] for k in stored_before if k[2] >= failing[0]} == {"reports-db"}

    cloudwatch_faults.rule = lambda number, region: None  # the trouble has passed
    requested = heal(instance, resources, sensor_now)

    assert requested == [(partition_key(failing[0]), partition_key(failing[-1]), {})]
    expected = simulated(local_aws, hours[0], hours[-1] + timedelta(hours=1), SENSOR_METRICS)
    rows = len(FLEET) * len(SENSOR_METRICS) * 12 * len(hours)
    assert len(expected) == rows * 5
    assert stored(warehouse.database) == expected
    assert key_counts(warehouse.database) == (rows, rows)
    assert fetch_log(warehouse.database) == (len(FLEET) * len(hours), len(FLEET) * len(hours))
    assert_nothing_left_to_heal(instance, resources, sensor_now)


def test_an_outage_of_several_hours_is_healed_hour_by_hour(
    local_aws: LocalAws,
    instance: DagsterInstance,
    warehouse: WarehouseResource,
    sensor_now: datetime,
    sensor_hours: list[datetime],
) -> None:
    hours = sensor_hours
    outage, after = hours[-6:-2], hours[-2:]
    resources = {
        "aws": sensor_aws(local_aws),
        "collection": sensor_collection(),
        "warehouse": warehouse,
    }
    assert materialize([rds_instances], resources=resources, instance=instance).success
    # Before the outage everything up to its first hour was collected.
    assert materialize(
        [rds_metrics], resources=resources, instance=instance, tags=range_tags(hours[0], outage[0])
    ).success
    rows_per_hour = len(FLEET) * len(SENSOR_METRICS) * 12

    began = datetime.now(UTC)
    local_aws.simulator.faults.outages = [(began, began + timedelta(days=1))]
    # Each fresh tick during the outage collects an hour and the one before it, and fails.
    for previous, current in itertools.pairwise(outage):
        failed = materialize(
            [rds_metrics],
            resources=resources,
            instance=instance,
            tags=range_tags(previous, current),
            raise_on_error=False,
        )
        assert not failed.success
        assert (
            "GetMetricData in eu-west-1 failed after 2 attempt(s): InternalServiceError: "
            "simulated outage until" in failure_message(failed)
        )
    with duckdb.connect(warehouse.database, read_only=True) as conn:
        [(kept,)] = conn.execute(
            "SELECT count(*) FROM rds_metrics WHERE ts >= ? AND ts < ?",
            [outage[0], outage[0] + timedelta(hours=1)],
        ).fetchall()
    assert kept == rows_per_hour  # failed runs delete nothing

    local_aws.simulator.faults.outages = [(began, datetime.now(UTC))]  # the outage is over
    assert materialize(
        [rds_metrics], resources=resources, instance=instance, tags=range_tags(*after)
    ).success
    requested = heal(instance, resources, sensor_now)

    assert requested == [(partition_key(outage[0]), partition_key(outage[-1]), {})]
    expected = simulated(local_aws, hours[0], hours[-1] + timedelta(hours=1), SENSOR_METRICS)
    assert stored(warehouse.database) == expected
    assert key_counts(warehouse.database) == (
        rows_per_hour * len(hours),
        rows_per_hour * len(hours),
    )
    assert fetch_log(warehouse.database) == (len(FLEET) * len(hours), len(FLEET) * len(hours))
    assert_nothing_left_to_heal(instance, resources, sensor_now)


# 4. A writer killed in the middle of its DuckDB transaction.

KILL_FLEET = [
    SimulatedInstance(f"db-{n:03d}", ("us-east-1", "eu-west-1")[n % 2], "postgres",
                      "db.m6g.large", 200, CREATED)
    for n in range(100)
]  # fmt: skip
KILL_METRICS = ["CPUUtilization", "FreeStorageSpace", "ReadIOPS", "WriteIOPS"]
# Chunks of 14 instances (14 x 4 series x 864 periods): four per region, eight in all.
KILL_CHUNK_DATAPOINTS = 50_000
KILL_CHUNK_INSTANCES = 14
KILL_AFTER_CHUNKS = 3

_COLLECT_IN_CHILD = """
import sys
from dagster import materialize
from metrics_pipeline_tests.helpers import rds_metrics
from metrics_pipeline.collection.resources import AwsResource, CollectionResource
from metrics_pipeline.warehouse.resources import WarehouseResource
database, endpoint, first, last, metrics, chunk_datapoints = sys.argv[1:]
aws = AwsResource(regions=["us-east-1", "eu-west-1"], endpoint_url=endpoint,
                  max_requests_per_second=1000)
collection = CollectionResource(metrics=metrics.split(","), statistics=["Average"],
                                chunk_datapoints=int(chunk_datapoints), fetch_threads=1)
warehouse = WarehouseResource(database=database)
materialize([rds_metrics],
            resources={"aws": aws, "collection": collection, "warehouse": warehouse},
            tags={"dagster/asset_partition_range_start": first,
                  "dagster/asset_partition_range_end": last})
"""


def kill_aws(endpoint: str) -> AwsResource:
    """The AWS resource of the child above, for the runs this process makes."""
    return AwsResource(
        regions=["us-east-1", "eu-west-1"],
        endpoint_url=endpoint,
        max_requests_per_second=1000,
    )


def kill_collection() -> CollectionResource:
    """The collection resource of the child above, for the runs this process makes."""
    return CollectionResource(
        metrics=KILL_METRICS, statistics=["Average"], chunk_datapoints=KILL_CHUNK_DATAPOINTS
    )


def holds_lock(pid: int, path: Path) -> bool:
    """Whether process `pid` holds a POSIX lock on `path`, as the kernel lists it in
    /proc/locks ("1: POSIX ADVISORY WRITE <pid> <major>:<minor>:<inode> 0 EOF"). DuckDB's
    writer takes such a lock on the database file when it opens it and keeps it until it
    closes: from outside, the one sign that a run has reached its write."""
    inode = str(path.stat().st_ino)
    for line in Path("/proc/locks").read_text().splitlines():
        fields = line.split()
        if (
            len(fields) > 5
            and fields[1] == "POSIX"
            and fields[4] == str(pid)
            and fields[5].rsplit(":", 1)[-1] == inode
        ):
            return True
    return False


def averages(conn: duckdb.DuckDBPyConnection) -> dict[tuple[str, str, datetime], float | None]:
    rows = conn.execute("SELECT instance_id, metric, ts, average FROM rds_metrics").fetchall()
    return {(r[0], r[1], r[2]): r[3] for r in rows}


def simulated_averages(
    local: LocalAws, first: datetime, end: datetime
) -> dict[tuple[str, str, datetime], float | None]:
    every = simulated(local, first, end, KILL_METRICS)
    return {(i, m, ts): v for (i, m, ts, column), v in every.items() if column == "average"}


@pytest.mark.e2e
@pytest.mark.skipif(not Path("/proc/locks").exists(), reason="reads the kernel's lock table")
def test_sigkill_in_the_middle_of_the_write_leaves_old_rows_or_new(tmp_path: Path) -> None:
    database = tmp_path / "warehouse" / "metrics.duckdb"
    warehouse = WarehouseResource(database=str(database))
    last = datetime.now(UTC).replace(tzinfo=None, minute=0, second=0, microsecond=0) - timedelta(
        hours=2
    )
    first = last - timedelta(hours=71)  # three days
    end = last + timedelta(hours=1)
    rows = len(KILL_FLEET) * len(KILL_METRICS) * 12 * 72
    local = start(KILL_FLEET, seed=7)
    try:
        resources = {
            "aws": kill_aws(local.url),
            "collection": kill_collection(),
            "warehouse": warehouse,
        }
        assert materialize([rds_instances], resources=resources).success
        first_run = materialize([rds_metrics], resources=resources, tags=range_tags(first, last))
        old = simulated_averages(local, first, end)
        with duckdb.connect(str(database), read_only=True) as conn:
            assert averages(conn) == old
        assert len(old) == rows == 345_600

        local.simulator.seed = 8  # CloudWatch now answers other values for the same window
        new = simulated_averages(local, first, end)
        assert new.keys() == old.keys()
        assert all(new[k] != old[k] for k in old)  # any mix would show
        log = tmp_path / "child.log"
        with log.open("wb") as child_output:
            child = subprocess.Popen(
                [sys.executable, "-c", _COLLECT_IN_CHILD, str(database), local.url,
                 partition_key(first), partition_key(last), ",".join(KILL_METRICS),
                 str(KILL_CHUNK_DATAPOINTS)],
                stdout=subprocess.DEVNULL, stderr=child_output,
            )  # fmt: skip
        deadline = time.monotonic() + 300
        # Killed as soon as a few chunks are in: inside the next chunk's transaction, or
        # between two; either way every instance-hour must be whole.
        while log.read_text().count(": wrote chunk ") < KILL_AFTER_CHUNKS:
            assert child.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, "the child never wrote a chunk"
            time.sleep(0.005)
        os.kill(child.pid, signal.SIGKILL)
        assert child.wait(timeout=60) == -signal.SIGKILL
        assert "Wrote " not in log.read_text()  # the run never finished

        with duckdb.connect(str(database)) as conn:  # opening it recovers from the kill
            after_kill = averages(conn)
            [(runs,)] = conn.execute("SELECT count(*) FROM pipeline_runs").fetchall()
            [(count, distinct)] = conn.execute(
                "SELECT count(*), count(DISTINCT (account_id, region, instance_id, metric, ts)) "
                "FROM rds_metrics"
            ).fetchall()
            fetch_runs = dict(
                conn.execute(
                    "SELECT instance_id, list(DISTINCT run_id) FROM rds_metric_fetches GROUP BY 1"
                ).fetchall()
            )
        assert (count, distinct) == (rows, rows)
        assert runs == 1  # the killed run recorded nothing
        # Each instance has all its rows old or all new, and its fetch log says which run.
        renewed = set()
        for simulated_instance in KILL_FLEET:
            name = simulated_instance.instance_id
            keys = [k for k in old if k[0] == name]
            if all(after_kill[k] == new[k] for k in keys):
                renewed.add(name)
                assert len(fetch_runs[name]) == 1 and fetch_runs[name] != [first_run.run_id]
            else:
                assert all(after_kill[k] == old[k] for k in keys), f"{name} is a mix"
                assert fetch_runs[name] == [first_run.run_id]
        assert len(renewed) % KILL_CHUNK_INSTANCES in (0, 50 % KILL_CHUNK_INSTANCES)
        assert KILL_AFTER_CHUNKS * KILL_CHUNK_INSTANCES <= len(renewed) < len(KILL_FLEET)
        with warehouse.reader() as snapshot:  # readers still see the last published write
            assert averages(snapshot) == old

        healed = materialize([rds_metrics], resources=resources, tags=range_tags(first, last))
    finally:
        local.stop()

    assert healed.success
    with duckdb.connect(str(database), read_only=True) as conn:
        assert averages(conn) == new
        [(count, distinct)] = conn.execute(
            "SELECT count(*), count(DISTINCT (account_id, region, instance_id, metric, ts)) "
            "FROM rds_metrics"
        ).fetchall()
        fetch_runs = conn.execute("SELECT DISTINCT run_id FROM rds_metric_fetches").fetchall()
    assert (count, distinct) == (rows, rows)
    assert fetch_runs == [(healed.run_id,)]
    with warehouse.reader() as snapshot:
        assert averages(snapshot) == new
