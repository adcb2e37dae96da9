"""Discovery of RDS instances: DescribeDBInstances pages turned into inventory records."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

DESCRIBE_PAGE_SIZE = 100  # DescribeDBInstances allows 20 to 100 records per page


def _naive_utc(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    if value.tzinfo is None:
        return value
    return value.astimezone(UTC).replace(tzinfo=None)


def instance_record(db_instance: dict[str, Any], account_id: str, region: str) -> dict[str, Any]:
    """The inventory row of one instance as DescribeDBInstances describes it."""
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
        "create_time": _naive_utc(db_instance.get("InstanceCreateTime")),
        "tags": {tag["Key"]: tag.get("Value", "") for tag in db_instance.get("TagList", [])},
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
