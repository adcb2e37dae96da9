"""Shared fixtures: moto for AWS (with GetMetricData's real limits) and a real DuckDB file."""

import os
import tempfile

# The environment of a machine with no AWS account: set before the package reads settings.
for _name in ("AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_REGION", "METRICS_AWS_REGIONS"):
    os.environ.pop(_name, None)
for _name in list(os.environ):
    if _name.startswith("METRICS_"):
        os.environ.pop(_name)
os.environ.update(
    AWS_ACCESS_KEY_ID="testing",
    AWS_SECRET_ACCESS_KEY="testing",
    AWS_DEFAULT_REGION="us-east-1",
    METRICS_DUCKDB_PATH=os.path.join(tempfile.mkdtemp(prefix="metrics-tests-"), "defs.duckdb"),
    # Step retries as in production (3), but tens of milliseconds apart rather than minutes.
    METRICS_STEP_RETRY_DELAY_SECONDS="0.05",
)

import urllib.request  # noqa: E402
from collections.abc import Iterator  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import pytest  # noqa: E402
from moto import mock_aws  # noqa: E402
from moto.cloudwatch.responses import CloudWatchResponse  # noqa: E402
from moto.server import ThreadedMotoServer  # noqa: E402

from metrics_pipeline.collection.resources import AwsResource  # noqa: E402
from metrics_pipeline.local_aws import cloudwatch as local_cloudwatch  # noqa: E402
from metrics_pipeline.warehouse.resources import WarehouseResource  # noqa: E402

local_cloudwatch.install()

from metrics_pipeline_tests.helpers import make_aws  # noqa: E402


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
