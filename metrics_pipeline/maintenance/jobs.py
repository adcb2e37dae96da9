"""Retention and backup jobs, launched daily by their schedules or from the UI."""

from collections.abc import Mapping

from dagster import (
    AssetObservation,
    Failure,
    HourlyPartitionsDefinition,
    JobDefinition,
    MetadataValue,
    OpExecutionContext,
    Output,
    job,
    op,
)

from metrics_pipeline.collection.keys import RDS_METRICS
from metrics_pipeline.hours import oldest_kept_hour, partition_key, utc_now
from metrics_pipeline.maintenance.backups import (
    BackupError,
    create_backup,
    list_backups,
    prune_backups,
)
from metrics_pipeline.maintenance.retention import compact_lake, drop_rows_before
from metrics_pipeline.warehouse.resources import WAREHOUSE_POOL, WarehouseResource
from metrics_pipeline.warehouse.schema import METRICS_TABLE
from metrics_pipeline.warehouse.tables import HOURLY_TIER, RAW_TIER


def drop_expired_rows(
    context: OpExecutionContext,
    warehouse: WarehouseResource,
    hourly_partitions: HourlyPartitionsDefinition,
    hourly_retention_days: int | None = None,
    insights_retention_days: Mapping[str, int] | None = None,
) -> Output[int]:
    """Deletes each tier's rows older than its retention (the raw tier's METRICS_RETENTION_DAYS,
    the hourly tier's `hourly_retention_days`, kept forever when None), then checkpoints so the
    space is reused (on a lake: expires old snapshots, merges small files, deletes unneeded
    ones).

    Dagster OSS keeps partition status forever, so each dropped hour also gets an
    observation on rds_metrics saying its rows are gone: the UI's history stays honest.
    """
    now = utc_now()
    cutoff = oldest_kept_hour(now, warehouse.retention_days)
    cutoffs = {RAW_TIER: cutoff}
    if hourly_retention_days is not None:
        cutoffs[HOURLY_TIER] = oldest_kept_hour(now, hourly_retention_days)
    for tier, days in (insights_retention_days or {}).items():
        cutoffs[tier] = oldest_kept_hour(now, days)
    compaction = None
    with warehouse.connect() as conn:
        bytes_before = warehouse.stored_bytes(conn)
        trims = drop_rows_before(conn, cutoffs)
        if warehouse.lake:
            compaction = compact_lake(conn, now)
        else:
            conn.execute("CHECKPOINT")
        bytes_after = warehouse.stored_bytes(conn)

    valid_keys = set(hourly_partitions.get_partition_keys())
    dropped_hours = sorted(
        hour for trim in trims if trim.table == METRICS_TABLE for hour in trim.hours
    )
    for hour in dropped_hours:
        key = partition_key(hour)
        if key in valid_keys:
            context.log_event(
                AssetObservation(
                    asset_key=RDS_METRICS,
                    partition=key,
                    metadata={"dropped_by_retention": True, "cutoff": cutoff.isoformat()},
                )
            )
    rows = sum(trim.rows for trim in trims)
    context.log.info(
        f"Dropped {rows} row(s) older than {cutoff} UTC ({len(dropped_hours)} hour(s)); "
        f"{'lake files' if warehouse.lake else 'file'} {bytes_before} -> {bytes_after} bytes"
    )
    return Output(
        rows,
        metadata={
            "cutoff": cutoff.isoformat(),
            "retention_days": warehouse.retention_days,
            "hourly_retention_days": (
                "forever" if hourly_retention_days is None else hourly_retention_days
            ),
            "hours_dropped": len(dropped_hours),
            "rows_dropped": rows,
            **{f"rows_dropped_{trim.table}": trim.rows for trim in trims},
            "bytes_before": bytes_before,
            "bytes_after": bytes_after,
            **(vars(compaction) if compaction else {}),
            "oldest_dropped_hour": MetadataValue.text(
                dropped_hours[0].isoformat() if dropped_hours else "none"
            ),
        },
    )


def build_retention_job(
    hourly_partitions: HourlyPartitionsDefinition,
    hourly_retention_days: int | None = None,
    insights_retention_days: Mapping[str, int] | None = None,
) -> JobDefinition:
    """The retention job; observations go to the hours that `hourly_partitions` still lists.
    `insights_retention_days`: Performance Insights' tiers' days (kept when not named)."""

    @op(name="drop_expired_rows", pool=WAREHOUSE_POOL)
    def drop_expired_rows_op(
        context: OpExecutionContext, warehouse: WarehouseResource
    ) -> Output[int]:
        return drop_expired_rows(
            context, warehouse, hourly_partitions, hourly_retention_days, insights_retention_days
        )

    @job(
        description=(
            "Drops the raw tier's rows older than METRICS_RETENTION_DAYS, the hourly tier's "
            "older than METRICS_HOURLY_RETENTION_DAYS (when set), Performance Insights' load "
            "older than METRICS_PI_RETENTION_DAYS and its SQL text, users and hosts older than "
            "METRICS_PI_PERSONAL_RETENTION_DAYS; the daily tier is kept."
        )
    )
    def retention_job() -> None:
        drop_expired_rows_op()

    return retention_job


@op(description="Exports the latest snapshot to a new backup, then deletes expired ones.")
def back_up_warehouse(context: OpExecutionContext, warehouse: WarehouseResource) -> Output[str]:
    """Reads the snapshot, not the warehouse: collection runs on while the backup is taken."""
    now = utc_now().replace(microsecond=0)
    try:
        backup = create_backup(warehouse.read_source, warehouse.backups_path, now)
    except BackupError as error:
        raise Failure(description=str(error)) from None
    expired = prune_backups(warehouse.backups_path, warehouse.backup_keep_days, now)
    context.log.info(
        f"Backup {backup.name}: {sum(backup.rows.values())} row(s), {backup.size_bytes} bytes; "
        f"deleted {len(expired)} backup(s) older than {warehouse.backup_keep_days} day(s)"
    )
    return Output(
        backup.name,
        metadata={
            "backup": backup.name,
            "path": str(backup.path),
            "bytes": backup.size_bytes,
            **{f"rows_{table}": count for table, count in backup.rows.items()},
            "deleted_backups": ", ".join(b.name for b in expired) or "none",
            "kept_backups": len(list_backups(warehouse.backups_path)),
        },
    )


@job(
    description=(
        "Backs up the warehouse to Parquet (EXPORT DATABASE) without stopping collection; "
        "keeps METRICS_BACKUP_KEEP_DAYS days of backups."
    )
)
def backup_job() -> None:
    back_up_warehouse()
