"""Discovery across regions through Dagster, against moto's RDS."""

from datetime import UTC, datetime
from typing import Any

import boto3
import pytest
from dagster import materialize

from metrics_pipeline.collection.cloudwatch import RequestStats
from metrics_pipeline.collection.inventory import describe_instances
from metrics_pipeline.collection.resources import AwsResource
from metrics_pipeline.warehouse.resources import WarehouseResource
from metrics_pipeline_tests.helpers import rds_instances
from metrics_pipeline_tests.moto_fleet import ACCOUNT_ID, create_instance

pytestmark = [pytest.mark.usefixtures("moto_aws"), pytest.mark.storage_neutral]


def inventory(warehouse: WarehouseResource) -> dict[str, dict[str, Any]]:
    with warehouse.reader() as conn:
        cursor = conn.execute("SELECT * FROM rds_instances")
        names = [d[0] for d in cursor.description]
        return {row[2]: dict(zip(names, row, strict=True)) for row in cursor.fetchall()}


def test_discovers_both_regions_with_their_details(
    aws: AwsResource, warehouse: WarehouseResource
) -> None:
    created = datetime(2026, 10, 3, 12, 30, tzinfo=UTC)
    create_instance(
        "us-east-1",
        "orders-db",
        "postgres",
        "db.r6g.large",
        100,
        {"team": "shop", "env": "prod"},
        created,
    )
    create_instance("eu-west-1", "users-db", "mysql", "db.t3.micro", 20)
    result = materialize([rds_instances], resources={"aws": aws, "warehouse": warehouse})

    rows = inventory(warehouse)
    assert set(rows) == {"orders-db", "users-db"}
    orders = rows["orders-db"]
    assert orders["account_id"] == ACCOUNT_ID
    assert orders["region"] == "us-east-1"
    assert orders["engine"] == "postgres"
    assert orders["instance_class"] == "db.r6g.large"
    assert orders["allocated_storage_gb"] == 100
    assert orders["multi_az"] is False
    assert orders["status"] == "available"
    assert orders["create_time"] == datetime(2026, 10, 3, 12, 30)
    assert orders["tags"] == {"team": "shop", "env": "prod"}
    assert orders["engine_version"]
    [described] = boto3.client("rds", region_name="us-east-1").describe_db_instances()[
        "DBInstances"
    ]
    assert orders["dbi_resource_id"] == described["DbiResourceId"]
    assert rows["users-db"]["region"] == "eu-west-1"
    assert rows["users-db"]["engine"] == "mysql"
    assert rows["users-db"]["tags"] == {}
    [event] = result.asset_materializations_for_node("rds_instances")
    assert event.metadata["instances"].value == 2
    assert event.metadata["new_instances"].value == 2


def test_first_seen_is_kept_and_deleted_instances_stay(
    aws: AwsResource, warehouse: WarehouseResource
) -> None:
    create_instance("us-east-1", "orders-db")
    create_instance("us-east-1", "old-db")
    materialize([rds_instances], resources={"aws": aws, "warehouse": warehouse})
    before = inventory(warehouse)

    boto3.client("rds", region_name="us-east-1").delete_db_instance(
        DBInstanceIdentifier="old-db", SkipFinalSnapshot=True
    )
    create_instance("us-east-1", "new-db")
    result = materialize([rds_instances], resources={"aws": aws, "warehouse": warehouse})
    after = inventory(warehouse)

    assert set(after) == {"orders-db", "old-db", "new-db"}
    assert after["orders-db"]["first_seen"] == before["orders-db"]["first_seen"]
    assert after["orders-db"]["last_seen"] > before["orders-db"]["last_seen"]
    assert after["old-db"] == before["old-db"]  # history: last seen at the first discovery
    assert (
        after["new-db"]["first_seen"]
        == after["new-db"]["last_seen"]
        == after["orders-db"]["last_seen"]
    )
    [event] = result.asset_materializations_for_node("rds_instances")
    assert event.metadata["new_instances"].value == 1
    # Discovery listed two instances; the table keeps the deleted one as well.
    assert event.metadata["instances"].value == 2
    assert event.metadata["dagster/row_count"].value == 3


def test_describe_follows_pagination() -> None:
    for n in range(45):
        create_instance("us-east-1", f"db-{n:02d}")
    stats = RequestStats()
    client = boto3.client("rds", region_name="us-east-1")
    stats.attach(client)
    records = describe_instances(client, ACCOUNT_ID, "us-east-1", page_size=20)
    assert sorted(r["instance_id"] for r in records) == [f"db-{n:02d}" for n in range(45)]
    assert stats.by_operation == {"DescribeDBInstances": 3}
