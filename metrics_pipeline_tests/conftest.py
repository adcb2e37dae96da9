"""Shared fixtures: moto for AWS (with GetMetricData's real limits) and a real DuckDB file."""

import os
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from moto import mock_aws
from moto.cloudwatch.responses import CloudWatchResponse
from moto.server import ThreadedMotoServer

from metrics_pipeline.collection.resources import AwsResource, CollectionResource
from metrics_pipeline.local_aws import cloudwatch as local_cloudwatch
from metrics_pipeline.warehouse.resources import WarehouseResource
from metrics_pipeline_tests.helpers import make_aws, make_collection

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
