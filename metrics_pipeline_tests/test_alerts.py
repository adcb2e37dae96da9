"""The run-failure sensor turns a failed run into one alert line naming its cause."""

import logging
from pathlib import Path

import pytest
from dagster import (
    DagsterEventType,
    build_run_status_sensor_context,
    instance_for_test,
    materialize,
)

from metrics_pipeline.collection.assets import rds_metrics
from metrics_pipeline.quality.sensors import run_failure_alert
from metrics_pipeline.warehouse.resources import WarehouseResource
from metrics_pipeline_tests.conftest import make_aws
from metrics_pipeline_tests.moto_fleet import TWO_DAYS_AGO


@pytest.mark.usefixtures("moto_aws")
def test_failed_run_gives_one_alert_line(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    key = TWO_DAYS_AGO.strftime("%Y-%m-%d-%H:%M")
    with instance_for_test() as instance:
        failed = materialize(
            [rds_metrics],
            partition_key=key,
            run_config={"ops": {"rds_metrics": {"config": {"instances": ["nope-db"]}}}},
            instance=instance,
            resources={
                "aws": make_aws(),
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
