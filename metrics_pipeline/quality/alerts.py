"""Where a failed run is announced. The alert line goes to the Dagster log (the daemon's
output and the sensor's tick); to page someone, extend `send_alert` (for Slack, dagster-slack's
`make_slack_on_run_failure_sensor` can replace the sensor; for e-mail, smtplib here)."""

import logging

logger = logging.getLogger("metrics_pipeline.alerts")


def alert_line(job: str, run_id: str, hours: str | None, error: str | None) -> str:
    scope = f" for {hours}" if hours else ""
    cause = (error or "no error message").strip().splitlines()[0]
    exception, _, text = cause.partition(": ")
    if text and " " not in exception:  # "pkg.module.Failure: what happened" -> what happened
        cause = text
    return f"ALERT metrics_pipeline run {run_id} of {job}{scope} failed: {cause}"


def send_alert(line: str) -> None:
    logger.error(line)
