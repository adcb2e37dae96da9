"""The code location loads, and its pieces are wired as the product promises."""

import json
import os
import re
import shutil
import subprocess
import sys
import urllib.request
from dataclasses import fields
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from dagster import AssetKey, BackfillPolicy, DagsterInstance, Definitions

from metrics_pipeline.definitions import defs as code_location
from metrics_pipeline.settings import Settings, load_settings
from metrics_pipeline.warehouse.resources import WarehouseResource
from metrics_pipeline.warehouse.schema import base_tables
from metrics_pipeline_tests.helpers import (
    DAGSTER,
    DAGSTER_WEBSERVER,
    PROJECT_ROOT,
    definitions_for_tests,
    free_port,
    wait_for,
)


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
            "rds_cluster_metrics",
            "rds_pi_load",
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
    assert resources["collection"].period_seconds == 300


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
        "run_liveness_check",
    }
    # Everything that runs on its own is on from the start, without a click in the UI.
    automation = [*defs.schedules, *defs.sensors]
    assert all(a.default_status.value == "RUNNING" for a in automation)
    # What each job runs: the collection jobs their assets (with their checks), the
    # maintenance jobs their one op; and what the schedules and the gap sensor start.
    runs = {}
    jobs = (
        "fresh_collection_job",
        "healing_job",
        "cluster_healing_job",
        "pi_healing_job",
        "hourly_history_job",
        "retention_job",
    )
    for job in (*jobs, "backup_job"):
        definition = defs.resolve_job_def(job)
        assets = sorted(key.to_user_string() for key in definition.asset_layer.selected_asset_keys)
        runs[job] = assets or sorted(node.name for node in definition.graph.node_defs)
    assert runs == {
        "fresh_collection_job": ["rds_cluster_metrics", "rds_instances", "rds_metrics"],
        "healing_job": ["rds_metrics"],
        "cluster_healing_job": ["rds_cluster_metrics"],
        "pi_healing_job": ["rds_pi_load"],
        "hourly_history_job": ["rds_metrics_hourly"],
        "retention_job": ["drop_expired_rows"],
        "backup_job": ["back_up_warehouse"],
    }
    assert {s.name: s.job_name for s in defs.schedules} == {
        "fresh_collection_schedule": "fresh_collection_job",
        "retention_schedule": "retention_job",
        "backup_schedule": "backup_job",
    }
    [healing] = [s for s in defs.sensors if s.name == "gap_healing_sensor"]
    assert sorted(job.name for job in healing.jobs) == [
        "cluster_healing_job",
        "fresh_collection_job",
        "healing_job",
        "hourly_history_job",
        "pi_healing_job",
    ]


@pytest.mark.e2e
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
        "rds_cluster_metrics": ("HourlyPartitionsDefinition", pool, ("rds_instances",), None),
        "rds_pi_load": ("HourlyPartitionsDefinition", pool, ("rds_instances",), None),
        "rds_metrics_hourly": ("DailyPartitionsDefinition", pool, ("rds_instances",), None),
        "rds_metrics_daily": (
            "DailyPartitionsDefinition",
            pool,
            ("rds_metrics_hourly",),
            "eager, every partition",
        ),
        "pipeline_health": (
            None,
            (),
            ("rds_metrics",),
            "on cron 5 * * * * (whatever happened), once inputs exist, and after healing runs",
        ),
        "rightsizing_report": (
            None,
            pool,
            ("rds_instances", "rds_metrics", "rds_metrics_hourly"),
            "on cron 10 * * * * (after input updates), once inputs exist, and after healing runs",
        ),
    }
    assert {job.name for job in defs.jobs} == {
        "fresh_collection_job",
        "healing_job",
        "cluster_healing_job",
        "pi_healing_job",
        "hourly_history_job",
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
        ("run_liveness_check", "SensorDefinition"),
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
        "rds_cluster_metrics",
        "rds_pi_load",
        "rds_metrics_hourly",
        "rds_metrics_daily",
        "rds_rightsizing",
    }
    assert shown == {table: real[table] for table in shown}


@pytest.mark.e2e
def test_the_command_line_does_not_load_dagster() -> None:
    """Analysts' commands start in a fraction of Dagster's import time."""
    probe = "import sys, metrics_pipeline.analysts.cli; print('dagster' in sys.modules)"
    loaded = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=120
    )
    assert loaded.stdout.strip() == "False"


IMPORT_EVERY_MODULE = (
    "import importlib, pkgutil, metrics_pipeline\n"
    "for module in pkgutil.walk_packages(metrics_pipeline.__path__, 'metrics_pipeline.'):\n"
    "    if not module.name.endswith('__main__'):\n"
    "        importlib.import_module(module.name)\n"
    "print('imported')\n"
)


def environment_with(**settings: str) -> dict[str, str]:
    """This process's environment without any AWS or pipeline variable, plus `settings`."""
    kept = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "METRICS_"))}
    return {**kept, **settings}


@pytest.mark.e2e
def test_importing_any_module_reads_no_setting() -> None:
    """Every setting set to a value it refuses, and no AWS region anywhere: every module still
    imports; only loading the definitions reads (and refuses) them."""
    refused = {field.metadata["env"]: "not a value" for field in fields(Settings)}
    env = environment_with(**refused)
    imported = subprocess.run(
        [sys.executable, "-c", IMPORT_EVERY_MODULE],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert imported.returncode == 0, imported.stderr[-2000:]
    assert imported.stdout == "imported\n"

    loaded = subprocess.run(
        [sys.executable, "-c", "from metrics_pipeline.definitions import defs; defs()"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert loaded.returncode != 0
    assert loaded.stderr.splitlines()[0].startswith(
        "metrics_pipeline cannot load: METRICS_WAREHOUSE: 'not a value' is not a DuckLake catalog;"
    )


def without_python_warnings(output: str) -> list[str]:
    """The lines a person reads, without Python's warnings (a warning line and its source)."""
    lines = output.splitlines()
    warnings = {
        n + offset
        for n, line in enumerate(lines)
        if re.match(r"^\S+\.py:\d+: \w*Warning: ", line)
        for offset in (0, 1)
    }
    return [line for n, line in enumerate(lines) if n not in warnings and line.strip()]


@pytest.mark.e2e
def test_a_bad_setting_is_the_first_line_the_dagster_command_prints(tmp_path: Path) -> None:
    shutil.copy(PROJECT_ROOT / "dagster.yaml", tmp_path / "dagster.yaml")
    env = environment_with(
        METRICS_AWS_REGIONS="us-east-1",
        METRICS_BACKUP_KEEP_DAYS="999999999",
        DAGSTER_HOME=str(tmp_path),
    )
    command = [DAGSTER, "asset", "materialize", "-m", "metrics_pipeline.definitions"]
    done = subprocess.run(
        [*command, "--select", "rds_instances"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode != 0
    assert without_python_warnings(done.stderr)[0] == (
        "metrics_pipeline cannot load: METRICS_BACKUP_KEEP_DAYS: 999999999 is not allowed; "
        "expected a whole number from 1 to 3,650."
    )


LOCATION_ERRORS = """
{ workspaceOrError { ... on Workspace { locationEntries { name
    locationOrLoadError { __typename ... on PythonError { message } } } } } }
"""


@pytest.mark.e2e
def test_a_bad_setting_is_the_code_location_error_in_the_ui(tmp_path: Path) -> None:
    port = free_port()
    env = environment_with(
        METRICS_AWS_REGIONS="us-east-1,",
        METRICS_SETTLE_MINUTES="99999999999999",
        DAGSTER_HOME=str(tmp_path),
    )
    command = [DAGSTER_WEBSERVER, "-m", "metrics_pipeline.definitions"]
    with subprocess.Popen(
        [*command, "-h", "127.0.0.1", "-p", str(port)],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    ) as webserver:
        try:
            answer: dict = {}

            def location_loaded() -> bool:
                request = urllib.request.Request(
                    f"http://127.0.0.1:{port}/graphql",
                    data=json.dumps({"query": LOCATION_ERRORS}).encode(),
                    headers={"Content-Type": "application/json"},
                )
                try:
                    with urllib.request.urlopen(request, timeout=10) as response:
                        answer.update(json.load(response))
                except OSError:
                    return False
                entries = answer["data"]["workspaceOrError"]["locationEntries"]
                return bool(entries and entries[0]["locationOrLoadError"])

            wait_for(location_loaded, 120, "the webserver to load the code location")
        finally:
            webserver.terminate()
    [entry] = answer["data"]["workspaceOrError"]["locationEntries"]
    error = entry["locationOrLoadError"]
    assert error["__typename"] == "PythonError"
    assert error["message"].splitlines()[0] == (
        "metrics_pipeline.definitions.InvalidSettingsError: METRICS_SETTLE_MINUTES: "
        "99999999999999 is not allowed; expected a whole number from 0 to 1,440."
    )


def test_the_partitions_say_why_hours_before_the_look_back_stay_missing() -> None:
    """A new deployment lists hours since its retention but heals only its look-back: the
    asset's description (on the partitions page) says so with the deployment's numbers."""
    defs = definitions_for_tests(
        METRICS_PARTITIONS_START="2026-11-01",
        METRICS_BACKFILL_DAYS="2",
        METRICS_PERIOD_SECONDS="60",
    )
    node = defs.resolve_asset_graph().get(AssetKey("rds_metrics"))
    assert node.description is not None
    assert node.description.endswith(
        "The partitions start at 2026-11-01 00:00 UTC (METRICS_PARTITIONS_START; by default "
        "midnight METRICS_RETENTION_DAYS ago, what the warehouse keeps), but the gap sensor "
        "collects only the last 2 days (METRICS_BACKFILL_DAYS): older hours stay missing (grey) "
        "until you materialize them by hand, which CloudWatch allows for 15 days at this period."
    )
