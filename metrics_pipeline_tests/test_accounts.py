"""Several AWS accounts: roles assumed (and refreshed), an Organization's accounts, and a
collection from three simulated accounts of the local AWS where one role cannot be assumed."""

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import boto3
import botocore.session
import duckdb
import pytest
from dagster import DagsterInstance, build_sensor_context, instance_for_test, materialize
from moto import mock_aws

from metrics_pipeline.analysts.query import QueryError, extract_metrics
from metrics_pipeline.collection.accounts import (
    Account,
    assumed_role_credentials,
    list_organization_accounts,
    plan_accounts,
)
from metrics_pipeline.hours import partition_key
from metrics_pipeline.local_aws.fleet import default_fleet, reader_role_arn, simulated_accounts
from metrics_pipeline.local_aws.server import LocalAws, start
from metrics_pipeline.local_aws.signals import series
from metrics_pipeline.settings import StorageSettings
from metrics_pipeline.warehouse.resources import WarehouseResource
from metrics_pipeline_tests.helpers import (
    gap_healing_sensor,
    make_aws,
    make_collection,
    rds_instances,
    rds_metrics,
)

OWN, SECOND, THIRD = simulated_accounts(3)
UNKNOWN_ROLE = "arn:aws:iam::444444444444:role/metrics-reader"
REFUSED = (
    f"account 444444444444: cannot assume {UNKNOWN_ROLE}: AccessDenied: User: "
    f"arn:aws:iam::{OWN}:user/local is not authorized to perform: sts:AssumeRole on resource: "
    f"{UNKNOWN_ROLE}"
)
NOW = datetime.now(UTC)
FLEET = default_fleet(NOW, ("us-east-1", "eu-west-1"), [OWN, SECOND, THIRD])
METRICS = ["CPUUtilization", "FreeStorageSpace"]


def test_accounts_planned_once_each() -> None:
    accounts = plan_accounts(
        OWN,
        role_arns=[reader_role_arn(SECOND), f"arn:aws:iam::{OWN}:role/not-needed"],
        organization_accounts=[OWN, SECOND, THIRD],
        organization_role="OrganizationAccountAccessRole",
    )
    assert accounts == [
        Account(OWN),  # the pipeline's own account needs no role
        Account(SECOND, reader_role_arn(SECOND)),  # an explicit role wins
        Account(THIRD, f"arn:aws:iam::{THIRD}:role/OrganizationAccountAccessRole"),
    ]


@mock_aws
def test_an_organizations_active_accounts_are_listed() -> None:
    organizations = boto3.client("organizations", region_name="us-east-1")
    organizations.create_organization(FeatureSet="ALL")
    created = [
        organizations.create_account(AccountName=f"team-{n}", Email=f"team{n}@example.com")
        for n in range(3)
    ]
    ids = [c["CreateAccountStatus"]["AccountId"] for c in created]
    organizations.close_account(AccountId=ids[0])

    listed = list_organization_accounts(organizations)

    management = organizations.describe_organization()["Organization"]["MasterAccountId"]
    assert listed == sorted([management, ids[1], ids[2]])


@mock_aws
def test_the_aws_resource_collects_every_account_of_the_organization() -> None:
    organizations = boto3.client("organizations", region_name="us-east-1")
    organizations.create_organization(FeatureSet="ALL")
    member = organizations.create_account(AccountName="shop", Email="shop@example.com")
    member_id = member["CreateAccountStatus"]["AccountId"]
    aws = make_aws(organization_role="OrganizationAccountAccessRole", regions=["us-east-1"])

    accounts = aws.accounts()

    role = f"arn:aws:iam::{member_id}:role/OrganizationAccountAccessRole"
    assert accounts == sorted([Account(OWN), Account(member_id, role)])
    # The member's clients run on the assumed role: moto files them under its account.
    member_account = next(a for a in accounts if a.account_id == member_id)
    identity = aws.client("sts", "us-east-1", account=member_account)
    assert identity.get_caller_identity()["Account"] == member_id


@mock_aws
def test_assumed_role_credentials_refresh_after_expiry() -> None:
    """botocore's refreshable credentials call AssumeRole again once the clock comes within
    15 minutes of the expiry; until then they keep the same keys."""
    now = [datetime.now(UTC)]
    core = botocore.session.get_session()
    calls: list[str] = []

    def client_creator(service: str, **kwargs: object) -> object:
        client = core.create_client(service, region_name="us-east-1", **kwargs)
        client.meta.events.register(
            "before-call.sts.AssumeRole", lambda **_: calls.append("AssumeRole")
        )
        return client

    credentials = assumed_role_credentials(
        client_creator,
        core.get_credentials(),
        reader_role_arn(SECOND),
        external_id="shared-secret",
        clock=lambda: now[0],
    )
    first = credentials.get_frozen_credentials()
    assert credentials.get_frozen_credentials().access_key == first.access_key
    assert calls == ["AssumeRole"]

    now[0] += timedelta(minutes=30)
    assert credentials.get_frozen_credentials().access_key == first.access_key
    assert calls == ["AssumeRole"]

    now[0] += timedelta(minutes=17)  # moto's sessions last an hour: 13 minutes left
    second = credentials.get_frozen_credentials()

    assert calls == ["AssumeRole", "AssumeRole"]
    assert second.access_key != first.access_key
    identity = boto3.client(
        "sts",
        region_name="us-east-1",
        aws_access_key_id=second.access_key,
        aws_secret_access_key=second.secret_key,
        aws_session_token=second.token,
    ).get_caller_identity()
    assert identity["Account"] == SECOND


@pytest.fixture
def local_aws() -> Iterator[LocalAws]:
    local = start(FLEET)
    yield local
    local.stop()


@pytest.fixture
def instance() -> Iterator[DagsterInstance]:
    with instance_for_test() as test_instance:
        yield test_instance


def expected_values(local: LocalAws, hour: datetime) -> dict[tuple[str, str, str, str], float]:
    """What the simulator publishes for the hour: (account, instance, metric, ts) -> Average."""
    expected = {}
    for simulated in local.simulator.fleet.values():
        profile = local.simulator.profile(
            simulated.account_id, simulated.region, simulated.instance_id
        )
        for metric in METRICS:
            seconds, values = series(
                profile, metric, "Average", 300, hour, hour + timedelta(hours=1), datetime.now(UTC)
            )
            for second, value in zip(seconds.tolist(), values.tolist(), strict=True):
                ts = datetime.fromtimestamp(second, UTC).replace(tzinfo=None).isoformat()
                expected[(simulated.account_id, simulated.instance_id, metric, ts)] = value
    return expected


def test_three_accounts_are_collected_and_a_refused_role_fails_only_its_account(
    tmp_path: Path,
    local_aws: LocalAws,
    instance: DagsterInstance,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    aws = make_aws(
        endpoint_url=local_aws.url,
        role_arns=[reader_role_arn(SECOND), reader_role_arn(THIRD), UNKNOWN_ROLE],
    )
    warehouse = WarehouseResource(database=str(tmp_path / "metrics.duckdb"))
    resources = {
        "aws": aws,
        "collection": make_collection(metrics=METRICS),
        "warehouse": warehouse,
    }

    discovered = materialize([rds_instances], instance=instance, resources=resources)

    [event] = discovered.asset_materializations_for_node("rds_instances")
    assert event.metadata["accounts"].value == f"{OWN}, {SECOND}, {THIRD}"
    assert event.metadata["accounts_failed"].value == REFUSED
    with duckdb.connect(warehouse.database, read_only=True) as conn:
        inventory = set(
            conn.execute("SELECT account_id, region, instance_id FROM rds_instances").fetchall()
        )
    assert inventory == {(i.account_id, i.region, i.instance_id) for i in FLEET}
    assert (OWN, "us-east-1", "orders-db") in inventory and (
        SECOND,
        "us-east-1",
        "orders-db",
    ) in inventory

    # The third account's trust policy stops trusting the pipeline before the next hour.
    hour = (NOW - timedelta(hours=2)).replace(minute=0, second=0, microsecond=0)
    third_role = reader_role_arn(THIRD)
    trusted = local_aws.simulator.assumable
    monkeypatch.setattr(
        local_aws.simulator, "assumable", lambda arn: arn != third_role and trusted(arn)
    )
    refused_third = (
        f"account {THIRD}: cannot assume {third_role}: AccessDenied: User: arn:aws:iam::{OWN}:"
        f"user/local is not authorized to perform: sts:AssumeRole on resource: {third_role}"
    )
    collected = materialize(
        [rds_metrics],
        partition_key=partition_key(hour.replace(tzinfo=None)),
        instance=instance,
        resources={
            **resources,
            "aws": make_aws(endpoint_url=local_aws.url, role_arns=aws.role_arns),
        },
    )

    assert collected.success  # the other accounts' hours are in
    [event] = collected.asset_materializations_for_node("rds_metrics")
    assert event.metadata["accounts_collected"].value == f"{OWN}, {SECOND}"
    assert event.metadata["accounts_failed"].value == THIRD
    assert event.metadata["errors"].value.splitlines() == [
        f"{THIRD}/eu-west-1: {refused_third}",
        f"{THIRD}/us-east-1: {refused_third}",
    ]
    expected = expected_values(local_aws, hour)
    with duckdb.connect(warehouse.database, read_only=True) as conn:
        stored = {
            (account, instance_id, metric, ts.isoformat()): average
            for account, instance_id, metric, ts, average in conn.execute(
                "SELECT account_id, instance_id, metric, ts, average FROM rds_metrics"
            ).fetchall()
        }
        parts = conn.execute(
            "SELECT account_id, region, status, instances, instances_written, rows_written "
            "FROM pipeline_run_parts ORDER BY 1, 2"
        ).fetchall()
    collected_accounts = {OWN, SECOND}
    assert stored == {k: v for k, v in expected.items() if k[0] in collected_accounts}
    # Same name, other account, other instance: its own values.
    assert (
        stored[(OWN, "orders-db", "CPUUtilization", hour.replace(tzinfo=None).isoformat())]
        != (stored[(SECOND, "orders-db", "CPUUtilization", hour.replace(tzinfo=None).isoformat())])
    )
    # Analysts tell the accounts apart, and keep one with --account.
    storage = StorageSettings(duckdb_path=Path(warehouse.database))
    second_only = extract_metrics(
        hour, hour + timedelta(hours=1), accounts=[SECOND], storage=storage, now=NOW
    )
    assert set(second_only["account_id"]) == {SECOND}
    assert {
        (SECOND, row.instance_id, row.metric, row.ts.isoformat()): row.average
        for row in second_only.itertuples()
    } == {k: v for k, v in stored.items() if k[0] == SECOND}
    with pytest.raises(QueryError, match="account: unknown '444444444444'; the warehouse has: "):
        extract_metrics(
            hour, hour + timedelta(hours=1), accounts=["444444444444"], storage=storage, now=NOW
        )

    by_part = {(a, r): rest for a, r, *rest in parts}
    periods = len(METRICS) * 12
    # Its three Aurora instances have no FreeStorageSpace of their own: CPU only.
    assert by_part[(OWN, "us-east-1")] == ["collected", 6, 6, 3 * periods + 3 * 12]
    assert by_part[(SECOND, "us-east-1")] == ["collected", 1, 1, periods]
    assert by_part[(THIRD, "us-east-1")] == ["failed", 1, 0, 0]
    assert by_part[(THIRD, "eu-west-1")] == ["failed", 1, 0, 0]

    # The gap sensor asks for the third account's hour again; it is trusted once more.
    monkeypatch.setattr(local_aws.simulator, "assumable", trusted)
    context = build_sensor_context(
        instance=instance,
        resources={
            "warehouse": warehouse,
            "aws": aws,
            "collection": make_collection(metrics=METRICS),
        },
    )
    heal = gap_healing_sensor(context)
    hour_key = partition_key(hour.replace(tzinfo=None))
    assert any(
        r.tags["dagster/asset_partition_range_start"]
        <= hour_key
        <= r.tags["dagster/asset_partition_range_end"]
        for r in heal.run_requests
    )
    # Healing one account's instances: named with their account (the first has an orders-db
    # too), only they are collected.
    third_only = {"instances": [f"{THIRD}/billing-db-3", f"{THIRD}/orders-db"]}
    healed = materialize(
        [rds_metrics],
        instance=instance,
        resources=resources,
        partition_key=hour_key,
        run_config={"ops": {"rds_metrics": {"config": third_only}}},
    )
    assert healed.success
    with duckdb.connect(warehouse.database, read_only=True) as conn:
        healed_parts = conn.execute(
            "SELECT account_id, status, instances_written FROM pipeline_run_parts "
            "WHERE run_id = ? ORDER BY region",
            [healed.run_id],
        ).fetchall()
        [(rows_after,)] = conn.execute("SELECT count(*) FROM rds_metrics").fetchall()
    assert healed_parts == [(THIRD, "collected", 1), (THIRD, "collected", 1)]
    assert rows_after == len(expected)  # every account's hour, each row once
