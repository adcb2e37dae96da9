"""AWS for the collection: boto3 clients per region with adaptive retries and a request-rate
cap, and botocore's errors turned into one Dagster failure line."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from functools import partial
from typing import Any, Literal

import boto3
import botocore.session
from botocore.config import Config as BotocoreConfig
from botocore.credentials import (
    CredentialProvider,
    CredentialResolver,
    DeferredRefreshableCredentials,
)
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    HTTPClientError,
    NoCredentialsError,
)
from botocore.exceptions import ConnectionError as BotoConnectionError
from botocore.loaders import Loader
from botocore.retries.bucket import Clock, TokenBucket
from dagster import ConfigurableResource, Failure
from dagster_aws.utils import ResourceWithBoto3Configuration
from pydantic import Field, PrivateAttr

from metrics_pipeline.collection.accounts import (
    Account,
    AccountUnavailable,
    assumed_role_credentials,
    list_organization_accounts,
    plan_accounts,
)
from metrics_pipeline.collection.botocore_internals import RawListsParserFactory, bound_answers
from metrics_pipeline.collection.bounds import AnswerRefused, limit_get_metric_data
from metrics_pipeline.collection.cloudwatch import (
    MAX_DATAPOINTS_PER_RESPONSE,
    THROTTLING_ERROR_CODES,
    RequestStats,
    raw_timestamp,
)
from metrics_pipeline.settings import resource_field

# The AWS services the pipeline calls.
AwsService = Literal["cloudwatch", "organizations", "pi", "rds", "sts"]


_loaders: dict[Any, Loader] = {}
_loaders_lock = threading.Lock()


def share_data_loader(core: botocore.session.Session) -> None:
    """Every botocore session reads the service models and endpoints again (megabytes of
    JSON, about 50 ms a client); sessions with the same data path share one loader, whose
    cache keeps them read once a process."""
    data_path = core.get_config_variable("data_path")
    with _loaders_lock:
        loader = _loaders.setdefault(data_path, core.get_component("data_loader"))
    core.register_component("data_loader", loader)


class AssumedRoleProvider(CredentialProvider):
    """A session's whole credential chain: the account's assumed-role credentials, which
    refresh themselves (botocore's `credential_provider` component)."""

    METHOD = "assume-role"

    def __init__(self, credentials: DeferredRefreshableCredentials) -> None:
        super().__init__()
        self.credentials = credentials

    def load(self) -> DeferredRefreshableCredentials:
        return self.credentials


class CollectionResource(ConfigurableResource):
    """What is collected: CloudWatch's period, the metrics and statistics, and when an hour's
    data counts as final. Everything that reads the warehouse's periods (rollups, checks,
    reports) takes this, not the AWS clients' resource."""

    period_seconds: int = resource_field("period_seconds")
    metrics: list[str] = resource_field("metrics")
    cluster_metrics: list[str] = resource_field("cluster_metrics")
    pi_period_seconds: int = resource_field("pi_period_seconds")
    pi_full_sql_text: bool = resource_field("pi_full_sql_text")
    statistics: list[str] = resource_field("statistics")
    settle_minutes: int = resource_field("settle_minutes")
    chunk_datapoints: int = resource_field("chunk_datapoints")
    fetch_threads: int = resource_field("fetch_threads")
    chunk_timeout_seconds: float = resource_field("chunk_timeout_seconds")
    run_timeout_seconds: float = resource_field("run_timeout_seconds")
    time_zone: str = resource_field("time_zone")
    dashboard_url: str = resource_field("dashboard_url")

    @property
    def settle_delay(self) -> timedelta:
        return timedelta(minutes=self.settle_minutes)


class AwsResource(ResourceWithBoto3Configuration):
    """Boto3 clients for each collected account and region.

    Credentials, profile and endpoint follow boto3's own chain (including AWS_ENDPOINT_URL);
    other accounts are reached through roles assumed with those credentials, refreshed before
    they expire. Retries use botocore's adaptive mode; on top of it a token bucket per account
    and region caps the request rate, as CloudWatch's quotas are per account and region.
    """

    regions: list[str] = resource_field("regions")
    role_arns: list[str] = resource_field("role_arns")
    organization_role: str = resource_field("organization_role")
    external_id: str = resource_field("external_id")
    role_session_name: str = resource_field("role_session_name")
    max_requests_per_second: float = resource_field("max_requests_per_second")
    pi_requests_per_second: float = resource_field("pi_requests_per_second")
    max_datapoints_per_request: int = Field(
        default=MAX_DATAPOINTS_PER_RESPONSE,
        description="GetMetricData page size (MaxDatapoints); CloudWatch's maximum by default.",
    )
    retry_mode: str = Field(default="adaptive", description="botocore retry mode.")
    max_attempts: int = resource_field("aws_max_attempts")
    connect_timeout_seconds: float = resource_field("aws_connect_timeout_seconds")
    read_timeout_seconds: float = resource_field("aws_read_timeout_seconds")

    _buckets: dict[tuple[str | None, str, str], TokenBucket] = PrivateAttr(default_factory=dict)
    _role_credentials: dict[str, Any] = PrivateAttr(default_factory=dict)
    _lock: threading.Lock = PrivateAttr(default_factory=threading.Lock)

    def _session(
        self, raw_timestamps: bool = False, account: Account | None = None
    ) -> boto3.session.Session:
        core = botocore.session.get_session()
        share_data_loader(core)
        if raw_timestamps:
            factory = RawListsParserFactory()
            factory.set_parser_defaults(timestamp_parser=raw_timestamp)
            core.register_component("response_parser_factory", factory)
        if account is not None and account.role_arn is not None:
            provider = AssumedRoleProvider(self.role_credentials(account))
            core.register_component("credential_provider", CredentialResolver([provider]))
            return boto3.session.Session(botocore_session=core)
        return boto3.session.Session(
            profile_name=self.profile_name,
            aws_access_key_id=self.aws_access_key_id,
            aws_secret_access_key=self.aws_secret_access_key,
            aws_session_token=self.aws_session_token,
            botocore_session=core,
        )

    def _botocore_config(self) -> BotocoreConfig:
        """botocore's own retries and timeouts, for every client and the AssumeRole calls."""
        return BotocoreConfig(
            # dagster-aws types retry_mode as any string; botocore refuses an unknown mode.
            retries={"mode": self.retry_mode, "total_max_attempts": self.max_attempts},  # type: ignore[arg-type]
            connect_timeout=self.connect_timeout_seconds,
            read_timeout=self.read_timeout_seconds,
        )

    def role_credentials(self, account: Account) -> DeferredRefreshableCredentials:
        """The account's assumed-role credentials, one refreshing set per account and run;
        AccountUnavailable (naming the role and AWS's reason) when the role cannot be assumed."""
        assert account.role_arn is not None
        with self._lock:
            credentials = self._role_credentials.get(account.account_id)
            if credentials is None:
                base = self._session()
                credentials = assumed_role_credentials(
                    partial(
                        base.client,
                        region_name=self.regions[0],
                        endpoint_url=self.endpoint_url,
                        config=self._botocore_config(),
                    ),
                    base.get_credentials(),
                    account.role_arn,
                    session_name=self.role_session_name,
                    external_id=self.external_id or None,
                )
                try:
                    credentials.get_frozen_credentials()
                except ClientError as error:
                    info = error.response.get("Error", {})
                    raise AccountUnavailable(
                        account, f"{info.get('Code')}: {info.get('Message')}"
                    ) from None
                except BotoCoreError as error:
                    raise AccountUnavailable(account, str(error)) from None
                self._role_credentials[account.account_id] = credentials
            return credentials

    def accounts(self, stats: RequestStats | None = None) -> list[Account]:
        """The accounts to collect: this one, one per role, and the Organization's if asked."""
        organization_accounts: list[str] = []
        if self.organization_role:
            with aws_errors("ListAccounts", self.regions[0]):
                organization_accounts = list_organization_accounts(
                    self.client("organizations", self.regions[0], stats)
                )
        return plan_accounts(
            self.account_id(stats), self.role_arns, organization_accounts, self.organization_role
        )

    def client(
        self,
        service: AwsService,
        region: str,
        stats: RequestStats | None = None,
        account: Account | None = None,
    ) -> Any:
        """A client for `service` in `region` of `account` (default: the pipeline's own);
        CloudWatch's keeps timestamps as sent, for `cloudwatch.page_to_table` to convert a
        page at once, and reads its answers within the bounds of `bounds`."""
        session = self._session(raw_timestamps=service == "cloudwatch", account=account)
        client = session.client(
            service,
            region_name=region,
            endpoint_url=self.endpoint_url,
            use_ssl=self.use_ssl,
            verify=self.verify,
            config=self._botocore_config(),
        )
        # Performance Insights' calls have a pace of their own: its quota is not CloudWatch's.
        pace = "pi" if service == "pi" else "other"
        rate = self.pi_requests_per_second if service == "pi" else self.max_requests_per_second
        with self._lock:
            bucket = self._buckets.setdefault(
                (account.account_id if account else None, region, pace),
                TokenBucket(max_rate=rate, clock=Clock()),
            )

        def wait_for_token(**_: Any) -> None:  # returning a value would replace the response
            bucket.acquire()

        client.meta.events.register_first("before-send", wait_for_token)
        if service == "cloudwatch":
            bound_answers(client)
            client.meta.events.register(
                "before-parameter-build.cloudwatch.GetMetricData", limit_get_metric_data
            )
        if stats is not None:
            stats.attach(client)
        return client

    def account_id(self, stats: RequestStats | None = None) -> str:
        with aws_errors("GetCallerIdentity", self.regions[0]):
            return self.client("sts", self.regions[0], stats).get_caller_identity()["Account"]


# What botocore's standard retry mode counts as transient, besides throttling: another
# attempt a little later can succeed. Anything else (AccessDenied, a validation error, a
# missing region or credentials) fails the same way however often it is tried.
TRANSIENT_ERROR_CODES = frozenset(
    {"RequestTimeout", "RequestTimeoutException", "PriorRequestNotComplete", "SlowDown"}
)


TRANSIENT_STATUS_CODES = frozenset({429, 500, 502, 503, 504})


def is_transient(error: ClientError) -> bool:
    """Throttling, a 5xx or a timeout that botocore's own retries did not get past."""
    code = error.response.get("Error", {}).get("Code")
    status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return (
        code in THROTTLING_ERROR_CODES
        or code in TRANSIENT_ERROR_CODES
        or status in TRANSIENT_STATUS_CODES
    )


@contextmanager
def aws_errors(operation: str, region: str) -> Iterator[None]:
    """Turns botocore's exceptions into one Dagster failure line naming the call and region.

    Transient failures stay retryable, for the assets' step retry policy; the others are
    raised with allow_retries=False, as running the step again cannot fix them.
    """
    try:
        yield
    except AnswerRefused as error:
        raise type(error)(f"{operation} in {region}: {error}") from None
    except NoCredentialsError:
        raise Failure(
            description=(
                f"{operation} in {region}: no AWS credentials found. Set AWS_PROFILE, or "
                "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or run on a role."
            ),
            allow_retries=False,
        ) from None
    except ClientError as error:
        info = error.response.get("Error", {})
        attempts = error.response.get("ResponseMetadata", {}).get("RetryAttempts", 0) + 1
        raise Failure(
            description=(
                f"{operation} in {region} failed after {attempts} attempt(s): "
                f"{info.get('Code')}: {info.get('Message')}"
            ),
            metadata={"error_code": str(info.get("Code")), "attempts": attempts},
            allow_retries=is_transient(error),
        ) from None
    except BotoCoreError as error:
        raise Failure(
            description=f"{operation} in {region} failed: {error}",
            # A refused, dropped or timed-out connection may work next time; a parameter
            # or configuration error will not.
            allow_retries=isinstance(error, BotoConnectionError | HTTPClientError),
        ) from None
