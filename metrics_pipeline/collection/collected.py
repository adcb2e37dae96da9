"""What a collection run collects: which subjects (instances, Aurora clusters) the inventory
lists, which metrics each publishes, in which CloudWatch namespace, and where they are written.
One run's machinery (chunks, pages, budgets, writes) serves them all."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import duckdb

from metrics_pipeline.catalog import (
    RDS_CLUSTER_NAMESPACE,
    RDS_INSTANCE_NAMESPACE,
    Namespace,
    published_cluster_metrics,
    published_metrics,
)
from metrics_pipeline.collection.resources import CollectionResource
from metrics_pipeline.collection.store import (
    CLUSTER_DESTINATION,
    HOURLY_DESTINATION,
    RAW_DESTINATION,
    Destination,
)
from metrics_pipeline.warehouse.instances import InventoryEntry, read_clusters, read_inventory
from metrics_pipeline.warehouse.schema import CLUSTERS_TABLE, INSTANCES_TABLE


@dataclass(frozen=True)
class Collected:
    destination: Destination
    namespace: Namespace
    #: The inventory table that lists the subjects, for error messages.
    inventory_table: str
    #: Which subjects: a word for logs ("instance", "cluster").
    noun: str
    read: Callable[[duckdb.DuckDBPyConnection, Sequence[str] | None], list[InventoryEntry]]
    #: The metrics a subject is asked for: those of the setting that its kind publishes.
    metrics: Callable[[CollectionResource, InventoryEntry], tuple[str, ...]]


def _instance_metrics(collection: CollectionResource, entry: InventoryEntry) -> tuple[str, ...]:
    return published_metrics(collection.metrics, entry.instance_kind)


def _cluster_metrics(collection: CollectionResource, entry: InventoryEntry) -> tuple[str, ...]:
    return published_cluster_metrics(collection.cluster_metrics, entry.cluster_kind)


INSTANCE_METRICS = Collected(
    RAW_DESTINATION,
    RDS_INSTANCE_NAMESPACE,
    INSTANCES_TABLE,
    "instance",
    read_inventory,
    _instance_metrics,
)
INSTANCE_HOURLY_METRICS = Collected(
    HOURLY_DESTINATION,
    RDS_INSTANCE_NAMESPACE,
    INSTANCES_TABLE,
    "instance",
    read_inventory,
    _instance_metrics,
)
CLUSTER_METRICS = Collected(
    CLUSTER_DESTINATION,
    RDS_CLUSTER_NAMESPACE,
    CLUSTERS_TABLE,
    "cluster",
    read_clusters,
    _cluster_metrics,
)
