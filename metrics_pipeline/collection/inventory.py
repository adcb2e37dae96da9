"""Discovery of RDS instances: DescribeDBInstances pages turned into inventory records."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from metrics_pipeline.hours import HOUR, hour_starts, naive_utc


@dataclass(frozen=True, order=True)
class Instance:
    """One RDS instance: the key shared by the inventory, metrics and fetch log."""

    account_id: str
    region: str
    instance_id: str


def instance_name(instance: Instance, qualified: bool) -> str:
    """How a run's config names an instance: `account_id/instance_id` where the inventory holds
    several accounts (the same identifier can be in two), else the identifier alone."""
    return f"{instance.account_id}/{instance.instance_id}" if qualified else instance.instance_id


def named_by(instance: Instance, names: Collection[str]) -> bool:
    """Whether `names` (identifiers, or account_id/identifier) include the instance."""
    return instance.instance_id in names or instance_name(instance, True) in names


DESCRIBE_PAGE_SIZE = 100  # DescribeDBInstances allows 20 to 100 records per page

# An instance counts as existing in a window if discovery saw it no earlier than this before
# the window began: deleted instances drop out, a missed discovery does not.
DISCOVERY_GRACE = timedelta(hours=2)


@dataclass(frozen=True)
class InventoryEntry:
    """What the inventory knows of an instance's life: enough to say when it existed."""

    instance: Instance
    create_time: datetime | None
    first_seen: datetime
    last_seen: datetime
    status: str | None = None

    def existed_during(self, start: datetime, end: datetime) -> bool:
        born = self.create_time or self.first_seen
        return born < end and self.last_seen >= start - DISCOVERY_GRACE


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


def instances_existing(
    inventory: Sequence[InventoryEntry],
    start: datetime,
    end: datetime,
    only: Collection[str] = (),
) -> list[Instance]:
    """The instances to collect for [start, end): those that existed, optionally a subset."""
    return [
        entry.instance
        for entry in inventory
        if entry.existed_during(start, end) and (not only or entry.instance.instance_id in only)
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
