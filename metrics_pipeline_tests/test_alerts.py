"""The run-failure sensor turns a failed run into one alert line naming its cause, logged and,
when a webhook is set, posted to Slack (a loopback HTTP server stands in for Slack)."""

import json
import logging
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from dagster import (
    DagsterEventType,
    build_run_status_sensor_context,
    instance_for_test,
    materialize,
)

from metrics_pipeline.quality.alerts import send_alert
from metrics_pipeline.quality.sensors import build_run_failure_alert
from metrics_pipeline.warehouse.resources import WarehouseResource
from metrics_pipeline_tests.helpers import (
    make_aws,
    make_collection,
    rds_metrics,
    settings_for_tests,
)
from metrics_pipeline_tests.moto_fleet import TWO_DAYS_AGO


class Webhook:
    """A loopback stand-in for a Slack incoming webhook: records what is posted."""

    def __init__(self, status: int) -> None:
        self.posted: list[dict] = []
        received = self.posted

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
                self.send_response(status)
                self.end_headers()
                self.wfile.write(b"ok" if status == 200 else b"invalid_token")

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/services/T0/B0/x"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def slack() -> Iterator[Webhook]:
    webhook = Webhook(200)
    yield webhook
    webhook.server.shutdown()


@pytest.mark.usefixtures("moto_aws")
def test_failed_run_gives_one_alert_line(
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    slack: Webhook,
) -> None:
    run_failure_alert = build_run_failure_alert(
        settings_for_tests(METRICS_SLACK_WEBHOOK_URL=slack.url)
    )
    key = TWO_DAYS_AGO.strftime("%Y-%m-%d-%H:%M")
    with instance_for_test() as instance:
        failed = materialize(
            [rds_metrics],
            partition_key=key,
            run_config={"ops": {"rds_metrics": {"config": {"instances": ["nope-db"]}}}},
            instance=instance,
            resources={
                "aws": make_aws(),
                "collection": make_collection(),
                "warehouse": WarehouseResource(database=str(tmp_path / "w.duckdb")),
            },
            raise_on_error=False,
        )
        assert not failed.success
        [failure] = instance.all_logs(failed.run_id, of_type=DagsterEventType.RUN_FAILURE)
        context = build_run_status_sensor_context(
            sensor_name="run_failure_alert",
            dagster_event=failure.dagster_event,
            dagster_instance=instance,
            dagster_run=instance.get_run_by_id(failed.run_id),
        ).for_run_failure()
        with caplog.at_level(logging.ERROR, logger="metrics_pipeline.alerts"):
            run_failure_alert(context)
    alerts = [r.getMessage() for r in caplog.records if r.name == "metrics_pipeline.alerts"]
    assert alerts == [
        f"ALERT metrics_pipeline run {failed.run_id} of __ephemeral_asset_job__ for {key} "
        "failed: instances: unknown instance id(s) nope-db; the inventory (rds_instances) "
        "does not list them."
    ]
    assert slack.posted == [{"text": alerts[0]}]


def test_a_slack_failure_is_a_warning_and_the_alert_still_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    refusing = Webhook(403)
    try:
        with caplog.at_level(logging.WARNING, logger="metrics_pipeline.alerts"):
            send_alert("ALERT x", refusing.url)
    finally:
        refusing.server.shutdown()
    assert [(r.levelname, r.getMessage()) for r in caplog.records] == [
        ("ERROR", "ALERT x"),
        ("WARNING", "Slack alert not sent (METRICS_SLACK_WEBHOOK_URL): HTTP 403 invalid_token"),
    ]
    assert refusing.posted == [{"text": "ALERT x"}]
