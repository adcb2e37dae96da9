"""The code location loads, and its pieces are wired as the product promises."""

import os
import shutil
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from dagster import AssetKey, BackfillPolicy, DagsterInstance, Definitions

from metrics_pipeline.definitions import defs as code_location
from metrics_pipeline.settings import load_settings
from metrics_pipeline.warehouse.resources import WarehouseResource
from metrics_pipeline.warehouse.schema import base_tables
from metrics_pipeline_tests.helpers import PROJECT_ROOT


@pytest.fixture
def defs() -> Definitions:
    """The code location as Dagster loads it, from this test's environment."""
    return code_location()


def test_definitions_load_with_every_asset(defs: Definitions) -> None:
    graph = defs.resolve_asset_graph()
    assert graph.get_all_asset_keys() == {
        AssetKey(name)
        for name in (
            "rds_instances",
            "rds_metrics",
            "rds_metrics_hourly",
            "rds_metrics_daily",
            "pipeline_health",
            "rightsizing_report",
        )
    }
    metrics = graph.get(AssetKey("rds_metrics"))
    assert metrics.parent_keys == {AssetKey("rds_instances")}
    assert metrics.backfill_policy == BackfillPolicy.single_run()
    assert defs.resolve_assets_def("rds_metrics").op.pool == "duckdb_warehouse"
    assert defs.resolve_assets_def("rds_instances").op.pool == "duckdb_warehouse"


def test_resources_come_from_the_environment(defs: Definitions) -> None:
    resources = defs.resources
    assert resources["warehouse"].database == str(load_settings().duckdb_path)
    assert resources["aws"].regions == ["us-east-1"]  # conftest's AWS_DEFAULT_REGION
    assert resources["aws"].period_seconds == 300


def test_last_partition_is_the_hour_in_progress(defs: Definitions) -> None:
    now = datetime.now(UTC)
    keys = defs.resolve_assets_def("rds_metrics").partitions_def.get_partition_keys(
        current_time=now
    )
    assert keys[-1] == now.strftime("%Y-%m-%d-%H:00")
    # By default the first partition is midnight UTC, METRICS_RETENTION_DAYS (7) days ago.
    assert keys[0] == (now - timedelta(days=7)).strftime("%Y-%m-%d-00:00")


def test_project_instance_allows_one_warehouse_writer(tmp_path: Path) -> None:
    shutil.copy(PROJECT_ROOT / "dagster.yaml", tmp_path / "dagster.yaml")
    instance = DagsterInstance.from_config(str(tmp_path))
    pool = instance.event_log_storage.get_concurrency_info("duckdb_warehouse")
    assert pool.limit == 1
    assert instance.get_concurrency_config().run_queue_config.max_concurrent_runs == 4
    assert instance.run_retries_enabled and instance.run_retries_max_retries == 2
    assert not instance.run_retries_retry_on_asset_or_op_failure


def test_schedules_sensor_and_jobs_are_loaded(defs: Definitions) -> None:
    assert {s.name for s in defs.schedules} == {
        "fresh_collection_schedule",
        "retention_schedule",
        "backup_schedule",
    }
    assert {s.name for s in defs.sensors} == {
        "gap_healing_sensor",
        "run_failure_alert",
        "derived_assets_automation",
    }
    # Everything that runs on its own is on from the start, without a click in the UI.
    automation = [*defs.schedules, *defs.sensors]
    assert all(a.default_status.value == "RUNNING" for a in automation)
    for job in ("fresh_collection_job", "healing_job", "retention_job", "backup_job"):
        assert defs.resolve_job_def(job).name == job


def test_loading_the_definitions_warns_of_no_beta_feature_the_project_chose() -> None:
    """Each run and sensor tick loads the definitions: a warning there floods the logs."""
    load = (
        "import warnings\n"
        "from dagster import BetaWarning\n"
        "warnings.simplefilter('error', BetaWarning)\n"
        "import metrics_pipeline.definitions\n"
        "metrics_pipeline.definitions.defs()\n"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", load],
        env={**os.environ, "METRICS_AWS_REGIONS": "us-east-1"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert loaded.returncode == 0, loaded.stderr[-2000:]


def test_the_definitions_are_what_the_docs_describe(defs: Definitions) -> None:
    """Names, partitions, pools, lineage and automation of every asset, and every job,
    schedule and sensor: a refactor that changes any of them shows here."""
    graph = defs.resolve_asset_graph()
    assets = {
        key.to_user_string(): (
            type(node.partitions_def).__name__ if node.partitions_def else None,
            tuple(sorted(node.pools or ())),
            tuple(sorted(parent.to_user_string() for parent in node.parent_keys)),
            node.automation_condition.get_label() if node.automation_condition else None,
        )
        for key in graph.get_all_asset_keys()
        for node in [graph.get(key)]
    }
    pool = ("duckdb_warehouse",)
    assert assets == {
        "rds_instances": (None, pool, (), None),
        "rds_metrics": ("HourlyPartitionsDefinition", pool, ("rds_instances",), None),
        "rds_metrics_hourly": (
            "HourlyPartitionsDefinition",
            pool,
            ("rds_metrics",),
            "eager, every hour",
        ),
        "rds_metrics_daily": (
            "DailyPartitionsDefinition",
            pool,
            ("rds_metrics_hourly",),
            "when any of its hours changes",
        ),
        "pipeline_health": (
            None,
            (),
            ("rds_metrics",),
            "on cron 5 * * * * (whatever happened), and once inputs exist",
        ),
        "rightsizing_report": (
            None,
            pool,
            ("rds_instances", "rds_metrics"),
            "on cron 10 * * * * (after input updates), and once inputs exist",
        ),
    }
    assert {job.name for job in defs.jobs} == {
        "fresh_collection_job",
        "healing_job",
        "retention_job",
        "backup_job",
    }
    assert {(s.name, s.cron_schedule, s.job_name) for s in defs.schedules} == {
        ("fresh_collection_schedule", "*/15 * * * *", "fresh_collection_job"),
        ("retention_schedule", "20 0 * * *", "retention_job"),
        ("backup_schedule", "40 0 * * *", "backup_job"),
    }
    assert {(s.name, type(s).__name__) for s in defs.sensors} == {
        ("gap_healing_sensor", "SensorDefinition"),
        ("run_failure_alert", "RunStatusSensorDefinition"),
        ("derived_assets_automation", "AutomationConditionSensorDefinition"),
    }


def test_table_assets_show_the_columns_of_the_real_tables(
    defs: Definitions, warehouse: WarehouseResource
) -> None:
    Path(warehouse.database).parent.mkdir(parents=True, exist_ok=True)
    with warehouse.connect() as conn:
        real = {
            table: [name for (name,) in rows]
            for table in base_tables(conn)
            for rows in [
                conn.execute(
                    "SELECT column_name FROM information_schema.columns "
                    "WHERE table_name = ? ORDER BY ordinal_position",
                    [table],
                ).fetchall()
            ]
        }
    graph = defs.resolve_asset_graph()
    shown = {
        node.metadata["dagster/table_name"]: [
            c.name for c in node.metadata["dagster/column_schema"].columns
        ]
        for key in graph.get_all_asset_keys()
        for node in [graph.get(key)]
        if "dagster/table_name" in node.metadata
    }
    assert set(shown) == {
        "rds_instances",
        "rds_metrics",
        "rds_metrics_hourly",
        "rds_metrics_daily",
        "rds_rightsizing",
    }
    assert shown == {table: real[table] for table in shown}


def test_the_command_line_does_not_load_dagster() -> None:
    """Analysts' commands start in a fraction of Dagster's import time."""
    probe = "import sys, metrics_pipeline.analysts.cli; print('dagster' in sys.modules)"
    loaded = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=120
    )
    assert loaded.stdout.strip() == "False"
