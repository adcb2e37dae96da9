"""Retention and backups, once a day."""

from dagster import (
    DefaultScheduleStatus,
    RunRequest,
    ScheduleDefinition,
    schedule,
)

from metrics_pipeline.maintenance.jobs import backup_job


@schedule(
    job_name="retention_job",
    cron_schedule="20 0 * * *",
    execution_timezone="UTC",
    default_status=DefaultScheduleStatus.RUNNING,
    description="Drops data older than METRICS_RETENTION_DAYS, daily at 00:20 UTC.",
)
def retention_schedule() -> RunRequest:
    return RunRequest()


backup_schedule = ScheduleDefinition(
    name="backup_schedule",
    job=backup_job,
    cron_schedule="40 0 * * *",
    execution_timezone="UTC",
    default_status=DefaultScheduleStatus.RUNNING,
    description="Backs up the warehouse daily at 00:40 UTC, after retention has trimmed it.",
)
