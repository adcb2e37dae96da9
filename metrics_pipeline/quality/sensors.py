"""The run-failure alert: one line naming the failed run, its hours and its cause."""

from dagster import (
    DagsterEventType,
    DefaultSensorStatus,
    RunFailureSensorContext,
    SensorDefinition,
    run_failure_sensor,
)

from metrics_pipeline.dagster_runs import RANGE_END_TAG, RANGE_START_TAG
from metrics_pipeline.quality.alerts import alert_line, cause_line, send_alert
from metrics_pipeline.settings import Settings


def failure_summary(context: RunFailureSensorContext) -> str:
    """The failed step's own error (Dagster keeps it as the cause of its wrappers), and how many
    attempts the step had when its retry policy gave it more than one."""
    run_id = context.dagster_run.run_id
    failures = context.instance.all_logs(run_id, of_type=DagsterEventType.STEP_FAILURE)
    failure = failures[0].dagster_event if failures else None
    if failure is None or not failure.step_failure_data.error:
        return cause_line(context.failure_event.message)
    line = cause_line(failure.step_failure_data.error)
    retries = [
        event
        for event in context.instance.all_logs(run_id, of_type=DagsterEventType.STEP_UP_FOR_RETRY)
        if event.step_key == failure.step_key
    ]
    return f"{line} (gave up after {len(retries) + 1} step attempts)" if retries else line


def build_run_failure_alert(settings: Settings) -> SensorDefinition:
    @run_failure_sensor(
        default_status=DefaultSensorStatus.RUNNING,
        description=(
            "Announces every failed run with one alert line (and on Slack with "
            "METRICS_SLACK_WEBHOOK_URL)."
        ),
    )
    def run_failure_alert(context: RunFailureSensorContext) -> None:
        run = context.dagster_run
        start, end = run.tags.get(RANGE_START_TAG), run.tags.get(RANGE_END_TAG)
        hours = f"{start}..{end}" if start else run.tags.get("dagster/partition")
        line = alert_line(run.job_name, run.run_id, hours, failure_summary(context))
        context.log.error(line)
        send_alert(line, settings.slack_webhook_url)

    return run_failure_alert
