"""A dashboard on a warehouse collected from the local AWS: the browser test's stack, and the
one scripts/dashboard_screenshots.py photographs for the docs."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from dagster import materialize

from benchmarks.dashboard_pages import served
from metrics_pipeline.hours import HOUR, partition_key, utc_now
from metrics_pipeline.local_aws.fleet import SimulatedInstance, default_fleet
from metrics_pipeline.local_aws.server import LocalAws, start
from metrics_pipeline.local_aws.signals import series
from metrics_pipeline.rightsizing.assets import rightsizing_report
from metrics_pipeline.warehouse.resources import WarehouseResource
from metrics_pipeline_tests.helpers import (
    busy_hour,
    make_aws,
    make_collection,
    rds_instances,
    rds_metrics,
    rds_pi_load,
)

PERIOD = make_collection().period_seconds  # the tests' collection period
# Judged on the hours there are, with thresholds that find every database outside Aurora too
# big: a rightsizing report with findings to chart.
THRESHOLDS = {"min_coverage": 0.01, "cpu_low_pct": 99.0, "connections_low": 1e6}


@dataclass
class Served:
    """The dashboard's process, and what its warehouse was collected from."""

    url: str
    local: LocalAws
    hours: list[datetime]  # the hours collected, oldest first
    folder: Path

    def simulated(self, instance_id: str) -> SimulatedInstance:
        [found] = [s for s in self.local.simulator.fleet.values() if s.instance_id == instance_id]
        return found

    def averages(self, instance_id: str, metric: str) -> dict[datetime, float]:
        """The period averages the local AWS serves for the collected hours."""
        simulated = self.simulated(instance_id)
        profile = self.local.simulator.profile(
            simulated.account_id, simulated.region, simulated.instance_id
        )
        seconds, values = series(
            profile, metric, "Average", PERIOD, self.hours[0], self.hours[-1] + HOUR,
            datetime.now(UTC),
        )  # fmt: skip
        return {
            datetime.fromtimestamp(s, UTC).replace(tzinfo=None): v
            for s, v in zip(seconds.tolist(), values.tolist(), strict=True)
        }


@contextmanager
def dashboard_stack(folder: Path, hours: int) -> Iterator[Served]:
    """The local AWS's default fleet, `hours` settled hours collected (CloudWatch and
    Performance Insights) into a DuckDB file with a rightsizing report, and the dashboard
    serving it from its own process. The hours end with the latest busy one, so that the last
    day has Performance Insights load to chart whatever the time of day."""
    local = start(default_fleet(datetime.now(UTC)))
    last = busy_hour(utc_now())
    collected = [last - timedelta(hours=n) for n in range(hours - 1, -1, -1)]
    database = str(folder / "metrics.duckdb")
    try:
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv("AWS_ACCESS_KEY_ID", "local")
            patch.setenv("AWS_SECRET_ACCESS_KEY", "local")
            resources = {
                "aws": make_aws(endpoint_url=local.url, pi_requests_per_second=1000),
                "collection": make_collection(),
                "warehouse": WarehouseResource(database=database),
            }
            assert materialize([rds_instances], resources=resources).success
            for hour in collected:
                assert materialize(
                    [rds_metrics, rds_pi_load],
                    partition_key=partition_key(hour),
                    resources=resources,
                ).success
            config = {"ops": {"rightsizing_report": {"config": THRESHOLDS}}}
            assert materialize([rightsizing_report], resources=resources, run_config=config).success
        env = {**os.environ, "METRICS_DUCKDB_PATH": database}
        for name in ("METRICS_WAREHOUSE", "METRICS_LAKE_DATA_PATH", "DAGSTER_HOME"):
            env.pop(name, None)
        with served(env, folder) as url:
            yield Served(url, local, collected, folder)
    finally:
        local.stop()
