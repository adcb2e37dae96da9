"""The job the gap sensor launches to re-collect a source's settled hours that lack data."""

from __future__ import annotations

from typing import TYPE_CHECKING

from dagster import AssetKey, AssetSelection, define_asset_job

if TYPE_CHECKING:  # the type define_asset_job returns, which Dagster exports nowhere public
    from dagster._core.definitions.unresolved_asset_job_definition import (
        UnresolvedAssetJobDefinition,
    )

from metrics_pipeline.dagster_runs import HEALING_RUN_TAGS

HEALING_PRIORITY = "-10"


def healing_job_for(
    asset: AssetKey, name: str, priority: str = HEALING_PRIORITY
) -> UnresolvedAssetJobDefinition:
    return define_asset_job(
        name,
        selection=AssetSelection.assets(asset),
        description=(
            f"Re-collects settled hours of {asset.to_user_string()} that lack data "
            "(launched by the gap sensor)."
        ),
        tags={"dagster/priority": priority, **HEALING_RUN_TAGS},
    )
