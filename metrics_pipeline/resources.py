"""The resources a deployment's Definitions get, built from its settings."""

from __future__ import annotations

from dagster import ConfigurableResource

from metrics_pipeline.collection.resources import AwsResource, CollectionResource
from metrics_pipeline.settings import Settings, duckdb_memory_limit_for
from metrics_pipeline.warehouse.resources import WarehouseResource


def build_resources(settings: Settings) -> dict[str, ConfigurableResource]:
    return {
        "aws": AwsResource(
            regions=list(settings.regions),
            role_arns=list(settings.role_arns),
            organization_role=settings.organization_role or "",
            external_id=settings.external_id or "",
            role_session_name=settings.role_session_name,
            max_requests_per_second=settings.max_requests_per_second,
            max_attempts=settings.aws_max_attempts,
            connect_timeout_seconds=settings.aws_connect_timeout_seconds,
            read_timeout_seconds=settings.aws_read_timeout_seconds,
        ),
        "collection": CollectionResource(
            period_seconds=settings.period_seconds,
            metrics=list(settings.metrics),
            statistics=list(settings.statistics),
            settle_minutes=settings.settle_minutes,
            chunk_datapoints=settings.chunk_datapoints,
            fetch_threads=settings.fetch_threads,
            chunk_timeout_seconds=settings.chunk_timeout_seconds,
            run_timeout_seconds=settings.run_timeout_seconds,
        ),
        "warehouse": WarehouseResource(
            database=str(settings.duckdb_path),
            lake_catalog=settings.warehouse or "",
            lake_data_path=settings.lake_data_path or "",
            retention_days=settings.retention_days,
            lock_timeout_seconds=settings.lock_timeout_seconds,
            connection_config={
                "memory_limit": settings.duckdb_memory_limit
                or duckdb_memory_limit_for(settings.chunk_datapoints)
            },
            backup_dir=str(settings.backups_path),
            backup_keep_days=settings.backup_keep_days,
            shared_group=settings.shared_group or "",
        ),
    }
