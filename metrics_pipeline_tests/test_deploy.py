"""The deployment folder: the Dagster instance on PostgreSQL (loaded for real, its runs and
event logs found in a real PostgreSQL), the ECS instance, and the code location's Dockerfile
(no Docker here: what it copies and runs is checked against the project)."""

import re
import shlex
import shutil
import tomllib
from pathlib import Path

import psycopg2
import pytest
import yaml
from dagster import DagsterInstance, DagsterRunStatus
from dagster._config import process_config
from dagster._core.errors import DagsterInvalidConfigError
from dagster._core.instance.config import dagster_instance_config
from dagster_aws.ecs import EcsRunLauncher
from dagster_postgres import PostgresEventLogStorage, PostgresRunStorage

from metrics_pipeline.local_postgres.server import LocalPostgres
from metrics_pipeline.maintenance.jobs import backup_job
from metrics_pipeline.warehouse.resources import WarehouseResource
from metrics_pipeline_tests.conftest import new_catalog_database
from metrics_pipeline_tests.helpers import PROJECT_ROOT

DEPLOY = PROJECT_ROOT / "deploy"
pytestmark = pytest.mark.scale_out


@pytest.mark.storage_kinds("lake", reason="the scale-out deployment's warehouse is a lake")
def test_the_scale_out_instance_keeps_runs_and_events_in_postgresql(
    postgres: LocalPostgres,
    warehouse: WarehouseResource,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    database = new_catalog_database(postgres)
    monkeypatch.setenv(
        "DAGSTER_PG_URL", postgres.url(database).replace("postgresql:", "postgresql+psycopg2:")
    )
    shutil.copy(DEPLOY / "dagster.yaml", tmp_path / "dagster.yaml")
    warehouse.prepare()

    with DagsterInstance.from_config(str(tmp_path)) as instance:
        assert isinstance(instance.run_storage, PostgresRunStorage)
        assert isinstance(instance.event_log_storage, PostgresEventLogStorage)
        assert instance.get_concurrency_config().pool_config.default_pool_limit == 2
        result = backup_job.execute_in_process(
            instance=instance, resources={"warehouse": warehouse}
        )
        assert result.success
        assert instance.get_run_by_id(result.run_id).status == DagsterRunStatus.SUCCESS

    with psycopg2.connect(postgres.dsn(database)) as conn, conn.cursor() as cursor:
        cursor.execute("SELECT status FROM runs WHERE run_id = %s", [result.run_id])
        assert cursor.fetchall() == [("SUCCESS",)]
        cursor.execute(
            "SELECT dagster_event_type FROM event_logs WHERE run_id = %s ORDER BY id",
            [result.run_id],
        )
        logged = [row[0] for row in cursor.fetchall()]
    # Dagster stores a run's start and success under their older names.
    assert (logged[0], logged[-1]) == ("PIPELINE_START", "PIPELINE_SUCCESS")
    assert logged.count("STEP_SUCCESS") == 1


@pytest.mark.parametrize("folder", ["deploy", "deploy/ecs"])
def test_each_instance_config_is_one_dagster_accepts(
    folder: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DAGSTER_PG_URL", "postgresql+psycopg2://dagster@db.internal/dagster")
    config, _ = dagster_instance_config(str(PROJECT_ROOT / folder))
    assert config["storage"] == {"postgres": {"postgres_url": {"env": "DAGSTER_PG_URL"}}}
    assert config["concurrency"]["runs"]["max_concurrent_runs"] == 8


@pytest.mark.parametrize("folder", [".", "deploy", "deploy/ecs"])
def test_every_instance_config_monitors_runs_and_opens_no_dialog(
    folder: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A dead run's pool slots are freed and a run never hangs for ever, on every instance the
    project ships (the Helm values: test_deploy_helm.py); the UI opens no "join the community"
    dialog."""
    monkeypatch.setenv("DAGSTER_PG_URL", "postgresql+psycopg2://dagster@db.internal/dagster")
    config, _ = dagster_instance_config(str(PROJECT_ROOT / folder))
    assert config["run_monitoring"] == {
        "enabled": True,
        "start_timeout_seconds": 180,
        "cancel_timeout_seconds": 180,
        "max_runtime_seconds": 10800,
        "poll_interval_seconds": 30,
        "free_slots_after_run_end_seconds": 60,
    }
    assert config["run_retries"] == {
        "enabled": True,
        "max_retries": 2,
        "retry_on_asset_or_op_failure": False,
    }
    assert config["nux"] == {"enabled": False}


def test_a_misspelled_instance_setting_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The check above can fail: Dagster's own validation names the wrong entry."""
    monkeypatch.setenv("DAGSTER_PG_URL", "postgresql+psycopg2://dagster@db.internal/dagster")
    text = (DEPLOY / "dagster.yaml").read_text()
    (tmp_path / "dagster.yaml").write_text(text.replace("max_concurrent_runs", "max_runs"))
    with pytest.raises(DagsterInvalidConfigError, match='unexpected config entry "max_runs"'):
        dagster_instance_config(str(tmp_path))


def test_the_ecs_run_launcher_takes_its_config_and_passes_the_settings() -> None:
    launcher = yaml.safe_load((DEPLOY / "ecs" / "dagster.yaml").read_text())["run_launcher"]
    assert (launcher["module"], launcher["class"]) == ("dagster_aws.ecs", "EcsRunLauncher")
    checked = process_config(EcsRunLauncher.config_type(), launcher["config"])
    assert checked.success, checked.errors
    misspelled = {**launcher["config"], "run_resource": launcher["config"]["run_resources"]}
    refused = process_config(EcsRunLauncher.config_type(), misspelled)
    assert not refused.success
    assert 'unexpected config entry "run_resource"' in refused.errors[0].message
    passed = set(launcher["config"]["env_vars"])
    assert {"METRICS_WAREHOUSE", "METRICS_LAKE_DATA_PATH", "DAGSTER_PG_URL"} <= passed


def dockerfile_instructions() -> list[tuple[str, str]]:
    text = (DEPLOY / "Dockerfile").read_text().replace("\\\n", " ")
    lines = [line.strip() for line in text.splitlines()]
    return [
        (line.split(maxsplit=1)[0], line.split(maxsplit=1)[1])
        for line in lines
        if line and not line.startswith("#")
    ]


def test_the_dockerfile_copies_what_exists_and_installs_as_the_readme_does() -> None:
    instructions = dockerfile_instructions()
    copied = [shlex.split(args)[:-1] for kind, args in instructions if kind == "COPY"]
    sources = [source for sources in copied for source in sources]
    assert sources, "the image copies the project"
    for source in sources:
        assert (PROJECT_ROOT / source).exists(), source
    runs = " ".join(args for kind, args in instructions if kind == "RUN")
    # The install the README's start and test commands run (scripts/start.sh, scripts/test.sh
    # both call it), without the test tools nor the local AWS and PostgreSQL
    # (test_runtime_install.py).
    assert "bash scripts/install.sh --runtime" in runs
    for script in ("start.sh", "test.sh"):
        assert "bash scripts/install.sh" in (PROJECT_ROOT / "scripts" / script).read_text()
    for command in ("bash scripts/start.sh", "bash scripts/test.sh"):
        assert command in (PROJECT_ROOT / "README.md").read_text()
    assert "scripts/install.sh" in sources  # what the RUN needs is in the image


def test_the_image_serves_the_code_location_pyproject_names() -> None:
    [(_, command)] = [(k, a) for k, a in dockerfile_instructions() if k == "CMD"]
    argv = yaml.safe_load(command)
    assert argv[:3] == ["dagster", "code-server", "start"]
    module = argv[argv.index("-m") + 1]
    pyproject = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())
    assert module == pyproject["tool"]["dagster"]["module_name"]
    exposed = re.findall(r"^EXPOSE (\d+)$", (DEPLOY / "Dockerfile").read_text(), re.M)
    assert exposed == [argv[argv.index("-p") + 1]]
