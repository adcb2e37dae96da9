"""Shared fixtures: moto for AWS (with GetMetricData's real limits), the warehouse on every
storage kind (a real DuckDB file; a DuckLake on a real PostgreSQL and a moto S3 server, both on
loopback), and the check that a test starting a process is marked `e2e`."""

import contextlib
import itertools
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import threading
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

import pytest
from moto import mock_aws
from moto.cloudwatch.responses import CloudWatchResponse
from moto.server import ThreadedMotoServer

from metrics_pipeline.collection.resources import AwsResource, CollectionResource
from metrics_pipeline.local_aws import cloudwatch as local_cloudwatch
from metrics_pipeline.local_aws import lake_s3
from metrics_pipeline.local_aws.lake_s3 import AccessKey
from metrics_pipeline.local_postgres import server as local_postgres
from metrics_pipeline.warehouse.lake import Lake
from metrics_pipeline.warehouse.resources import WarehouseResource
from metrics_pipeline_tests.helpers import free_port, make_aws, make_collection, wait_for

local_cloudwatch.install()


@pytest.fixture(scope="session", autouse=True)
def machine_without_aws_account(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """The environment of a machine with no AWS account and no pipeline setting, for every test
    and every process a test starts (the package reads no environment at import)."""
    with pytest.MonkeyPatch.context() as patch:
        for name in ("AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_REGION"):
            patch.delenv(name, raising=False)
        for name in [name for name in os.environ if name.startswith("METRICS_")]:
            patch.delenv(name)
        patch.setenv("AWS_ACCESS_KEY_ID", "testing")
        patch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
        patch.setenv("AWS_DEFAULT_REGION", "us-east-1")
        patch.setenv("METRICS_DUCKDB_PATH", str(tmp_path_factory.mktemp("defs") / "defs.duckdb"))
        yield


@pytest.fixture
def moto_aws() -> Iterator[None]:
    with mock_aws():
        yield


# The warehouse's storage kinds: every test that uses the `warehouse` fixture (itself or through
# another fixture) runs once on each, its id ending in the kind's name. A new kind is one entry
# here and one branch in `warehouse` below.
STORAGE_KINDS = ("duckdb", "lake", "local_lake")
# The kinds that need the scale-out servers (PostgreSQL, S3): their runs are marked `scale_out`.
SCALE_OUT_KINDS = frozenset({"lake"})
# One kind per code path of the warehouse: the DuckDB file (its keys, its snapshot copy) and a
# DuckLake (its catalog copy, its data files). The lake on PostgreSQL and S3 takes the DuckLake
# path too; what only it has is tested in modules of its own (test_lake.py,
# test_lake_readers.py, test_deploy.py, the scale-out end-to-end test). By default a test
# marked `storage_neutral` runs on these only.
CODE_PATH_KINDS = ("duckdb", "local_lake")


def selected_storage_kinds(option: str) -> list[str] | None:
    """The kinds `--storage` names; None for `default`."""
    if option == "default":
        return None
    if option == "all":
        return list(STORAGE_KINDS)
    kinds = [kind.strip() for kind in option.split(",")]
    unknown = [kind for kind in kinds if kind not in STORAGE_KINDS]
    if unknown or not kinds:
        raise pytest.UsageError(
            f"--storage: unknown storage kind {', '.join(unknown)!r}; "
            f"choose among {', '.join(STORAGE_KINDS)}, or default, or all"
        )
    return kinds


def storage_kinds_of(definition: Any, nodeid: str) -> list[str]:
    """The kinds a test may run on: all, unless its `storage_kinds` marker (which must say why
    in `reason=`) names fewer."""
    marker = definition.get_closest_marker("storage_kinds")
    if marker is None:
        return list(STORAGE_KINDS)
    reason = marker.kwargs.get("reason")
    if not isinstance(reason, str) or not reason.strip():
        raise pytest.UsageError(
            f"{nodeid}: @pytest.mark.storage_kinds needs reason='why the test cannot run on "
            f"the other kinds'"
        )
    unknown = [kind for kind in marker.args if kind not in STORAGE_KINDS]
    if unknown or not marker.args:
        raise pytest.UsageError(
            f"{nodeid}: @pytest.mark.storage_kinds: unknown storage kind {unknown!r}; "
            f"choose among {', '.join(STORAGE_KINDS)}"
        )
    return list(marker.args)


def storage_kinds_to_run(definition: Any, nodeid: str, option: str) -> list[str]:
    """The kinds a test runs on: those it may run on that `--storage` selects; by default
    every kind, but only CODE_PATH_KINDS for a test marked `storage_neutral`."""
    selected = selected_storage_kinds(option)
    if selected is None:
        neutral = definition.get_closest_marker("storage_neutral") is not None
        selected = list(CODE_PATH_KINDS if neutral else STORAGE_KINDS)
    return [kind for kind in storage_kinds_of(definition, nodeid) if kind in selected]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Each test of the warehouse once per storage kind it runs on."""
    if "storage_kind" not in metafunc.fixturenames:
        return
    kinds = storage_kinds_to_run(
        metafunc.definition, metafunc.definition.nodeid, str(metafunc.config.getoption("--storage"))
    )
    metafunc.parametrize(
        "storage_kind",
        [
            pytest.param(
                kind,
                id=kind,
                marks=[pytest.mark.scale_out] if kind in SCALE_OUT_KINDS else [],
            )
            for kind in kinds
        ],
        indirect=True,
    )


@pytest.fixture
def storage_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def warehouse(
    storage_kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> WarehouseResource:
    """The warehouse on `storage_kind`; its backups go where the DuckDB file would be. The
    lake's servers start only for the first test that needs them."""
    database = str(tmp_path / "warehouse" / "metrics.duckdb")
    if storage_kind == "duckdb":
        return WarehouseResource(database=database)
    if storage_kind == "lake":
        lake: Lake = request.getfixturevalue("lake")
        return WarehouseResource(
            database=database, lake_catalog=lake.catalog, lake_data_path=lake.data_path
        )
    if storage_kind == "local_lake":  # a DuckDB catalog file and a data folder
        folder = tmp_path / "warehouse"
        return WarehouseResource(
            database=database,
            lake_catalog=f"ducklake:{folder / 'metrics.ducklake'}",
            lake_data_path=f"{folder / 'data'}/",
        )
    raise AssertionError(f"no warehouse for the storage kind {storage_kind!r}")


@pytest.fixture
def aws() -> AwsResource:
    return make_aws()


@pytest.fixture
def collection() -> CollectionResource:
    return make_collection()


@pytest.fixture
def get_metric_data_calls(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """Every GetMetricData request as the (moto) server received it."""
    calls: list[dict[str, Any]] = []

    def recording(self: CloudWatchResponse) -> Any:
        params = self._get_params()
        calls.append(
            {
                "queries": len(params.get("MetricDataQueries", [])),
                "max_datapoints": params.get("MaxDatapoints"),
                "next_token": params.get("NextToken"),
                "region": self.region,
            }
        )
        return local_cloudwatch.get_metric_data(self)

    monkeypatch.setattr(CloudWatchResponse, "get_metric_data", recording)
    return calls


@pytest.fixture
def moto_server(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A moto server on a free loopback port, in this process (so fleets can be set up
    through moto's models), with the real GetMetricData limits."""
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    url = f"http://{host}:{port}"
    urllib.request.urlopen(urllib.request.Request(f"{url}/moto-api/reset", method="POST"))
    monkeypatch.setenv("AWS_ENDPOINT_URL", url)
    yield url
    server.stop()


@pytest.fixture(scope="session")
def postgres() -> Iterator[local_postgres.LocalPostgres]:
    """A PostgreSQL 16 server on loopback for the whole session (from the pgserver wheel), in
    a folder of the system's temporary one: as root it runs as another user, who cannot reach
    pytest's own (private) temporary folders."""
    folder = Path(tempfile.mkdtemp(prefix="metrics-postgres-"))
    server = local_postgres.start(folder)
    with pytest.MonkeyPatch.context() as patch:
        # The pipeline's password, for every writer here and every process a test starts; a
        # reader's processes are given the reader's file instead.
        patch.setenv("PGPASSFILE", str(server.passfile(local_postgres.WRITER)))
        yield server
    server.stop()
    shutil.rmtree(folder, ignore_errors=True)


@dataclass(frozen=True)
class S3Server:
    """A moto S3 server that enforces IAM, as S3 does: a request passes only signed with the
    access key of an IAM user whose policy allows it (the local stack's lake_s3 set-up)."""

    url: str
    request_log: Path  # the server's log: one line per HTTP request it answered
    admin: AccessKey  # may do anything, creating the users of each lake included

    def user(self, name: str, statements: list[dict[str, Any]]) -> AccessKey:
        return lake_s3.create_user(self.url, self.admin, name, statements)


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """A moto server on loopback, in its own process, that the lakes' S3 data goes to
    (DuckDB's httpfs talks to it over HTTP, as it talks to S3). Its own process: the
    in-process moto that other tests start and reset shares this process's state. It has
    the bucket `lake`, and checks every request against IAM."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    request_log = tmp_path_factory.mktemp("s3") / "requests.log"
    with request_log.open("w") as log:
        server = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    wait_for(lambda: _answers(url), 30, "the moto S3 server")
    yield S3Server(url, request_log, lake_s3.set_up(url, "lake"))
    server.terminate()
    server.wait(10)


@pytest.fixture(scope="session")
def s3_endpoint(s3_server: S3Server) -> str:
    return s3_server.url


def _answers(url: str) -> bool:
    try:
        urllib.request.urlopen(f"{url}/moto-api/")
    except OSError:
        return False
    return True


_lakes = itertools.count(1)


def new_catalog_database(postgres: local_postgres.LocalPostgres) -> str:
    """A new, empty PostgreSQL database for one lake's catalog, which the writer role owns and
    the reader role may read; its name."""
    name = f"lake_{os.getpid()}_{next(_lakes)}"
    postgres.create_lake_database(name)
    return name


@pytest.fixture
def lake(
    postgres: local_postgres.LocalPostgres, s3_server: S3Server, monkeypatch: pytest.MonkeyPatch
) -> Lake:
    """A new lake: its own catalog database in the PostgreSQL, its own prefix in the S3, which
    the pipeline reaches with the role and the S3 policy of deploy/iam/pipeline-policy.json
    (in this process's environment, for the writers here and the processes a test starts)."""
    database = new_catalog_database(postgres)
    writer = s3_server.user(
        f"{database}-pipeline", lake_s3.lake_policy("pipeline-policy.json", "lake", database)
    )
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", s3_server.url)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", writer.key_id)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", writer.secret)
    return Lake(f"ducklake:postgres:{postgres.dsn(database)}", f"s3://lake/{database}/")


@pytest.fixture
def lake_reader_env(
    lake: Lake, postgres: local_postgres.LocalPostgres, s3_server: S3Server
) -> dict[str, str]:
    """The environment of an analyst reading `lake`: the read-only database role (its own
    password file, without the pipeline's) and S3 credentials of
    deploy/iam/analyst-policy.json."""
    database = lake.data_path.removeprefix("s3://lake/").strip("/")
    reader = s3_server.user(
        f"{database}-analyst", lake_s3.lake_policy("analyst-policy.json", "lake", database)
    )
    return {
        **os.environ,
        "PGPASSFILE": str(postgres.passfile(local_postgres.READER)),
        "METRICS_WAREHOUSE": f"ducklake:postgres:{postgres.dsn(database, local_postgres.READER)}",
        "METRICS_LAKE_DATA_PATH": lake.data_path,
        "AWS_ACCESS_KEY_ID": reader.key_id,
        "AWS_SECRET_ACCESS_KEY": reader.secret,
    }


class ProcessWatch:
    """Fails a test not marked `e2e` that starts a process: the marker tells which tests are
    slow and need more than this Python (`-m "not e2e"` leaves them out), so it has to be true.

    An audit hook (`sys.addaudithook`, which cannot be removed: it is installed once and looks
    only while a test is watched) sees every process start in this interpreter, whichever
    thread makes it: `subprocess.Popen`, `os.posix_spawn`, `os.exec*`, `os.spawn*`,
    `os.system`, `os.fork`. It counts those the test's own code starts (the first caller
    outside the standard library is in metrics_pipeline_tests/ or benchmarks/: the command
    line, `dagster`, a child to kill, a lock holder), not those the code under test starts as
    part of its work (the DuckDB file's snapshot copy, pgserver's `psql`). A test is watched
    during its call and the set-up of its function-scoped fixtures. The set-up of session-,
    module- and class-scoped fixtures is not watched: the PostgreSQL and the S3 server a
    storage kind needs are shared infrastructure, started once for the whole session by
    whichever test first needs them, not by that test.
    """

    EVENTS = frozenset(
        {"subprocess.Popen", "os.posix_spawn", "os.exec", "os.spawn", "os.system", "os.fork"}
    )

    def __init__(self) -> None:
        self.watching = False
        self.started: list[str] = []
        self.lock = threading.Lock()

    def audit(self, event: str, args: tuple[Any, ...]) -> None:
        if self.watching and event in self.EVENTS and _started_by_tests(sys._getframe(1)):
            with self.lock:
                self.started.append(f"{event} {_command(event, args)}")

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        watching, self.watching = self.watching, False
        try:
            yield
        finally:
            self.watching = watching

    def verdict(self, item: pytest.Item) -> str | None:
        """Why the test fails, if it started a process unmarked; None otherwise."""
        started, self.started = self.started, []
        if not started or item.get_closest_marker("e2e") is not None:
            return None
        return (
            f"{item.nodeid} started a process but is not marked e2e (mark it "
            f"@pytest.mark.e2e): {started[0]}"
            + (f" and {len(started) - 1} more" if len(started) > 1 else "")
        )

    # The hooks, in a plugin registered for the whole session: a conftest's own hooks are not
    # called for the set-up of the session's fixtures, which belong to no folder.
    @pytest.hookimpl(wrapper=True)
    def pytest_fixture_setup(self, fixturedef: pytest.FixtureDef[Any]) -> Iterator[Any]:
        watching = self.watching
        if fixturedef.scope != "function":
            self.watching = False
        try:
            return (yield)
        finally:
            self.watching = watching

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_setup(self, item: pytest.Item) -> Iterator[None]:
        self.started = []
        self.watching = True
        try:
            return (yield)
        finally:
            self.watching = False

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_call(self, item: pytest.Item) -> Iterator[None]:
        self.watching = True
        try:
            result = yield
        finally:
            self.watching = False
        verdict = self.verdict(item)
        if verdict is not None:
            pytest.fail(verdict, pytrace=False)
        return result


_STANDARD_LIBRARY = Path(sysconfig.get_paths()["stdlib"]).resolve()
_TEST_CODE = (Path(__file__).resolve().parent, Path(__file__).resolve().parents[1] / "benchmarks")


def _started_by_tests(frame: FrameType | None) -> bool:
    """Whether the first caller outside the standard library is the tests' own code."""
    while frame is not None:
        file = Path(frame.f_code.co_filename)
        if file.is_absolute() and not file.is_relative_to(_STANDARD_LIBRARY):
            return any(file.is_relative_to(folder) for folder in _TEST_CODE)
        frame = frame.f_back
    return False


def _command(event: str, args: tuple[Any, ...]) -> str:
    """The command of a process-start audit event, shortened for a one-line message."""
    if event == "subprocess.Popen":
        command = args[1]
    elif event in ("os.posix_spawn", "os.exec", "os.spawn"):
        command = args[1] if event != "os.spawn" else args[2]
    elif event == "os.system":
        command = args[0]
    else:
        return "(fork)"
    if isinstance(command, (bytes, str, os.PathLike)):
        text = os.fsdecode(command)
    else:
        text = " ".join(os.fsdecode(part) for part in command)
    return text[:200]


process_watch = ProcessWatch()
sys.addaudithook(process_watch.audit)


def pytest_configure(config: pytest.Config) -> None:
    # A wrong --storage stops the run before collection.
    selected_storage_kinds(str(config.getoption("--storage")))
    config.pluginmanager.register(process_watch, "process_watch")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The tests that start processes or load a large fleet first, in their order: they are the
    longest and mostly wait on their processes, so with the suite spread over the cores
    (pytest-xdist, scripts/test.sh) the in-process tests fill the cores meanwhile instead of
    the longest ending the run alone."""
    items.sort(
        key=lambda item: not any(item.iter_markers("e2e")) and not any(item.iter_markers("load"))
    )
