"""deploy/iam's policies grant exactly what the pipeline calls. A deployment's worth of work
runs in real processes (discovery, collection from a second account through its role and
from the Organization's list, into a lake on S3), each recording every AWS operation it
calls through botocore's `before-call` event (aws_calls/sitecustomize.py); DuckDB's own S3
requests, which are not botocore's, are read from the S3 server's request log."""

import json
import re
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import boto3
import pytest

from metrics_pipeline.hours import partition_key
from metrics_pipeline.local_aws.fleet import reader_role_arn, simulated_accounts
from metrics_pipeline.warehouse.lake import Lake
from metrics_pipeline_tests.conftest import S3Server
from metrics_pipeline_tests.helpers import (
    DAGSTER,
    PROJECT_ROOT,
    busy_hour,
    free_port,
    pipeline_env,
    wait_for,
)

pytestmark = [pytest.mark.e2e, pytest.mark.scale_out]

IAM = PROJECT_ROOT / "deploy" / "iam"
RECORDER = Path(__file__).parent / "aws_calls"
CLI = str(Path(sys.executable).with_name("metrics-pipeline"))
# Calls AWS allows every caller, with no permission to grant.
NEEDS_NO_PERMISSION = {"sts:GetCallerIdentity"}
# What DuckDB does on the lake's S3 path (httpfs, not botocore): reads (GET, HEAD), writes
# (PUT, multipart uploads, their abort), DuckLake's deletion of files no snapshot needs, and
# listings. Not every one happens in a short test: the log must show a subset.
LAKE_WRITER_S3_ACTIONS = {
    "s3:GetObject", "s3:PutObject", "s3:DeleteObject", "s3:AbortMultipartUpload", "s3:ListBucket",
}  # fmt: skip
LAKE_READER_S3_ACTIONS = {"s3:GetObject", "s3:ListBucket"}
REQUEST = re.compile(r'"(GET|HEAD|PUT|POST|DELETE) (/[^ ?]*)(\?[^ ]*)? HTTP/')
COLOURS = re.compile(r"\x1b\[[0-9;]*m")  # the server's log colours some lines


def s3_action(method: str, path: str, query: str) -> str:
    """The IAM action an S3 request needs (path-style: /bucket/key)."""
    is_object = path.strip("/").count("/") >= 1
    if not is_object:
        return "s3:ListBucket" if method == "GET" else f"s3:{method} on a bucket"
    if method in ("GET", "HEAD"):
        return "s3:GetObject"
    if method == "DELETE":
        return "s3:AbortMultipartUpload" if "uploadId" in query else "s3:DeleteObject"
    return "s3:PutObject"  # PUT, and POST to start or complete a multipart upload


def policy_actions(name: str) -> set[str]:
    statements = json.loads((IAM / name).read_text())["Statement"]
    actions: set[str] = set()
    for statement in statements:
        assert statement["Effect"] == "Allow"
        listed = statement["Action"]
        actions |= {listed} if isinstance(listed, str) else set(listed)
    return actions


def test_the_policies_grant_exactly_what_the_pipeline_calls(
    lake: Lake, s3_server: S3Server, tmp_path: Path
) -> None:
    _, second = simulated_accounts(2)
    aws_port = free_port()
    endpoint = f"http://127.0.0.1:{aws_port}"
    aws_log = tmp_path / "local_aws.log"
    local_aws = subprocess.Popen(
        [sys.executable, "-u", "-m", "metrics_pipeline.local_aws", "--port", str(aws_port),
         "--accounts", "2", "--regions", "us-east-1,eu-west-1"],
        stdout=aws_log.open("w"), stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        wait_for(lambda: "local AWS on" in aws_log.read_text(), 60, "the local AWS")
        boto3.client(
            "organizations", endpoint_url=endpoint, region_name="us-east-1"
        ).create_organization(FeatureSet="ALL")
        calls = tmp_path / "aws_calls"
        calls.mkdir()
        env = pipeline_env(
            tmp_path,
            endpoint,
            METRICS_AWS_REGIONS="us-east-1,eu-west-1",
            METRICS_CLOUDWATCH_METRICS="CPUUtilization",
            # Every call the code can make: the statements' whole text too.
            METRICS_PI_FULL_SQL_TEXT="true",
            METRICS_AWS_ROLE_ARNS=reader_role_arn(second),
            METRICS_AWS_ORGANIZATION_ROLE="metrics-reader",
            METRICS_WAREHOUSE=lake.catalog,
            METRICS_LAKE_DATA_PATH=lake.data_path,
            AWS_CALLS_LOG=str(calls),
            PYTHONPATH=str(RECORDER),
        )
        logged_before = s3_server.request_log.stat().st_size
        hour = busy_hour(datetime.now(UTC))  # load: statements to ask the whole text of
        module = ["asset", "materialize", "-m", "metrics_pipeline.definitions", "--select"]
        for command in (
            [DAGSTER, *module, "rds_instances"],
            [DAGSTER, *module, "rds_metrics", "--partition", partition_key(hour)],
            [DAGSTER, *module, "rds_pi_load", "--partition", partition_key(hour)],
            [CLI, "query", "SELECT sum(average) FROM rds_metrics"],
        ):
            done = subprocess.run(command, env=env, capture_output=True, text=True)
            assert done.returncode == 0, done.stderr[-3000:]
    finally:
        local_aws.terminate()
        local_aws.wait(10)

    recorded = {
        f"{service.replace(' ', '').lower()}:{operation}"
        for log in calls.glob("*.log")
        for service, operation in (line.split(":") for line in log.read_text().split())
    }
    requests = COLOURS.sub("", s3_server.request_log.read_bytes()[logged_before:].decode())
    lake_prefix = "/" + lake.data_path.removeprefix("s3://")
    s3_actions = {
        s3_action(method, path, query or "")
        for method, path, query in REQUEST.findall(requests)
        if path.startswith(lake_prefix.rstrip("/"))
    }
    # Every kind of call happened: the scenario covers the policy.
    assert {"rds:DescribeDBInstances", "cloudwatch:GetMetricData", "pi:GetResourceMetrics",
            "pi:GetDimensionKeyDetails", "sts:AssumeRole",
            "organizations:ListAccounts"} <= recorded  # fmt: skip
    assert {"s3:GetObject", "s3:PutObject"} <= s3_actions <= LAKE_WRITER_S3_ACTIONS

    assert (
        policy_actions("pipeline-policy.json")
        == (recorded - NEEDS_NO_PERMISSION) | LAKE_WRITER_S3_ACTIONS
    )
    # In another account, the assumed role only discovers and collects (Performance Insights'
    # load included).
    assert policy_actions("member-account-policy.json") == {
        action for action in recorded if action.startswith(("rds:", "cloudwatch:", "pi:"))
    }
    assert policy_actions("analyst-policy.json") == LAKE_READER_S3_ACTIONS
