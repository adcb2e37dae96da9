"""Every setting: its default, its parsing, and the one clear message a bad value gets."""

import ast
import importlib.util
from dataclasses import Field, fields
from pathlib import Path
from typing import Any

import pytest
from dagster import materialize
from pydantic import BaseModel

from metrics_pipeline.collection.resources import AwsResource, CollectionResource
from metrics_pipeline.lake_catalog import Lake
from metrics_pipeline.resources import build_resources
from metrics_pipeline.settings import (
    DEFAULT_METRICS,
    ConfigError,
    Settings,
    StorageSettings,
    configuration_reference,
    settings_for,
)
from metrics_pipeline.warehouse.permissions import check_writable
from metrics_pipeline.warehouse.resources import WarehouseResource
from metrics_pipeline_tests.helpers import make_aws, rds_instances

BASE = {"AWS_DEFAULT_REGION": "eu-west-1"}


def test_defaults() -> None:
    settings = Settings.from_env(BASE)
    assert settings.regions == ("eu-west-1",)
    # Under the working directory, whatever the package's location (site-packages, say).
    assert settings.duckdb_path == Path.cwd() / "data" / "metrics.duckdb"
    assert settings.period_seconds == 300
    assert settings.metrics == DEFAULT_METRICS
    # The wide view's 14 of every RDS instance, Aurora's (each asked only of Aurora instances
    # that publish it) and DB load (of instances with Performance Insights on).
    assert DEFAULT_METRICS[14:] == (
        "DBLoad", "DBLoadRelativeToNumVCPUs", "AuroraReplicaLag", "BufferCacheHitRatio",
        "CommitLatency", "Deadlocks", "DMLLatency", "ServerlessDatabaseCapacity",
        "ACUUtilization",
    )  # fmt: skip
    assert len(DEFAULT_METRICS) == 23
    assert settings.statistics == ("Average", "Minimum", "Maximum", "Sum", "SampleCount")
    assert settings.settle_minutes == 15
    assert settings.backups_path == Path.cwd() / "data" / "backups"
    assert settings.duckdb_memory_limit is None


def test_values_are_parsed() -> None:
    settings = Settings.from_env(
        {
            **BASE,
            "METRICS_AWS_REGIONS": " us-east-1, eu-west-1 ,us-east-1",
            "METRICS_PERIOD_SECONDS": "60",
            "METRICS_CLOUDWATCH_METRICS": "CPUUtilization,ReplicaLag",
            "METRICS_STATISTICS": "Maximum",
            "METRICS_SETTLE_MINUTES": "0",
            "METRICS_PARTITIONS_START": "2026-11-01T06:00",
            "METRICS_DUCKDB_PATH": "relative/dir/w.duckdb",
            "METRICS_DUCKDB_MEMORY_LIMIT": "512MiB",
            "METRICS_BACKUP_DIR": "relative/backups",
            "METRICS_BACKUP_KEEP_DAYS": "30",
            "METRICS_STEP_RETRIES": "0",
            "METRICS_STEP_RETRY_DELAY_SECONDS": "2.5",
        }
    )
    assert settings.regions == ("us-east-1", "eu-west-1")
    assert settings.period_seconds == 60
    assert settings.metrics == ("CPUUtilization", "ReplicaLag")
    assert settings.statistics == ("Maximum",)
    assert settings.settle_minutes == 0
    assert settings.partitions_start.isoformat() == "2026-11-01T06:00:00"
    assert settings.duckdb_path == Path("relative/dir/w.duckdb").resolve()
    assert settings.snapshot_path == Path("relative/dir/w.snapshot.duckdb").resolve()
    assert settings.duckdb_memory_limit == "512MiB"
    assert settings.backups_path == Path("relative/backups").resolve()
    assert settings.backup_keep_days == 30
    assert (settings.step_retries, settings.step_retry_delay_seconds) == (0, 2.5)
    warehouse = build_resources(settings)["warehouse"]
    assert warehouse.connection_config == {"memory_limit": "512MiB"}
    assert warehouse.backups_path == settings.backups_path


def test_memory_limit_reaches_the_writer(tmp_path: Path) -> None:
    settings = Settings.from_env(
        {
            **BASE,
            "METRICS_DUCKDB_PATH": str(tmp_path / "w.duckdb"),
            "METRICS_DUCKDB_MEMORY_LIMIT": "512MiB",
        }
    )
    with build_resources(settings)["warehouse"].connect() as conn:
        [(limit,)] = conn.execute("SELECT current_setting('memory_limit')").fetchall()
    assert limit == "512.0 MiB"


def test_aws_region_wins_over_default_region() -> None:
    settings = Settings.from_env({"AWS_REGION": "ap-south-1", "AWS_DEFAULT_REGION": "eu-west-1"})
    assert settings.regions == ("ap-south-1",)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        (
            {"METRICS_AWS_REGIONS": "us-east-1,moon-1"},
            "METRICS_AWS_REGIONS: unknown region(s) 'moon-1'",
        ),
        ({"METRICS_PERIOD_SECONDS": "7"}, "METRICS_PERIOD_SECONDS: '7' is not allowed"),
        ({"METRICS_PERIOD_SECONDS": "-300"}, "METRICS_PERIOD_SECONDS: '-300' is not allowed"),
        ({"METRICS_PERIOD_SECONDS": "0"}, "METRICS_PERIOD_SECONDS: '0' is not allowed"),
        ({"METRICS_PERIOD_SECONDS": "420"}, "METRICS_PERIOD_SECONDS: '420' is not allowed"),
        ({"METRICS_PERIOD_SECONDS": "five"}, "METRICS_PERIOD_SECONDS: 'five' is not allowed"),
        ({"METRICS_SETTLE_MINUTES": "-5"}, "METRICS_SETTLE_MINUTES: -5 is not allowed"),
        ({"METRICS_SETTLE_MINUTES": "1.5"}, "METRICS_SETTLE_MINUTES: '1.5' is not a whole number"),
        (
            {"METRICS_MAX_REQUESTS_PER_SECOND": "-2"},
            "METRICS_MAX_REQUESTS_PER_SECOND: -2 is not allowed",
        ),
        ({"METRICS_AWS_MAX_ATTEMPTS": "0"}, "METRICS_AWS_MAX_ATTEMPTS: 0 is not allowed"),
        (
            {"METRICS_CLOUDWATCH_METRICS": "CPUUtilization,CPUUtilisation"},
            "METRICS_CLOUDWATCH_METRICS: unknown metric(s) 'CPUUtilisation'",
        ),
        ({"METRICS_CLOUDWATCH_METRICS": ","}, "METRICS_CLOUDWATCH_METRICS: unknown metric(s)"),
        ({"METRICS_STATISTICS": "Average,p99"}, "METRICS_STATISTICS: unknown statistic(s) 'p99'"),
        (
            {"METRICS_PARTITIONS_START": "yesterday"},
            "METRICS_PARTITIONS_START: 'yesterday' is not a date",
        ),
        ({"METRICS_PARTITIONS_START": "2026-11-01T06:30"}, "must fall on a whole hour"),
        ({"METRICS_COMPLETENESS_WARN": "1.5"}, "METRICS_COMPLETENESS_WARN: '1.5' is not allowed"),
        (
            {"METRICS_DASHBOARD_URL": "javascript:alert(1)"},
            "METRICS_DASHBOARD_URL: 'javascript:alert(1)' is not allowed; expected an http://",
        ),
        ({"METRICS_DASHBOARD_URL": "http://"}, "METRICS_DASHBOARD_URL: 'http:' is not allowed"),
        ({"METRICS_FRESHNESS_MINUTES": "0"}, "METRICS_FRESHNESS_MINUTES: 0 is not allowed"),
        ({"METRICS_LOCK_TIMEOUT_SECONDS": "0"}, "METRICS_LOCK_TIMEOUT_SECONDS: 0 is not allowed"),
        (
            {"METRICS_WAREHOUSE": "postgresql://db/lake"},
            "METRICS_WAREHOUSE: 'postgresql://db/lake' is not a DuckLake catalog; expected "
            "'ducklake:postgres:<libpq connection string>'",
        ),
        (  # a password in the value is never shown
            {"METRICS_WAREHOUSE": "postgresql://metrics:s3cret@db/lake"},
            "METRICS_WAREHOUSE: 'postgresql://metrics:***@db/lake' is not a DuckLake catalog",
        ),
        (
            {"METRICS_WAREHOUSE": "ducklake:postgres:host=db password=s3cret dbname"},
            "METRICS_WAREHOUSE: the text after 'ducklake:postgres:' is not a libpq connection "
            "string; expected 'key=value' pairs",
        ),
        (
            {"METRICS_WAREHOUSE": "ducklake:postgres:dbname=lake"},
            "METRICS_LAKE_DATA_PATH: required with METRICS_WAREHOUSE",
        ),
        (
            {"METRICS_DUCKDB_PATH": "metrics.duckdb", "METRICS_LAKE_DATA_PATH": "s3://lake/m/"},
            "METRICS_LAKE_DATA_PATH: set without METRICS_WAREHOUSE",
        ),
        (
            {"METRICS_WAREHOUSE": "ducklake:x.ducklake", "METRICS_LAKE_DATA_PATH": "s3://A_B/x"},
            "METRICS_LAKE_DATA_PATH: 's3://A_B/x' is not an S3 location",
        ),
        (
            {"METRICS_WAREHOUSE": "ducklake:x.ducklake", "METRICS_LAKE_DATA_PATH": "gs://b/x"},
            "METRICS_LAKE_DATA_PATH: 'gs://b/x' is neither 's3://bucket/prefix/' nor a folder",
        ),
        ({"METRICS_BACKUP_KEEP_DAYS": "0"}, "METRICS_BACKUP_KEEP_DAYS: 0 is not allowed"),
        (
            {"METRICS_TIME_ZONE": "Mars/Olympus_Mons"},
            "METRICS_TIME_ZONE: 'Mars/Olympus_Mons' is not a time zone; expected an IANA name",
        ),
        ({"METRICS_TIME_ZONE": "../../etc/passwd"}, "METRICS_TIME_ZONE: '../../etc/passwd' is not"),
        ({"METRICS_STEP_RETRIES": "-1"}, "METRICS_STEP_RETRIES: -1 is not allowed"),
        (
            {"METRICS_DUCKDB_MEMORY_LIMIT": "lots"},
            "METRICS_DUCKDB_MEMORY_LIMIT: 'lots' is not allowed; expected an amount such as",
        ),
        (
            {"METRICS_FRESH_INTERVAL_MINUTES": "7"},
            "METRICS_FRESH_INTERVAL_MINUTES: 7 is not allowed",
        ),
        # Values that used to load and then hurt: each bounded by a real limit.
        ({"METRICS_AWS_REGIONS": ","}, "METRICS_AWS_REGIONS: ',' names no region"),
        (
            {"METRICS_STEP_RETRY_DELAY_SECONDS": "inf"},
            "METRICS_STEP_RETRY_DELAY_SECONDS: inf is not allowed; expected a number > 0 and "
            "at most 3600.",
        ),
        (
            {"METRICS_STEP_RETRY_DELAY_SECONDS": "nan"},
            "METRICS_STEP_RETRY_DELAY_SECONDS: nan is not allowed",
        ),
        (
            {"METRICS_RETENTION_DAYS": "999999999"},
            "METRICS_RETENTION_DAYS: 999999999 is not allowed; expected a whole number from 1 "
            "to 4,165.",
        ),
        ({"METRICS_RETENTION_DAYS": "100000"}, "METRICS_RETENTION_DAYS: 100000 is not allowed"),
        (
            {"METRICS_SETTLE_MINUTES": "99999999999999"},
            "METRICS_SETTLE_MINUTES: 99999999999999 is not allowed; expected a whole number "
            "from 0 to 1,440.",
        ),
        (
            {"METRICS_BACKUP_KEEP_DAYS": "999999999"},
            "METRICS_BACKUP_KEEP_DAYS: 999999999 is not allowed",
        ),
        (
            {"METRICS_MAX_REQUESTS_PER_SECOND": "1e-9"},
            "METRICS_MAX_REQUESTS_PER_SECOND: 1e-9 is not allowed; expected a number >= 0.5 "
            "and at most 1000.",
        ),
        (
            {"METRICS_PARTITIONS_START": "2099-01-01"},
            "METRICS_PARTITIONS_START: '2099-01-01' is in the future",
        ),
        (
            {"METRICS_PARTITIONS_START": "1990-01-01"},
            "METRICS_PARTITIONS_START: '1990-01-01' would make more than 100,000 hourly partitions",
        ),
        (
            {"METRICS_DUCKDB_MEMORY_LIMIT": "1KB"},
            "METRICS_DUCKDB_MEMORY_LIMIT: '1KB' is too little for the warehouse's writes",
        ),
        (
            {"METRICS_DUCKDB_MEMORY_LIMIT": "99999999999999TB"},
            "METRICS_DUCKDB_MEMORY_LIMIT: '99999999999999TB' is more than DuckDB can take as a "
            "memory limit; expected at most 1PiB.",
        ),
        (
            # 2**64 bytes: DuckDB would wrap it around to a limit of nothing.
            {"METRICS_DUCKDB_MEMORY_LIMIT": "17179869184GiB"},
            "METRICS_DUCKDB_MEMORY_LIMIT: '17179869184GiB' is more than DuckDB can take",
        ),
        (
            {"METRICS_QUERY_MEMORY_LIMIT": "1MB"},
            "METRICS_QUERY_MEMORY_LIMIT: '1MB' is too little for a query; expected at least 64MiB.",
        ),
        (
            {"METRICS_QUERY_TIMEOUT_SECONDS": "0"},
            "METRICS_QUERY_TIMEOUT_SECONDS: 0 is not allowed; expected a number > 0 and at most "
            "86400.",
        ),
        (
            {"METRICS_BACKFILL_INTERVAL_MINUTES": "0"},
            "METRICS_BACKFILL_INTERVAL_MINUTES: 0 is not allowed; expected a whole number from "
            "1 to 1,440.",
        ),
        (
            {"METRICS_BACKFILL_MAX_DATAPOINTS_PER_TICK": "many"},
            "METRICS_BACKFILL_MAX_DATAPOINTS_PER_TICK: 'many' is not a whole number.",
        ),
        (
            {"METRICS_SHARED_GROUP": "no-such-group"},
            "METRICS_SHARED_GROUP: 'no-such-group' is not a group of this machine",
        ),
        (
            {"METRICS_SLACK_WEBHOOK_URL": "slack.com/hook"},
            "METRICS_SLACK_WEBHOOK_URL: 'slack.com/hook' is not allowed; expected the https:// "
            "URL of a Slack incoming webhook.",
        ),
        (
            {"METRICS_AWS_ROLE_ARNS": "arn:aws:iam::123456789012:role/a,reader"},
            "METRICS_AWS_ROLE_ARNS: 'reader' is not allowed; expected IAM role ARNs such as "
            "'arn:aws:iam::123456789012:role/metrics-reader', comma-separated.",
        ),
        (
            {"METRICS_AWS_ORGANIZATION_ROLE": "role/with/slashes"},
            "METRICS_AWS_ORGANIZATION_ROLE: 'role/with/slashes' is not allowed; expected a role "
            "name of 1 to 64 letters, digits and +=,.@-_.",
        ),
        (
            {"METRICS_AWS_EXTERNAL_ID": "x"},
            "METRICS_AWS_EXTERNAL_ID: 'x' is not allowed; expected 2 to 1,224 letters, digits "
            "and +=,.@:/-_.",
        ),
        (
            {"METRICS_AWS_ROLE_SESSION_NAME": "has spaces"},
            "METRICS_AWS_ROLE_SESSION_NAME: 'has spaces' is not allowed; expected 2 to 64 "
            "letters, digits and +=,.@-_.",
        ),
        (
            {"METRICS_CHUNK_DATAPOINTS": "1000"},
            "METRICS_CHUNK_DATAPOINTS: 1000 is not allowed; expected a whole number from "
            "1,008,000 to 50,000,000.",
        ),
        (
            {"METRICS_FETCH_THREADS": "0"},
            "METRICS_FETCH_THREADS: 0 is not allowed; expected a whole number from 1 to 64.",
        ),
        (
            {"METRICS_AWS_CONNECT_TIMEOUT_SECONDS": "0"},
            "METRICS_AWS_CONNECT_TIMEOUT_SECONDS: 0 is not allowed; expected a number > 0 and "
            "at most 3600.",
        ),
        (
            {"METRICS_AWS_READ_TIMEOUT_SECONDS": "soon"},
            "METRICS_AWS_READ_TIMEOUT_SECONDS: 'soon' is not a number.",
        ),
        (
            {"METRICS_CHUNK_TIMEOUT_SECONDS": "-5"},
            "METRICS_CHUNK_TIMEOUT_SECONDS: -5 is not allowed; expected a number > 0 and at "
            "most 86400.",
        ),
        (
            {"METRICS_RUN_TIMEOUT_SECONDS": "inf"},
            "METRICS_RUN_TIMEOUT_SECONDS: inf is not allowed; expected a number > 0 and at "
            "most 86400.",
        ),
        (
            {"METRICS_PERIOD_SECONDS": "60", "METRICS_BACKFILL_DAYS": "20"},
            "METRICS_BACKFILL_DAYS (20) is more than CloudWatch keeps 60 s data (15 days)",
        ),
    ],
)
def test_bad_values_name_the_setting(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError) as raised:
        Settings.from_env({**BASE, **env})
    assert message in str(raised.value)
    assert raised.value.__cause__ is None


# The settings whose variable takes any text: a path, created where needed.
ANY_TEXT = {"METRICS_DUCKDB_PATH", "METRICS_BACKUP_DIR", "METRICS_LAKE_DATA_PATH"}
NOT_A_VALUE = "§ not a value"


@pytest.mark.parametrize("declaration", fields(Settings), ids=lambda f: f.metadata["env"])
def test_every_declared_setting_is_read_from_its_variable(declaration: Field[Any]) -> None:
    """Each field of the model, a new one included, is read from its variable: a value no
    setting takes is refused in one line naming that variable (and the path settings, which
    take any text, hold what was put in)."""
    variable = declaration.metadata["env"]
    env = {**BASE, variable: NOT_A_VALUE}
    if variable == "METRICS_LAKE_DATA_PATH":
        env["METRICS_WAREHOUSE"] = "ducklake:postgres:dbname=lake"
    if variable in ANY_TEXT:
        settings = Settings.from_env(env)
        read = str(getattr(settings, declaration.name))
        assert read.removesuffix("/") == str(Path(NOT_A_VALUE).resolve())
        return
    with pytest.raises(ConfigError) as raised:
        Settings.from_env(env)
    message = str(raised.value)
    assert message.startswith(f"{variable}: ") and "\n" not in message
    assert raised.value.__cause__ is None


def test_the_reference_has_a_row_per_declared_variable() -> None:
    rows = configuration_reference().splitlines()[2:]
    assert [row.split("`")[1] for row in rows] == [f.metadata["env"] for f in fields(Settings)]
    assert "| `METRICS_LOCK_TIMEOUT_SECONDS` | `120` | how long a writer waits" in (
        configuration_reference()
    )


def test_resources_carry_the_settings_they_are_built_from(tmp_path: Path) -> None:
    """Values put in the environment reach the resources' fields, whatever their names there."""
    settings = Settings.from_env(
        {
            **BASE,
            "METRICS_LOCK_TIMEOUT_SECONDS": "7.5",
            "METRICS_RETENTION_DAYS": "9",
            "METRICS_BACKUP_KEEP_DAYS": "11",
            "METRICS_WAREHOUSE": "ducklake:postgres:dbname=lake",
            "METRICS_LAKE_DATA_PATH": "s3://metrics-lake/prod",
            "METRICS_AWS_MAX_ATTEMPTS": "3",
            "METRICS_AWS_CONNECT_TIMEOUT_SECONDS": "4",
            "METRICS_AWS_READ_TIMEOUT_SECONDS": "5",
            "METRICS_AWS_EXTERNAL_ID": "shared-secret",
            "METRICS_SETTLE_MINUTES": "40",
            "METRICS_CLOUDWATCH_METRICS": "ReplicaLag",
            "METRICS_FETCH_THREADS": "2",
        }
    )
    resources = build_resources(settings)
    warehouse, aws, collection = resources["warehouse"], resources["aws"], resources["collection"]
    assert (warehouse.lock_timeout_seconds, warehouse.retention_days) == (7.5, 9)
    assert warehouse.backup_keep_days == 11
    assert (warehouse.lake_catalog, warehouse.lake_data_path) == (
        "ducklake:postgres:dbname=lake",
        "s3://metrics-lake/prod/",
    )
    assert (aws.max_attempts, aws.connect_timeout_seconds, aws.read_timeout_seconds) == (3, 4, 5)
    assert (aws.external_id, aws.organization_role, aws.regions) == (
        "shared-secret",
        "",
        ["eu-west-1"],
    )
    assert (collection.settle_minutes, collection.metrics, collection.fetch_threads) == (
        40,
        ["ReplicaLag"],
        2,
    )


def test_a_resource_built_alone_has_the_settings_defaults() -> None:
    """A resource made without the settings (a test, a script) gets the defaults a deployment
    that sets nothing gets, but for where the warehouse is: it is told (`database=`, the
    DuckDB file, unless it is given a lake)."""
    defaults = Settings.from_env(BASE)
    where = {"lake_catalog", "lake_data_path"}
    warehouse = WarehouseResource(database=":memory:")
    built_alone: list[tuple[type[BaseModel], BaseModel]] = [
        (WarehouseResource, warehouse),
        (CollectionResource, CollectionResource()),
        (AwsResource, AwsResource(regions=["eu-west-1"])),
    ]
    for resource, alone in built_alone:
        carried = {k: v for k, v in settings_for(resource, defaults).items() if k not in where}
        assert carried, resource
        assert {name: getattr(alone, name) for name in carried} == carried
    assert warehouse.lock_timeout_seconds == 120.0


def test_lake_settings_name_the_catalog_and_the_data_path(tmp_path: Path) -> None:
    settings = Settings.from_env(
        {
            **BASE,
            "METRICS_WAREHOUSE": " ducklake:postgres:host=db dbname=lake ",
            "METRICS_LAKE_DATA_PATH": "s3://metrics-lake/prod",
        }
    )
    assert settings.lake is not None
    assert settings.lake.catalog == "ducklake:postgres:host=db dbname=lake"
    assert settings.lake.data_path == "s3://metrics-lake/prod/"
    assert settings.read_source == settings.lake
    in_a_folder = Settings.from_env(
        {**BASE, "METRICS_WAREHOUSE": "ducklake:x", "METRICS_LAKE_DATA_PATH": str(tmp_path)}
    )
    assert in_a_folder.lake is not None and in_a_folder.lake.data_path == f"{tmp_path}/"
    file = Settings.from_env({**BASE, "METRICS_DUCKDB_PATH": str(tmp_path / "m.duckdb")})
    assert file.lake is None and file.read_source == file.snapshot_path


def test_the_default_warehouse_is_a_lake_on_this_machine_unless_a_file_is_named(
    tmp_path: Path,
) -> None:
    """Under the working directory: the catalog file, and its data in a folder named after it
    (DuckLake's own default); a catalog file set alone gets its folder the same way."""
    default = Settings.from_env(BASE)
    assert default.lake == Lake(
        f"ducklake:{Path.cwd() / 'data' / 'metrics.ducklake'}",
        f"{Path.cwd() / 'data' / 'metrics.ducklake.files'}/",
    )
    assert default.read_source == default.lake
    alone = Settings.from_env({**BASE, "METRICS_WAREHOUSE": f"ducklake:{tmp_path}/w.ducklake"})
    assert alone.lake == Lake(f"ducklake:{tmp_path}/w.ducklake", f"{tmp_path}/w.ducklake.files/")
    named = Settings.from_env({**BASE, "METRICS_DUCKDB_PATH": str(tmp_path / "m.duckdb")})
    assert (named.warehouse, named.lake_data_path) == (None, None)


def test_directory_as_duckdb_path(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"METRICS_DUCKDB_PATH: '.*' is a directory"):
        Settings.from_env({**BASE, "METRICS_DUCKDB_PATH": str(tmp_path)})


@pytest.mark.parametrize(
    ("variable", "under_the_file"),
    [
        ("METRICS_BACKUP_DIR", ""),
        ("METRICS_BACKUP_DIR", "backups"),
        ("METRICS_DUCKDB_PATH", "metrics.duckdb"),
        ("METRICS_LAKE_DATA_PATH", "lake"),
    ],
)
def test_a_file_where_a_folder_goes_is_refused_at_load(
    tmp_path: Path, variable: str, under_the_file: str
) -> None:
    """Refused when the settings load, naming the variable, not at the first write."""
    a_file = tmp_path / "hostname"
    a_file.write_text("not a folder")
    env = {**BASE, variable: str(a_file / under_the_file)}
    if variable == "METRICS_LAKE_DATA_PATH":
        env["METRICS_WAREHOUSE"] = "ducklake:postgres:dbname=lake"
    with pytest.raises(ConfigError) as raised:
        StorageSettings.from_env(env)
    assert str(raised.value) == (
        f"{variable}: '{a_file}' is a file, not a folder; expected a folder (missing ones are "
        "created) or a path in one."
    )


def test_query_limits_have_laptop_defaults_and_are_read() -> None:
    assert (
        StorageSettings.from_env({}).query_memory_limit,
        StorageSettings.from_env({}).query_timeout_seconds,
    ) == ("1GB", 300.0)
    read = StorageSettings.from_env(
        {"METRICS_QUERY_MEMORY_LIMIT": "300MB", "METRICS_QUERY_TIMEOUT_SECONDS": "2.5"}
    )
    assert (read.query_memory_limit, read.query_timeout_seconds) == ("300MB", 2.5)


def test_unwritable_duckdb_path(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    with pytest.raises(ConfigError, match="METRICS_DUCKDB_PATH: cannot create the folder"):
        check_writable(blocker / "sub" / "metrics.duckdb")


def test_missing_folder_is_created(tmp_path: Path) -> None:
    check_writable(tmp_path / "new" / "deeper" / "metrics.duckdb")
    assert (tmp_path / "new" / "deeper").is_dir()


def test_unwritable_path_fails_the_run_at_start(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    result = materialize(
        [rds_instances],
        resources={
            "aws": make_aws(),
            "warehouse": WarehouseResource(database=str(blocker / "metrics.duckdb")),
        },
        raise_on_error=False,
    )
    assert not result.success
    [failure] = result.get_step_failure_events()
    assert failure.step_failure_data.error is not None
    assert failure.step_failure_data.error.message.startswith(
        "dagster._core.definitions.events.Failure: METRICS_DUCKDB_PATH: cannot create the folder"
    )
    # No retry can fix it: it fails on the first attempt.
    assert not [e for e in result.all_events if e.event_type_value == "STEP_UP_FOR_RETRY"]


def imported_modules(module: str) -> set[str]:
    """The package's modules that `module` imports, directly or through others (every import
    statement, those inside functions too), read from the source."""
    seen: set[str] = set()
    pending = [module]
    while pending:
        name = pending.pop()
        spec = importlib.util.find_spec(name)
        if name in seen or spec is None or spec.origin is None:
            continue
        seen.add(name)
        for node in ast.walk(ast.parse(Path(spec.origin).read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                imported = [node.module]
            elif isinstance(node, ast.Import):
                imported = [alias.name for alias in node.names]
            else:
                continue
            pending += [name for name in imported if name.startswith("metrics_pipeline.")]
    return seen


def test_the_settings_import_no_domain() -> None:
    """The domains (the warehouse's resource first) import the settings to derive their fields;
    the settings importing a domain back would make a cycle."""
    assert imported_modules("metrics_pipeline.settings") == {
        "metrics_pipeline.settings",
        "metrics_pipeline.catalog",
        "metrics_pipeline.lake_catalog",
    }
