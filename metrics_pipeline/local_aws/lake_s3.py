"""The scale-out stack's S3 for the lake: a moto server on loopback that checks every request
against IAM, as S3 does, so that the analysts' read-only keys are read-only for real.

    python -m metrics_pipeline.local_aws.lake_s3 --port 5056 --env-dir .scale-out

It creates the bucket and two IAM users, each with the S3 statements of the project's own
policies for the lake's prefix: the pipeline's (deploy/iam/pipeline-policy.json: read, write
and list the prefix) and the analysts' (deploy/iam/analyst-policy.json: read and list it).
Their settings go to <env-dir>/pipeline-s3.env and analyst-s3.env (owner-only):
AWS_ENDPOINT_URL_S3 and the access keys. The fleet's local AWS (local_aws.server) does not
check credentials; this one is its own process, as moto's IAM switch is per process.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import threading
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import boto3

from metrics_pipeline.local_aws import exit_without_local_extra

if __name__ == "__main__":
    exit_without_local_extra("moto", "python -m metrics_pipeline.local_aws.lake_s3")

from moto.server import ThreadedMotoServer

# The policies the project ships (a clone's deploy/ folder: the local stack runs from one).
IAM_POLICIES = Path(__file__).resolve().parents[2] / "deploy" / "iam"
# The bucket and prefix the shipped policies name, replaced by the lake's own.
EXAMPLE_BUCKET = "example-metrics-lake"
EXAMPLE_PREFIX = "warehouse"
REGION = "us-east-1"


@dataclass(frozen=True)
class AccessKey:
    key_id: str
    secret: str


def lake_policy(file: str, bucket: str, prefix: str) -> list[dict[str, Any]]:
    """The S3 statements of deploy/iam/`file`, for the lake at s3://`bucket`/`prefix`/."""
    text = (IAM_POLICIES / file).read_text()
    text = text.replace(f":::{EXAMPLE_BUCKET}", f":::{bucket}")
    text = text.replace(f"{EXAMPLE_PREFIX}/", f"{prefix.strip('/')}/")
    statements = json.loads(text)["Statement"]
    statements = [s for s in statements if all(a.startswith("s3:") for a in _actions(s))]
    if any("s3:DeleteObject" in _actions(s) for s in statements):
        # moto checks a DeleteObjects request's s3:DeleteObject against the bucket, where S3
        # checks it against each key: allowed on the bucket's ARN, which names no object in
        # S3, a policy allowing the prefix's deletes passes moto's check too.
        statements.append(
            {"Effect": "Allow", "Action": "s3:DeleteObject", "Resource": f"arn:aws:s3:::{bucket}"}
        )
    return statements


def _actions(statement: dict[str, Any]) -> list[str]:
    listed = statement["Action"]
    return [listed] if isinstance(listed, str) else list(listed)


def _client(service: Literal["iam", "s3"], url: str, key: AccessKey) -> Any:
    return boto3.client(
        service,
        endpoint_url=url,
        region_name=REGION,
        aws_access_key_id=key.key_id,
        aws_secret_access_key=key.secret,
    )


def create_user(url: str, admin: AccessKey, name: str, statements: list[dict]) -> AccessKey:
    """A new IAM user with `statements` as its only policy; its access key."""
    iam = _client("iam", url, admin)
    iam.create_user(UserName=name)
    iam.put_user_policy(
        UserName=name,
        PolicyName=name,
        PolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": statements}),
    )
    key = iam.create_access_key(UserName=name)["AccessKey"]
    return AccessKey(key["AccessKeyId"], key["SecretAccessKey"])


def set_up(url: str, bucket: str) -> AccessKey:
    """An administrator (for creating users later) and the bucket, then IAM enforced: from
    now on a request passes only signed with the key of a user whose policy allows it."""
    admin = create_user(
        url,
        AccessKey("setup", "setup"),  # unchecked until enforced
        "lake-admin",
        [{"Effect": "Allow", "Action": "*", "Resource": "*"}],
    )
    _client("s3", url, admin).create_bucket(Bucket=bucket)
    enforce = urllib.request.Request(
        f"{url}/moto-api/reset-auth",
        data=b"0",  # the number of requests still let through unchecked
        method="POST",
        headers={"Content-Type": "text/plain"},
    )
    urllib.request.urlopen(enforce)
    return admin


def _write_env(path: Path, settings: dict[str, str]) -> None:
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    with os.fdopen(descriptor, "w") as file:
        file.writelines(f"{name}={value}\n" for name, value in settings.items())


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m metrics_pipeline.local_aws.lake_s3", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--port", type=int, default=5056)
    parser.add_argument("--bucket", default="metrics-lake")
    parser.add_argument("--prefix", default=EXAMPLE_PREFIX)
    parser.add_argument("--env-dir", type=Path, default=Path(".scale-out"))
    args = parser.parse_args(argv)
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # no line per request
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=args.port, verbose=False)
    server.start()
    url = f"http://127.0.0.1:{args.port}"
    try:
        admin = set_up(url, args.bucket)
        args.env_dir.mkdir(parents=True, exist_ok=True)
        for role, file in (
            ("pipeline", "pipeline-policy.json"),
            ("analyst", "analyst-policy.json"),
        ):
            key = create_user(url, admin, role, lake_policy(file, args.bucket, args.prefix))
            _write_env(
                args.env_dir / f"{role}-s3.env",
                {
                    "AWS_ENDPOINT_URL_S3": url,
                    "AWS_ACCESS_KEY_ID": key.key_id,
                    "AWS_SECRET_ACCESS_KEY": key.secret,
                },
            )
        print(
            f"lake S3 on {url}: s3://{args.bucket}/{args.prefix}/, IAM enforced; keys in "
            f"{args.env_dir}/pipeline-s3.env and analyst-s3.env",
            flush=True,
        )
        done = threading.Event()
        signal.signal(signal.SIGTERM, lambda *_: done.set())
        signal.signal(signal.SIGINT, lambda *_: done.set())
        done.wait()
    finally:
        server.stop()


if __name__ == "__main__":
    main()
