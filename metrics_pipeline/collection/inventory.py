"""Discovery of RDS instances: DescribeDBInstances pages turned into inventory records."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from metrics_pipeline.catalog import READER, WRITER
from metrics_pipeline.hours import HOUR, hour_starts, naive_utc
from metrics_pipeline.warehouse.instances import InventoryEntry

DESCRIBE_PAGE_SIZE = 100  # DescribeDBInstances and DescribeDBClusters allow 20 to 100 a page


def instance_record(
    db_instance: dict[str, Any], account_id: str, region: str, roles: dict[str, str] | None = None
) -> dict[str, Any]:
    """The inventory row of one instance as DescribeDBInstances describes it, with its role in
    its Aurora cluster from `roles` (instance identifier to writer or reader)."""
    created = db_instance.get("InstanceCreateTime")
    insights = bool(db_instance.get("PerformanceInsightsEnabled"))
    return {
        "account_id": account_id,
        "region": region,
        "instance_id": db_instance["DBInstanceIdentifier"],
        "engine": db_instance.get("Engine"),
        "engine_version": db_instance.get("EngineVersion"),
        "instance_class": db_instance.get("DBInstanceClass"),
        "allocated_storage_gb": db_instance.get("AllocatedStorage"),
        "multi_az": db_instance.get("MultiAZ"),
        "status": db_instance.get("DBInstanceStatus"),
        "create_time": naive_utc(created) if created else None,
        "tags": {tag["Key"]: tag.get("Value", "") for tag in db_instance.get("TagList", [])},
        "dbi_resource_id": db_instance.get("DbiResourceId"),
        "cluster_id": db_instance.get("DBClusterIdentifier"),
        "cluster_role": (roles or {}).get(db_instance["DBInstanceIdentifier"]),
        "performance_insights_enabled": insights,
        "performance_insights_retention_days": (
            db_instance.get("PerformanceInsightsRetentionPeriod") if insights else None
        ),
    }


def cluster_roles(db_clusters: Sequence[dict[str, Any]]) -> dict[str, str]:
    """Each member instance's role, writer or reader, as DescribeDBClusters lists them."""
    return {
        member["DBInstanceIdentifier"]: WRITER if member.get("IsClusterWriter") else READER
        for cluster in db_clusters
        for member in cluster.get("DBClusterMembers", [])
    }


def cluster_record(db_cluster: dict[str, Any], account_id: str, region: str) -> dict[str, Any]:
    """The rds_clusters row of one Aurora cluster as DescribeDBClusters describes it."""
    created = db_cluster.get("ClusterCreateTime")
    scaling = db_cluster.get("ServerlessV2ScalingConfiguration") or {}
    members = db_cluster.get("DBClusterMembers", [])
    writers = [m["DBInstanceIdentifier"] for m in members if m.get("IsClusterWriter")]
    return {
        "account_id": account_id,
        "region": region,
        "cluster_id": db_cluster["DBClusterIdentifier"],
        "engine": db_cluster.get("Engine"),
        "engine_version": db_cluster.get("EngineVersion"),
        "engine_mode": db_cluster.get("EngineMode"),
        "status": db_cluster.get("Status"),
        "serverless_min_acu": scaling.get("MinCapacity"),
        "serverless_max_acu": scaling.get("MaxCapacity"),
        "writer_instance_id": writers[0] if writers else None,
        "reader_count": len(members) - len(writers),
        "global_cluster_id": db_cluster.get("GlobalClusterIdentifier"),
        "db_cluster_resource_id": db_cluster.get("DbClusterResourceId"),
        "create_time": naive_utc(created) if created else None,
        "tags": {tag["Key"]: tag.get("Value", "") for tag in db_cluster.get("TagList", [])},
    }


def is_aurora_cluster(db_cluster: dict[str, Any]) -> bool:
    """DescribeDBClusters lists Multi-AZ DB clusters of RDS for MySQL and PostgreSQL too: their
    metrics are the instances', not Aurora's."""
    return str(db_cluster.get("Engine", "")).startswith("aurora")


@dataclass(frozen=True)
class Described:
    """What discovery found in one account and region."""

    instances: list[dict[str, Any]]
    clusters: list[dict[str, Any]]


def describe(
    rds_client: Any, account_id: str, region: str, page_size: int = DESCRIBE_PAGE_SIZE
) -> Described:
    """Its Aurora clusters (DescribeDBClusters), then its instances with their role in them."""
    db_clusters = [
        db_cluster
        for page in rds_client.get_paginator("describe_db_clusters").paginate(
            PaginationConfig={"PageSize": page_size}
        )
        for db_cluster in page.get("DBClusters", [])
        if is_aurora_cluster(db_cluster)
    ]
    roles = cluster_roles(db_clusters)
    paginator = rds_client.get_paginator("describe_db_instances")
    instances = [
        instance_record(db_instance, account_id, region, roles)
        for page in paginator.paginate(PaginationConfig={"PageSize": page_size})
        for db_instance in page.get("DBInstances", [])
    ]
    return Described(instances, [cluster_record(c, account_id, region) for c in db_clusters])


def hours_before_creation(
    entries: Sequence[InventoryEntry], start: datetime, end: datetime
) -> dict[str, int]:
    """Per instance, the whole hours of [start, end) that ended before its creation time."""
    counts = {}
    for entry in entries:
        if entry.create_time is None:
            continue
        before = sum(h + HOUR <= entry.create_time for h in hour_starts(start, end))
        if before:
            counts[entry.instance.instance_id] = before
    return counts
