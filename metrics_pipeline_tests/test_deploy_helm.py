"""The Kubernetes deployment: deploy/helm/values.yaml, checked as the Dagster Helm chart checks it.

`helm install -f deploy/helm/values.yaml` merges the values over the chart's defaults and
validates the result against the chart's values.schema.json. These tests do the same with
jsonschema, and with no helm binary, cluster or network. The chart's files are stored in
helm_chart/: chart version 0.0.1-dev (the repository's own version of the chart),
dagster-io/dagster commit 437f92d953812a3efdf5a464ba196eb3fcd9a777, January 2026 (SOURCE.md
there). The schema's references to Kubernetes' own definitions, which helm downloads, accept
anything here.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import re
import tomllib
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from jsonschema.protocols import Validator
from referencing import Registry, Resource
from referencing.exceptions import NoSuchResource
from referencing.jsonschema import DRAFT202012

from metrics_pipeline.settings import Settings
from metrics_pipeline_tests.helpers import PROJECT_ROOT

CHART = Path(__file__).resolve().parent / "helm_chart"
VALUES = PROJECT_ROOT / "deploy" / "helm" / "values.yaml"
pytestmark = pytest.mark.scale_out
# Where the schema's `$ref`s outside itself point: Kubernetes' definitions.
KUBERNETES_DEFINITIONS = (
    "https://raw.githubusercontent.com/yannh/kubernetes-json-schema/",
    "https://kubernetesjsonschema.dev/",
)
SETTING_NAME = re.compile(r"\bMETRICS_[A-Z0-9_]+\b")


class _AcceptAnything(dict[str, Any]):
    """The empty schema `{}`, in which every JSON pointer leads to another empty schema."""

    def __missing__(self, key: str) -> _AcceptAnything:
        return _AcceptAnything()


def _retrieve(uri: str) -> Resource[Any]:
    if not uri.startswith(KUBERNETES_DEFINITIONS):
        raise NoSuchResource(ref=uri)
    return DRAFT202012.create_resource(_AcceptAnything())


def load_yaml(path: Path) -> dict[str, Any]:
    return yaml.safe_load(path.read_text())


def helm_merge(defaults: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """`overrides` over `defaults` as Helm merges values: maps key by key, recursively; lists
    and scalars replaced whole; a null removes the default's key."""
    merged = copy.deepcopy(dict(defaults))
    for key, value in overrides.items():
        if value is None:
            merged.pop(key, None)
        elif isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = helm_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def describe(errors: list[jsonschema.ValidationError]) -> str:
    return "\n".join(f"{e.json_path}: {e.message}" for e in errors)


@pytest.fixture(scope="module")
def validator() -> Validator:
    schema = json.loads((CHART / "values.schema.json").read_text())
    validator_class = jsonschema.validators.validator_for(schema)
    validator_class.check_schema(schema)
    return validator_class(schema, registry=Registry(retrieve=_retrieve))


@pytest.fixture(scope="module")
def chart_defaults() -> dict[str, Any]:
    return load_yaml(CHART / "values.yaml")


def test_the_charts_own_defaults_satisfy_its_schema(
    validator: Validator, chart_defaults: dict[str, Any]
) -> None:
    assert not (errors := list(validator.iter_errors(chart_defaults))), describe(errors)


def test_the_values_merged_over_the_charts_defaults_satisfy_its_schema(
    validator: Validator, chart_defaults: dict[str, Any]
) -> None:
    merged = helm_merge(chart_defaults, load_yaml(VALUES))

    assert not (errors := list(validator.iter_errors(merged))), describe(errors)
    [location] = merged["dagster-user-deployments"]["deployments"]
    assert location["name"] == "metrics-pipeline"
    assert location["port"] == 3030
    launcher = merged["runLauncher"]
    assert launcher["type"] == "K8sRunLauncher"
    assert {"name": "metrics-pipeline-settings"} in launcher["config"]["k8sRunLauncher"][
        "envSecrets"
    ]
    # What the values leave alone keeps the chart's default.
    assert launcher["config"]["k8sRunLauncher"]["loadInclusterConfig"] is True
    assert merged["postgresql"]["enabled"] is False
    assert merged["generatePostgresqlPasswordSecret"] is False


def test_the_run_limit_is_set_in_one_place_only(chart_defaults: dict[str, Any]) -> None:
    """Dagster refuses an instance whose run queue and `concurrency` both limit runs."""
    merged = helm_merge(chart_defaults, load_yaml(VALUES))

    assert merged["concurrency"]["enabled"] is True
    assert merged["concurrency"]["runs"]["maxConcurrentRuns"] > 0
    assert merged["concurrency"]["pools"]["defaultLimit"] > 0
    queue = merged["dagsterDaemon"]["runCoordinator"]
    assert queue["type"] == "QueuedRunCoordinator"
    assert queue["config"]["queuedRunCoordinator"]["maxConcurrentRuns"] is None


def _unknown_run_launcher(values: dict[str, Any]) -> None:
    values["runLauncher"]["type"] = "NoSuchLauncher"


def _code_location_without_port(values: dict[str, Any]) -> None:
    del values["dagster-user-deployments"]["deployments"][0]["port"]


def _secret_named_by_a_bare_string(values: dict[str, Any]) -> None:
    values["dagster-user-deployments"]["deployments"][0]["envSecrets"] = [
        "metrics-pipeline-settings"
    ]


@pytest.mark.parametrize(
    ("break_values", "message"),
    [
        pytest.param(
            _unknown_run_launcher,
            r"'NoSuchLauncher' is not one of \['CeleryK8sRunLauncher', 'K8sRunLauncher', "
            r"'CustomRunLauncher'\]",
            id="unknown-run-launcher",
        ),
        pytest.param(
            _code_location_without_port,
            r"'port' is a required property",
            id="code-location-without-port",
        ),
        pytest.param(
            _secret_named_by_a_bare_string,
            r"\['metrics-pipeline-settings'\] is not valid under any of the given schemas",
            id="secret-as-bare-string",
        ),
    ],
)
def test_values_the_chart_would_refuse_are_refused(
    validator: Validator,
    chart_defaults: dict[str, Any],
    break_values: Callable[[dict[str, Any]], None],
    message: str,
) -> None:
    values = load_yaml(VALUES)
    break_values(values)

    with pytest.raises(jsonschema.ValidationError, match=message):
        validator.validate(helm_merge(chart_defaults, values))


def _strings(node: Any) -> Iterator[str]:
    """Every key and every string value of a YAML document."""
    if isinstance(node, Mapping):
        for key, value in node.items():
            yield str(key)
            yield from _strings(value)
    elif isinstance(node, list):
        for item in node:
            yield from _strings(item)
    elif isinstance(node, str):
        yield node


def test_the_values_name_the_projects_code_location_and_settings() -> None:
    values = load_yaml(VALUES)
    [location] = values["dagster-user-deployments"]["deployments"]
    arguments = location["dagsterApiGrpcArgs"]
    [module] = [
        arguments[i + 1]
        for i, argument in enumerate(arguments[:-1])
        if argument in {"--module-name", "-m"}
    ]
    pyproject = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())
    assert module == pyproject["tool"]["dagster"]["module_name"]

    known = {field.metadata["env"] for field in dataclasses.fields(Settings)}
    named = {name for text in _strings(values) for name in SETTING_NAME.findall(text)}
    assert {"METRICS_AWS_REGIONS", "METRICS_WAREHOUSE", "METRICS_LAKE_DATA_PATH"} <= named
    assert named <= known, f"not settings of the project: {sorted(named - known)}"

    # The plain settings the code location gets are ones the project accepts.
    environment = {entry["name"]: entry["value"] for entry in location["env"]}
    settings = Settings.from_env(environment)
    assert settings.regions == tuple(environment["METRICS_AWS_REGIONS"].split(","))
    assert settings.warehouse == environment["METRICS_WAREHOUSE"]
    assert settings.lake_data_path == environment["METRICS_LAKE_DATA_PATH"]


def test_the_values_monitor_runs_as_the_instance_configs_do() -> None:
    """As every dagster.yaml (test_deploy.py): a dead pod's run failed at the next poll, its
    pool slots freed a minute after it ended, no run past 3 hours."""
    daemon = load_yaml(VALUES)["dagsterDaemon"]
    assert daemon["runMonitoring"] == {
        "enabled": True,
        "startTimeoutSeconds": 180,
        "cancelTimeoutSeconds": 180,
        "maxRuntimeSeconds": 10800,
        "pollIntervalSeconds": 30,
        "maxResumeRunAttempts": 0,
        "freeSlotsAfterRunEndSeconds": 60,
    }
