"""Where a failed run is announced: always one line in the Dagster log (the daemon's output and
the sensor's tick), and, with METRICS_SLACK_WEBHOOK_URL set and the `slack` extra installed
(dagster-slack), the same line in a Slack channel through an incoming webhook."""

from __future__ import annotations

import logging

from dagster_shared.error import SerializableErrorInfo

logger = logging.getLogger("metrics_pipeline.alerts")

# Dagster's own wrappers around the error that failed a step: the alert names what is inside.
WRAPPER_CLASSES = {"DagsterExecutionStepExecutionError", "DagsterUserCodeExecutionError"}
RETRIES_EXHAUSTED = "Exceeded max_retries"


def root_cause(error: SerializableErrorInfo) -> SerializableErrorInfo:
    """The error that failed the step, beneath Dagster's wrappers and its "Exceeded max_retries"
    (which keeps the last attempt's error as its cause)."""
    while error.cause is not None and (
        error.cls_name in WRAPPER_CLASSES or error.message.startswith(RETRIES_EXHAUSTED)
    ):
        error = error.cause
    return error


def cause_line(error: SerializableErrorInfo | str | None) -> str:
    """The first line of the cause: a Failure's own words, any other exception's class name
    (without its module) and message."""
    cause = root_cause(error) if isinstance(error, SerializableErrorInfo) else None
    message = cause.message if cause else error if isinstance(error, str) else None
    line = (message or "no error message").strip().splitlines()[0]
    exception, _, text = line.partition(": ")
    if not text or " " in exception:
        return line
    if cause is None or cause.cls_name == "Failure":
        return text
    return f"{exception.rsplit('.', 1)[-1]}: {text}"


def alert_line(job: str, run_id: str, hours: str | None, cause: str) -> str:
    scope = f" for {hours}" if hours else ""
    return f"ALERT metrics_pipeline run {run_id} of {job}{scope} failed: {cause}"


def send_alert(line: str, slack_webhook_url: str | None) -> None:
    """Logs the line, then posts it to Slack when configured; a Slack failure is logged as a
    warning and never hides the alert itself."""
    logger.error(line)
    if slack_webhook_url is None:
        return
    try:
        from slack_sdk.webhook import WebhookClient
    except ImportError:
        logger.warning(
            "METRICS_SLACK_WEBHOOK_URL is set but dagster-slack is not installed: "
            "pip install 'metrics_pipeline[slack]'."
        )
        return
    try:
        response = WebhookClient(slack_webhook_url, timeout=10).send(text=line)
    except OSError as error:
        logger.warning(f"Slack alert not sent (METRICS_SLACK_WEBHOOK_URL): {error}")
        return
    if response.status_code != 200:
        logger.warning(
            f"Slack alert not sent (METRICS_SLACK_WEBHOOK_URL): HTTP {response.status_code} "
            f"{response.body}"
        )
