"""The resources a deployment's Definitions get, built from its settings."""

from __future__ import annotations

from dagster import ConfigurableResource

from metrics_pipeline.collection.resources import AwsResource, CollectionResource
from metrics_pipeline.settings import Settings
from metrics_pipeline.warehouse.resources import WarehouseResource


def build_resources(settings: Settings) -> dict[str, ConfigurableResource]:
    return {
        "aws": AwsResource(
            regions=list(settings.regions),
            max_requests_per_second=settings.max_requests_per_second,
            max_attempts=settings.aws_max_attempts,
        ),
        "collection": CollectionResource(
            period_seconds=settings.period_seconds,
            metrics=list(settings.metrics),
            statistics=list(settings.statistics),
            settle_minutes=settings.settle_minutes,
        ),
        "warehouse": WarehouseResource(
            database=str(settings.duckdb_path),
            retention_days=settings.retention_days,
            lock_timeout_seconds=settings.lock_timeout_seconds,
            connection_config=(
                {"memory_limit": settings.duckdb_memory_limit}
                if settings.duckdb_memory_limit
                else {}
            ),
            backup_dir=str(settings.backups_path),
            backup_keep_days=settings.backup_keep_days,
            shared_group=settings.shared_group or "",
        ),
    }
