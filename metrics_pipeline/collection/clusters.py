"""Aurora's cluster-level metrics (AWS/RDS by DBClusterIdentifier: the volume, its I/O, the
Serverless v2 capacity, a Global Database's lag) as a source of their own: the clusters the
discovery lists, collected by the fresh collection beside the instances, with a fetch log the
gap sensor heals like the instances'."""

from collections.abc import Sequence
from datetime import datetime, timedelta

import duckdb
from dagster import (
    AssetChecksDefinition,
    AssetExecutionContext,
    AssetsDefinition,
    BackfillPolicy,
    Definitions,
    HourlyPartitionsDefinition,
    MaterializeResult,
    RunRequest,
    asset,
)

from metrics_pipeline.catalog import expected_cluster_metrics, published_cluster_metrics
from metrics_pipeline.collection.assets import (
    CollectionConfig,
    aws_retry_policy,
    materialize_rds_metrics,
)
from metrics_pipeline.collection.checks import sanity_check
from metrics_pipeline.collection.collected import CLUSTER_METRICS
from metrics_pipeline.collection.keys import RDS_CLUSTER_METRICS, RDS_INSTANCES
from metrics_pipeline.collection.resources import AwsResource, CollectionResource
from metrics_pipeline.collection.source import CloudWatchRds
from metrics_pipeline.hours import Clock, utc_now
from metrics_pipeline.metadata import table_asset
from metrics_pipeline.partitions import Partitions
from metrics_pipeline.settings import Settings
from metrics_pipeline.sources.jobs import healing_job_for
from metrics_pipeline.warehouse.fetch_log import FetchLog
from metrics_pipeline.warehouse.instances import Instance, InventoryEntry, read_clusters
from metrics_pipeline.warehouse.resources import WarehouseResource
from metrics_pipeline.warehouse.schema import CLUSTER_FETCHES_TABLE, CLUSTER_METRICS_TABLE


def build_cluster_assets(
    settings: Settings, hourly_partitions: HourlyPartitionsDefinition, clock: Clock = utc_now
) -> list[AssetsDefinition]:
    def collect_rds_cluster_metrics(
        context: AssetExecutionContext,
        config: CollectionConfig,
        aws: AwsResource,
        collection: CollectionResource,
        warehouse: WarehouseResource,
    ) -> MaterializeResult:
        return materialize_rds_metrics(
            context, config, aws, collection, warehouse, clock, CLUSTER_METRICS
        )

    return [
        asset(
            key=RDS_CLUSTER_METRICS,
            **table_asset(CLUSTER_METRICS_TABLE, reads_aws=True),
            partitions_def=hourly_partitions,
            backfill_policy=BackfillPolicy.single_run(),
            retry_policy=aws_retry_policy(settings),
            deps=[RDS_INSTANCES],
            description=(
                "Aurora's cluster-level CloudWatch metrics (AWS/RDS by DBClusterIdentifier) of "
                f"every cluster in rds_clusters, one partition per UTC hour (DuckDB table "
                f"`{CLUSTER_METRICS_TABLE}`, fetch log `{CLUSTER_FETCHES_TABLE}`): "
                "METRICS_CLUSTER_METRICS, each asked only of the clusters that publish it. "
                "Collected by the fresh collection beside rds_metrics, healed by the gap "
                "sensor, trimmed by METRICS_RETENTION_DAYS."
            ),
        )(collect_rds_cluster_metrics)
    ]


class CloudWatchRdsClusters(CloudWatchRds):
    """The Aurora clusters of the same accounts, regions and quota as the instances
    (CloudWatchRds), at the collection period."""

    name = "cloudwatch_rds_clusters"
    asset = RDS_CLUSTER_METRICS
    fetch_log = FetchLog(CLUSTER_FETCHES_TABLE, "cluster_id")
    healing_job = healing_job_for(RDS_CLUSTER_METRICS, "cluster_healing_job")
    jobs = (healing_job,)

    def definitions(self, settings: Settings, partitions: Partitions) -> Definitions:
        return Definitions(assets=build_cluster_assets(settings, partitions.hourly), jobs=self.jobs)

    def subjects(
        self, conn: duckdb.DuckDBPyConnection, regions: Sequence[str] | None
    ) -> list[InventoryEntry]:
        return read_clusters(conn, regions)

    def datapoints_per_subject_hour(
        self, settings: Settings, subjects: Sequence[InventoryEntry]
    ) -> int:
        most = max(
            (
                len(published_cluster_metrics(settings.cluster_metrics, s.cluster_kind))
                for s in subjects
            ),
            default=1,
        )
        return most * len(settings.statistics) * (3600 // settings.period_seconds)

    def rows_per_subject_hour(
        self, conn: duckdb.DuckDBPyConnection, start: datetime, end: datetime
    ) -> dict[tuple[Instance, datetime], int]:
        rows = conn.execute(
            f"""
            SELECT account_id, region, cluster_id, date_trunc('hour', ts), count(*)
            FROM {CLUSTER_METRICS_TABLE} WHERE ts >= $start AND ts < $end GROUP BY ALL
            """,
            {"start": start, "end": end},
        ).fetchall()
        return {(Instance(*row[:3]), row[3]): int(row[4]) for row in rows}

    def expected_rows_per_subject_hour(self, settings: Settings, subject: InventoryEntry) -> int:
        expected = expected_cluster_metrics(settings.cluster_metrics, subject.cluster_kind)
        return (3600 // settings.period_seconds) * len(expected)

    def newest_period(
        self, conn: duckdb.DuckDBPyConnection, settings: Settings
    ) -> tuple[datetime, datetime] | None:
        [(newest,)] = conn.execute(f"SELECT max(ts) FROM {CLUSTER_METRICS_TABLE}").fetchall()
        if newest is None:
            return None
        return newest, newest + timedelta(seconds=settings.period_seconds)

    def first_run(self, settings: Settings, now: datetime) -> RunRequest | None:
        """None: the instances' first collection (the fresh job) collects the clusters too."""
        return None

    def checks(self, settings: Settings, clock: Clock) -> list[AssetChecksDefinition]:
        return [sanity_check(self.asset, settings, clock, CLUSTER_METRICS.destination)]


CLOUDWATCH_RDS_CLUSTERS = CloudWatchRdsClusters()
