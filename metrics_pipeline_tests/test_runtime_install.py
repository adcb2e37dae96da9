"""What the deployed image installs and what the local stack adds: the code location's image
(`scripts/install.sh --runtime`, deploy/Dockerfile) gets only what runs in production; the local
AWS (moto) and the local PostgreSQL (pgserver) come with the `local` extra, which
scripts/start.sh and scripts/test.sh install; and nothing the runtime runs imports them."""

import json
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from metrics_pipeline.warehouse.resources import WarehouseResource
from metrics_pipeline_tests.helpers import PROJECT_ROOT
from metrics_pipeline_tests.known_data import INSTANCES, seed

LOCAL_ONLY = {"moto", "pgserver"}
PYPROJECT = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())


def installed_by(extras: set[str]) -> set[str]:
    """The distributions pyproject.toml asks for with those extras, the project's own extras
    (`metrics_pipeline[slack]`) followed."""
    project = canonicalize_name(PYPROJECT["project"]["name"])
    optional = PYPROJECT["project"]["optional-dependencies"]
    wanted = [Requirement(line) for line in PYPROJECT["project"]["dependencies"]]
    for extra in extras:
        wanted += [Requirement(line) for line in optional[extra]]
    names: set[str] = set()
    for requirement in wanted:
        if canonicalize_name(requirement.name) == project:
            names |= installed_by(set(requirement.extras))
        else:
            names.add(canonicalize_name(requirement.name))
    return names


def install_sh_extras(option: str) -> str:
    """The extra scripts/install.sh installs for `option`, read from its own `case`."""
    script = (PROJECT_ROOT / "scripts" / "install.sh").read_text()
    pattern = re.escape(option or '""') + r"\) extras=([\w,]+) ;;"
    [extras] = re.findall(pattern, script)
    return extras


def test_the_runtime_install_has_neither_the_local_aws_nor_the_local_postgresql() -> None:
    runtime = installed_by(set(install_sh_extras("--runtime").split(",")))
    assert "dagster" in runtime and "duckdb" in runtime  # the closure is followed at all
    assert runtime.isdisjoint(LOCAL_ONLY), sorted(runtime & LOCAL_ONLY)
    # What start.sh and test.sh install (install.sh with no option) has them.
    assert installed_by(set(install_sh_extras("").split(","))) >= LOCAL_ONLY
    assert installed_by({"local"}) >= LOCAL_ONLY


def fake_python(folder: Path, calls: Path) -> None:
    """A python3 that records each call as it was made: `-m venv` makes a .venv whose python is
    this same recorder; `-m pip install` records what it was asked and installs nothing."""
    script = folder / "python3"
    script.write_text(
        "#!/bin/sh\n"
        f'case "$0" in *.venv/bin/python) me=.venv/bin/python ;; *) me=python3 ;; esac\n'
        f'echo "$me $*" >> {calls}\n'
        'if [ "$1 $2" = "-m venv" ]; then\n'
        '  mkdir -p "$3/bin" && cp "$0" "$3/bin/python"\n'
        "fi\n"
        "exit 0\n"
    )
    script.chmod(0o755)


@pytest.mark.e2e
@pytest.mark.parametrize(
    ("command", "pip_install"),
    [
        (
            "bash scripts/install.sh --runtime",
            ".venv/bin/python -m pip install --quiet -e .[slack]",
        ),
        ("bash scripts/install.sh", ".venv/bin/python -m pip install --quiet -e .[dev]"),
        ("bash scripts/start.sh", ".venv/bin/python -m pip install --quiet -e .[dev]"),
        ("bash scripts/test.sh", ".venv/bin/python -m pip install --quiet -e .[dev]"),
    ],
)
def test_each_script_installs_its_extra_into_a_new_venv(
    tmp_path: Path, command: str, pip_install: str
) -> None:
    """Each script run for real in a copy of the project, with a python3 that records what it
    is asked; start.sh and test.sh stop after the install (the recorder starts nothing)."""
    project = tmp_path / "project"
    shutil.copytree(PROJECT_ROOT / "scripts", project / "scripts")
    shutil.copy(PROJECT_ROOT / "pyproject.toml", project)
    shutil.copy(PROJECT_ROOT / "dagster.yaml", project)
    tools = tmp_path / "bin"
    tools.mkdir()
    calls = tmp_path / "calls"
    fake_python(tools, calls)

    subprocess.run(
        ["bash", "-c", command],
        cwd=project,
        env={"PATH": f"{tools}:/usr/bin:/bin", "HOME": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    installs = [line for line in calls.read_text().splitlines() if " pip " in line]
    assert calls.read_text().splitlines()[0] == "python3 -m venv .venv"
    assert installs == [".venv/bin/python -m pip install --quiet --upgrade pip", pip_install]
    extras = set(re.findall(r"\.\[(.+)\]$", pip_install)[0].split(","))
    local_stack = installed_by(extras) >= LOCAL_ONLY
    assert local_stack == ("--runtime" not in command), installed_by(extras) & LOCAL_ONLY


# Run in a new interpreter in which moto and pgserver cannot be imported, as in the image.
WITHOUT_LOCAL_EXTRA = """
import importlib.abc, json, runpy, sys

class Without(importlib.abc.MetaPathFinder):
    def __init__(self, finders):
        self.finders = finders

    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in {"moto", "pgserver"}:
            return None
        for finder in self.finders:
            spec = finder.find_spec(name, path, target)
            if spec is not None:
                return spec
        return None

    def find_distributions(self, *args, **kwargs):  # importlib.metadata's, as installed
        for finder in self.finders:
            for found in getattr(finder, "find_distributions", lambda *a, **k: ())(*args, **kwargs):
                if found.metadata["Name"].lower() not in {"moto", "pgserver"}:
                    yield found

sys.meta_path[:] = [Without(list(sys.meta_path))]
found = {}
try:
    import moto
except ModuleNotFoundError:
    found["moto_refused"] = True

import metrics_pipeline.definitions, metrics_pipeline.resources
from metrics_pipeline.analysts import cli, query

repository = metrics_pipeline.definitions.defs().get_repository_def()
found["jobs"] = sorted(job.name for job in repository.get_all_jobs())
found["sensors"] = len(repository.sensor_defs)
found["cli_instances"] = cli.main(["instances", "-f", "csv"])
found["query_rows"] = len(query.list_instances())
for module in ("metrics_pipeline.local_aws", "metrics_pipeline.local_postgres"):
    try:
        runpy.run_module(module, run_name="__main__", alter_sys=True)
    except SystemExit as stop:
        found[module] = str(stop.code)
found["imported"] = sorted(
    name for name in sys.modules if name.partition(".")[0] in {"moto", "pgserver"}
)
print(json.dumps(found))
"""


@pytest.mark.e2e
def test_the_runtime_loads_and_reads_without_moto_or_pgserver(tmp_path: Path) -> None:
    """The definitions (every job and sensor), the resources, the CLI and the Python API, in an
    interpreter that cannot import moto or pgserver; the local stack's commands then say in
    one line which extra they need."""
    warehouse = WarehouseResource(database=str(tmp_path / "metrics.duckdb"))
    seed(warehouse)
    done = subprocess.run(
        [sys.executable, "-c", WITHOUT_LOCAL_EXTRA],
        env={
            "PATH": "/usr/bin:/bin",
            "HOME": str(tmp_path),
            "METRICS_AWS_REGIONS": "us-east-1",
            "METRICS_DUCKDB_PATH": warehouse.database,
        },
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    found = json.loads(done.stdout.splitlines()[-1])
    assert found["moto_refused"]
    assert {"fresh_collection_job", "healing_job", "backup_job"} <= set(found["jobs"])
    assert found["sensors"] == 4
    assert found["cli_instances"] == 0
    assert found["query_rows"] == len(INSTANCES)
    for module, package in (
        ("metrics_pipeline.local_aws", "moto"),
        ("metrics_pipeline.local_postgres", "pgserver"),
    ):
        assert found[module] == (
            f"python -m {module}: needs {package}, from the project's local extra: "
            "pip install -e '.[local]' (scripts/start.sh installs it)"
        )
    assert found["imported"] == []
