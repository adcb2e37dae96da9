"""The run-failure alert: one line naming the failed run, its hours and its cause."""

from dagster import (
    DagsterEventType,
    DefaultSensorStatus,
    RunFailureSensorContext,
    run_failure_sensor,
)

from metrics_pipeline.collection.schedules import (
    RANGE_END_TAG,
    RANGE_START_TAG,
)
from metrics_pipeline.quality.alerts import alert_line, send_alert


@run_failure_sensor(
    default_status=DefaultSensorStatus.RUNNING,
    description="Announces every failed run with one alert line (see alerts.py to page someone).",
)
def run_failure_alert(context: RunFailureSensorContext) -> None:
    run = context.dagster_run
    start, end = run.tags.get(RANGE_START_TAG), run.tags.get(RANGE_END_TAG)
    hours = f"{start}..{end}" if start else run.tags.get("dagster/partition")
    step_failures = context.instance.all_logs(run.run_id, of_type=DagsterEventType.STEP_FAILURE)
    error = (
        step_failures[0].dagster_event.step_failure_data.error.message
        if step_failures and step_failures[0].dagster_event.step_failure_data.error
        else context.failure_event.message
    )
    line = alert_line(run.job_name, run.run_id, hours, error)
    context.log.error(line)
    send_alert(line)
