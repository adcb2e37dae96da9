"""The botocore internals the collection relies on (collection/botocore_internals.py) are there
and still do what they were written for; when botocore changes, these fail with a message
that says what changed."""

import json
import re
import tomllib
from pathlib import Path
from typing import Any

import boto3
import botocore
import botocore.session
import pytest
from botocore.parsers import ResponseParser, ResponseParserFactory

from metrics_pipeline.collection.botocore_internals import (
    TESTED_BOTOCORE,
    BotocoreChanged,
    RawListsParserFactory,
    check_botocore_internals,
)
from metrics_pipeline_tests.helpers import make_aws

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"


def minor(version: str) -> str:
    return ".".join(version.split(".")[:2])


def test_botocore_is_the_version_the_internals_were_written_against() -> None:
    assert minor(botocore.__version__) == TESTED_BOTOCORE, (
        f"botocore {botocore.__version__} is installed, but the fast GetMetricData parse and "
        f"the bounded answers were written against botocore {TESTED_BOTOCORE}: check "
        "collection/botocore_internals.py against it, then update TESTED_BOTOCORE and the pin"
    )
    assert minor(boto3.__version__) == TESTED_BOTOCORE, (
        f"boto3 {boto3.__version__} comes with another botocore than {TESTED_BOTOCORE}"
    )
    dependencies = tomllib.loads(PYPROJECT.read_text())["project"]["dependencies"]
    major, minor_number = TESTED_BOTOCORE.split(".")
    pin = f">={TESTED_BOTOCORE},<{major}.{int(minor_number) + 1}"
    for package in ("boto3", "botocore"):
        assert f"{package}{pin}" in dependencies, (
            f"pyproject.toml must pin {package}{pin}: the botocore internals were written "
            f"against {TESTED_BOTOCORE}"
        )


def test_the_internals_are_there() -> None:
    check_botocore_internals(make_aws().client("cloudwatch", "us-east-1"))


def test_a_missing_internal_fails_with_a_line_naming_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delattr(ResponseParser, "_handle_list")
    message = (
        f"botocore {re.escape(botocore.__version__)} has no BaseJSONParser._handle_list any "
        r"more, which the fast GetMetricData parse relies on \(written against botocore "
        f"{re.escape(TESTED_BOTOCORE)}\\)"
    )
    with pytest.raises(BotocoreChanged, match=message):
        check_botocore_internals()
    # A CloudWatch client is not made on such a botocore.
    with pytest.raises(BotocoreChanged, match=message):
        make_aws().client("cloudwatch", "us-east-1")


def test_the_fast_parse_is_taken() -> None:
    """botocore still sends GetMetricData's lists through the overridden `_handle_list`: the
    timestamps of a list reach no timestamp parser (botocore's own factory parses each)."""
    model = botocore.session.get_session().get_service_model("cloudwatch")
    shape = model.operation_model("GetMetricData").output_shape
    body = {
        "MetricDataResults": [
            {"Id": "q0", "Timestamps": [1764115200, 1764115500], "Values": [1.0, 2.0]}
        ]
    }
    parsed_timestamps: dict[str, list[Any]] = {}
    for name, factory in (("botocore", ResponseParserFactory()), ("fast", RawListsParserFactory())):
        seen = parsed_timestamps.setdefault(name, [])
        factory.set_parser_defaults(timestamp_parser=lambda value, seen=seen: seen.append(value))
        response = {"body": json.dumps(body).encode(), "headers": {}, "status_code": 200}
        factory.create_parser("json").parse(response, shape)
    assert parsed_timestamps["botocore"] == [1764115200, 1764115500]
    assert parsed_timestamps["fast"] == [], (
        f"botocore {botocore.__version__} parses GetMetricData's Timestamps element by element "
        "despite RawListsParserFactory: the fast parse is bypassed (see botocore_internals.py)"
    )
