"""Discovery across regions through Dagster, against moto's RDS."""

from datetime import UTC, datetime
from typing import Any

import boto3
import pytest
from dagster import materialize

from metrics_pipeline.collection.cloudwatch import RequestStats
from metrics_pipeline.collection.inventory import describe
from metrics_pipeline.collection.resources import AwsResource
from metrics_pipeline.local_aws.rds import install as paged_clusters
from metrics_pipeline.warehouse.resources import WarehouseResource
from metrics_pipeline_tests.helpers import rds_instances
from metrics_pipeline_tests.moto_fleet import ACCOUNT_ID, create_aurora_cluster, create_instance

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
    """DescribeDBClusters pages as in AWS with the local AWS's RDS (moto's alone does not)."""
    paged_clusters()
    for n in range(45):
        create_instance("us-east-1", f"db-{n:02d}")
    for n in range(21):
        create_aurora_cluster("us-east-1", f"cluster-{n:02d}", {f"member-{n:02d}": "writer"})
    stats = RequestStats()
    client = boto3.client("rds", region_name="us-east-1")
    stats.attach(client)
    described = describe(client, ACCOUNT_ID, "us-east-1", page_size=20)
    assert sorted(r["instance_id"] for r in described.instances) == [
        *(f"db-{n:02d}" for n in range(45)),
        *(f"member-{n:02d}" for n in range(21)),
    ]
    assert sorted(c["cluster_id"] for c in described.clusters) == [
        f"cluster-{n:02d}" for n in range(21)
    ]
    assert stats.by_operation == {"DescribeDBClusters": 2, "DescribeDBInstances": 4}


def test_discovers_aurora_clusters_their_members_roles_and_performance_insights(
    aws: AwsResource, warehouse: WarehouseResource
) -> None:
    """The inventory knows each Aurora instance's cluster and role, the clusters their
    Serverless v2 range and writer, and every instance whether Performance Insights is on and
    for how long it keeps data; an RDS Multi-AZ DB cluster is not an Aurora cluster."""
    created = datetime(2026, 10, 3, 12, 30)
    create_aurora_cluster(
        "us-east-1",
        "shop-aurora",
        {"shop-1": "writer", "shop-2": "reader", "shop-3": "reader"},
        insights_days={"shop-1": 7, "shop-3": 731},
        created=created,
    )
    create_aurora_cluster(
        "eu-west-1",
        "events-aurora",
        {"events-1": "writer"},
        engine="aurora-mysql",
        serverless_acu=(0.5, 16.0),
    )
    create_instance("us-east-1", "orders-db")
    boto3.client("rds", region_name="us-east-1").create_db_cluster(
        DBClusterIdentifier="multi-az-postgres",
        Engine="postgres",
        MasterUsername="admin",
        MasterUserPassword="password-123",
        DBClusterInstanceClass="db.m6gd.large",
        AllocatedStorage=100,
        StorageType="io1",
        Iops=1000,
    )
    result = materialize([rds_instances], resources={"aws": aws, "warehouse": warehouse})

    rows = inventory(warehouse)
    place = {
        name: (
            row["cluster_id"],
            row["cluster_role"],
            row["performance_insights_enabled"],
            row["performance_insights_retention_days"],
        )
        for name, row in rows.items()
    }
    assert place == {
        "shop-1": ("shop-aurora", "writer", True, 7),
        "shop-2": ("shop-aurora", "reader", False, None),
        "shop-3": ("shop-aurora", "reader", True, 731),
        "events-1": ("events-aurora", "writer", False, None),
        "orders-db": (None, None, False, None),
    }
    with warehouse.reader() as conn:
        clusters = conn.execute(
            "SELECT cluster_id, region, engine, serverless_min_acu, serverless_max_acu, "
            "writer_instance_id, reader_count, create_time FROM rds_clusters ORDER BY 1"
        ).fetchall()
        history = conn.execute(
            "SELECT instance_id, cluster_id, cluster_role FROM rds_instance_history "
            "WHERE cluster_id IS NOT NULL ORDER BY 1"
        ).fetchall()
    assert clusters[0][:7] == (
        "events-aurora",
        "eu-west-1",
        "aurora-mysql",
        0.5,
        16.0,
        "events-1",
        0,
    )
    assert clusters[1] == (
        "shop-aurora",
        "us-east-1",
        "aurora-postgresql",
        None,
        None,
        "shop-1",
        2,
        created,
    )
    assert len(clusters) == 2
    assert history == [
        ("events-1", "events-aurora", "writer"),
        ("shop-1", "shop-aurora", "writer"),
        ("shop-2", "shop-aurora", "reader"),
        ("shop-3", "shop-aurora", "reader"),
    ]
    [event] = result.asset_materializations_for_node("rds_instances")
    assert event.metadata["instances"].value == 5


def test_a_failover_is_a_new_version_of_both_instances(
    aws: AwsResource, warehouse: WarehouseResource
) -> None:
    """The writer and the reader it hands over to each get a version with their new role."""
    create_aurora_cluster("us-east-1", "shop-aurora", {"shop-1": "writer", "shop-2": "reader"})
    materialize([rds_instances], resources={"aws": aws, "warehouse": warehouse})
    boto3.client("rds", region_name="us-east-1").failover_db_cluster(
        DBClusterIdentifier="shop-aurora", TargetDBInstanceIdentifier="shop-2"
    )
    materialize([rds_instances], resources={"aws": aws, "warehouse": warehouse})

    with warehouse.reader() as conn:
        versions = conn.execute(
            "SELECT instance_id, cluster_role FROM rds_instance_history ORDER BY 1, valid_from"
        ).fetchall()
        [writer] = conn.execute("SELECT writer_instance_id FROM rds_clusters").fetchall()
    assert versions == [
        ("shop-1", "writer"),
        ("shop-1", "reader"),
        ("shop-2", "reader"),
        ("shop-2", "writer"),
    ]
    assert writer == ("shop-2",)
