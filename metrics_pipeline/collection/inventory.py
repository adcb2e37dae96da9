"""Discovery of RDS instances: DescribeDBInstances pages turned into inventory records."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from metrics_pipeline.hours import HOUR, hour_starts, naive_utc
from metrics_pipeline.warehouse.instances import InventoryEntry

DESCRIBE_PAGE_SIZE = 100  # DescribeDBInstances allows 20 to 100 records per page


def instance_record(db_instance: dict[str, Any], account_id: str, region: str) -> dict[str, Any]:
    """The inventory row of one instance as DescribeDBInstances describes it."""
    created = db_instance.get("InstanceCreateTime")
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
    }


def describe_instances(
    rds_client: Any, account_id: str, region: str, page_size: int = DESCRIBE_PAGE_SIZE
) -> list[dict[str, Any]]:
    paginator = rds_client.get_paginator("describe_db_instances")
    return [
        instance_record(db_instance, account_id, region)
        for page in paginator.paginate(PaginationConfig={"PageSize": page_size})
        for db_instance in page.get("DBInstances", [])
    ]


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
