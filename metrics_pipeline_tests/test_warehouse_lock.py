"""The warehouse held by another process for longer than the lock budget: one clear failure,
nothing written, and the hour collected once the file is free."""

from datetime import timedelta
from pathlib import Path

import duckdb
import pytest
from dagster import materialize

from metrics_pipeline.warehouse.resources import WarehouseResource
from metrics_pipeline_tests.helpers import (
    hold_write_lock,
    make_aws,
    make_collection,
    rds_instances,
    rds_metrics,
)
from metrics_pipeline_tests.moto_fleet import TWO_DAYS_AGO, create_instance, put_metrics


@pytest.mark.e2e
@pytest.mark.usefixtures("moto_aws")
def test_lock_held_past_the_budget(tmp_path: Path) -> None:
    create_instance("us-east-1", "orders-db")
    expected = put_metrics(
        "us-east-1",
        ["orders-db"],
        ["CPUUtilization"],
        TWO_DAYS_AGO,
        TWO_DAYS_AGO + timedelta(hours=1),
    )
    database = str(tmp_path / "metrics.duckdb")
    resources = {
        "aws": make_aws(),
        "collection": make_collection(metrics=["CPUUtilization"]),
        "warehouse": WarehouseResource(database=database, lock_timeout_seconds=1.5),
    }
    assert materialize([rds_instances], resources=resources).success
    key = TWO_DAYS_AGO.strftime("%Y-%m-%d-%H:%M")

    holder = hold_write_lock(database, 30)
    try:
        blocked = materialize(
            [rds_metrics], partition_key=key, resources=resources, raise_on_error=False
        )
    finally:
        holder.kill()
        holder.wait()
    assert not blocked.success
    message = blocked.get_step_failure_events()[0].step_failure_data.error.message
    assert f"The warehouse {database} is locked by another process" in message
    assert "not released within 1.5 s (METRICS_LOCK_TIMEOUT_SECONDS)" in message
    with duckdb.connect(database, read_only=True) as conn:
        assert conn.execute("SELECT count(*) FROM rds_metrics").fetchone() == (0,)

    assert materialize([rds_metrics], partition_key=key, resources=resources).success
    with duckdb.connect(database, read_only=True) as conn:
        rows = conn.execute("SELECT ts, average FROM rds_metrics").fetchall()
    assert {ts: avg for ts, avg in rows} == pytest.approx(
        {k[2]: v for k, v in expected.items() if k[3] == "average"}
    )
