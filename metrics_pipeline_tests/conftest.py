"""Shared fixtures: moto for AWS (with GetMetricData's real limits), a real DuckDB file, and
for the scale-out tests a real PostgreSQL and a moto S3 server, both on loopback."""

import itertools
import os
import shutil
import subprocess
import sys
import tempfile
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
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


@pytest.fixture
def warehouse(tmp_path: Path) -> WarehouseResource:
    return WarehouseResource(database=str(tmp_path / "warehouse" / "metrics.duckdb"))


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


@pytest.fixture
def lake_warehouse(lake: Lake, tmp_path: Path) -> WarehouseResource:
    """The warehouse on `lake`; its backups go next to where the DuckDB file would be."""
    return WarehouseResource(
        database=str(tmp_path / "warehouse" / "metrics.duckdb"),
        lake_catalog=lake.catalog,
        lake_data_path=lake.data_path,
    )
