"""The subjects a source keeps series of (an RDS instance, an Aurora cluster) and when each
existed: what the gap sensor and the checks need to know which hours should have data."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta


@dataclass(frozen=True, order=True)
class Instance:
    """One subject: the key shared by a source's inventory, series and fetch log. For the RDS
    sources an instance identifier; a cluster source keys its clusters the same way."""

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
