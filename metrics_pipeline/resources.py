"""The resources a deployment's Definitions get, built from its settings: each field that
carries a setting is filled from it (settings.resource_field), the rest here."""

from __future__ import annotations

from typing import TypedDict

from metrics_pipeline.collection.resources import AwsResource, CollectionResource
from metrics_pipeline.settings import Settings, duckdb_memory_limit_for, settings_for
from metrics_pipeline.warehouse.resources import WarehouseResource


class DeploymentResources(TypedDict):
    aws: AwsResource
    collection: CollectionResource
    warehouse: WarehouseResource


def build_resources(settings: Settings) -> DeploymentResources:
    return {
        "aws": AwsResource(**settings_for(AwsResource, settings)),
        "collection": CollectionResource(**settings_for(CollectionResource, settings)),
        "warehouse": WarehouseResource(
            **settings_for(WarehouseResource, settings),
            database=str(settings.duckdb_path),
            connection_config={
                "memory_limit": settings.duckdb_memory_limit
                or duckdb_memory_limit_for(settings.chunk_datapoints)
            },
        ),
    }
