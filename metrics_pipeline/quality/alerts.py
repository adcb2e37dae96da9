"""Where a failed run is announced: always one line in the Dagster log (the daemon's output and
the sensor's tick), and, with METRICS_SLACK_WEBHOOK_URL set and the `slack` extra installed
(dagster-slack), the same line in a Slack channel through an incoming webhook."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping

logger = logging.getLogger("metrics_pipeline.alerts")
SLACK_WEBHOOK_SETTING = "METRICS_SLACK_WEBHOOK_URL"


class AlertConfigError(ValueError):
    """The alert setting cannot be used; the message names it."""


def alert_line(job: str, run_id: str, hours: str | None, error: str | None) -> str:
    scope = f" for {hours}" if hours else ""
    cause = (error or "no error message").strip().splitlines()[0]
    exception, _, text = cause.partition(": ")
    if text and " " not in exception:  # "pkg.module.Failure: what happened" -> what happened
        cause = text
    return f"ALERT metrics_pipeline run {run_id} of {job}{scope} failed: {cause}"


def slack_webhook_url(environ: Mapping[str, str] | None = None) -> str | None:
    """The Slack incoming webhook to post alerts to, if one is set; read when an alert is sent."""
    raw = (os.environ if environ is None else environ).get(SLACK_WEBHOOK_SETTING, "").strip()
    if not raw:
        return None
    if not raw.startswith(("https://", "http://")):
        raise AlertConfigError(
            f"{SLACK_WEBHOOK_SETTING}: '{raw}' is not allowed; expected the https:// URL of a "
            "Slack incoming webhook."
        )
    return raw


def send_alert(line: str, environ: Mapping[str, str] | None = None) -> None:
    """Logs the line, then posts it to Slack when configured; a Slack failure is logged as a
    warning and never hides the alert itself."""
    logger.error(line)
    try:
        url = slack_webhook_url(environ)
    except AlertConfigError as error:
        logger.warning(str(error))
        return
    if url is None:
        return
    try:
        from slack_sdk.webhook import WebhookClient
    except ImportError:
        logger.warning(
            f"{SLACK_WEBHOOK_SETTING} is set but dagster-slack is not installed: "
            "pip install 'metrics_pipeline[slack]'."
        )
        return
    try:
        response = WebhookClient(url, timeout=10).send(text=line)
    except OSError as error:
        logger.warning(f"Slack alert not sent ({SLACK_WEBHOOK_SETTING}): {error}")
        return
    if response.status_code != 200:
        logger.warning(
            f"Slack alert not sent ({SLACK_WEBHOOK_SETTING}): HTTP {response.status_code} "
            f"{response.body}"
        )
