"""The instances the warehouse keeps: their key, what the inventory knows of their lives, and
which of their hours the fetch log holds as settled. Every domain reads them from here, the
analysts' API as much as the collection that writes them."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import duckdb

from metrics_pipeline.catalog import ClusterKind, InstanceKind
from metrics_pipeline.warehouse.schema import (
    CLUSTERS_TABLE,
    INSTANCES_TABLE,
    column_names,
    table_exists,
)


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
    # What decides which metrics it publishes: an instance's kind, or a cluster's.
    kind: InstanceKind | ClusterKind = field(default_factory=InstanceKind)

    @property
    def instance_kind(self) -> InstanceKind:
        if not isinstance(self.kind, InstanceKind):
            raise TypeError(f"{self.instance} is an Aurora cluster, not an instance")
        return self.kind

    @property
    def cluster_kind(self) -> ClusterKind:
        if not isinstance(self.kind, ClusterKind):
            raise TypeError(f"{self.instance} is an instance, not an Aurora cluster")
        return self.kind

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


# What the inventory says of an instance's kind, as InstanceKind's fields.
KIND_COLUMNS = ("engine", "instance_class", "cluster_role", "performance_insights_enabled")


def read_inventory(
    conn: duckdb.DuckDBPyConnection, regions: Sequence[str] | None = None
) -> list[InventoryEntry]:
    """The inventory of the collected regions (all when None), oldest key first; empty before
    discovery. A kind the warehouse does not hold yet (before its migration) is unknown."""
    if not table_exists(conn, INSTANCES_TABLE):
        return []
    held = column_names(conn, INSTANCES_TABLE)
    kind = ", ".join(column if column in held else "NULL" for column in KIND_COLUMNS)
    rows = conn.execute(
        f"""
        SELECT account_id, region, instance_id, create_time, first_seen, last_seen, status,
               {kind}
        FROM {INSTANCES_TABLE}
        WHERE $regions::VARCHAR[] IS NULL OR list_contains($regions::VARCHAR[], region)
        ORDER BY region, account_id, instance_id
        """,
        {"regions": None if regions is None else list(regions)},
    ).fetchall()
    return [
        InventoryEntry(
            Instance(*row[:3]),
            create_time=row[3],
            first_seen=row[4],
            last_seen=row[5],
            status=row[6],
            kind=InstanceKind(row[7], row[8], row[9], bool(row[10])),
        )
        for row in rows
    ]


def read_clusters(
    conn: duckdb.DuckDBPyConnection, regions: Sequence[str] | None = None
) -> list[InventoryEntry]:
    """The Aurora clusters of the collected regions (all when None), as inventory entries keyed
    (account, region, cluster identifier); empty before the first discovery that lists them."""
    if not table_exists(conn, CLUSTERS_TABLE):
        return []
    rows = conn.execute(
        f"""
        SELECT account_id, region, cluster_id, create_time, first_seen, last_seen, status,
               engine, serverless_max_acu IS NOT NULL, global_cluster_id IS NOT NULL
        FROM {CLUSTERS_TABLE}
        WHERE $regions::VARCHAR[] IS NULL OR list_contains($regions::VARCHAR[], region)
        ORDER BY region, account_id, cluster_id
        """,
        {"regions": None if regions is None else list(regions)},
    ).fetchall()
    return [
        InventoryEntry(
            Instance(*row[:3]),
            create_time=row[3],
            first_seen=row[4],
            last_seen=row[5],
            status=row[6],
            kind=ClusterKind(row[7], bool(row[8]), bool(row[9])),
        )
        for row in rows
    ]
