"""The AWS accounts a deployment collects: its own, one per role to assume, or every account of
an AWS Organization; and the refreshable credentials of an assumed role."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from botocore.credentials import (
    AssumeRoleCredentialFetcher,
    DeferredRefreshableCredentials,
)

from metrics_pipeline.settings import DEFAULT_ROLE_SESSION_NAME, ROLE_ARN


@dataclass(frozen=True, order=True)
class Account:
    """An account to collect; `role_arn` None means the credentials the pipeline runs with."""

    account_id: str
    role_arn: str | None = None


class AccountUnavailable(Exception):
    """A role that could not be assumed: that account is skipped, the others are collected."""

    def __init__(self, account: Account, reason: str) -> None:
        super().__init__(
            f"account {account.account_id}: cannot assume {account.role_arn}: {reason}"
        )
        self.account = account


def account_of_role(role_arn: str) -> str:
    match = ROLE_ARN.match(role_arn)
    if match is None:
        raise ValueError(f"'{role_arn}' is not an IAM role ARN")
    return match[2]


def role_arn_for(account_id: str, role_name: str, partition: str = "aws") -> str:
    return f"arn:{partition}:iam::{account_id}:role/{role_name}"


def plan_accounts(
    own_account_id: str,
    role_arns: Iterable[str] = (),
    organization_accounts: Iterable[str] = (),
    organization_role: str | None = None,
) -> list[Account]:
    """The accounts to collect, each once: the pipeline's own (with its own credentials), one per
    role ARN, and every account of the organization through `organization_role`."""
    accounts = {own_account_id: Account(own_account_id)}
    if organization_role:
        for account_id in organization_accounts:
            accounts.setdefault(
                account_id, Account(account_id, role_arn_for(account_id, organization_role))
            )
    for role_arn in role_arns:
        account_id = account_of_role(role_arn)
        if account_id != own_account_id:
            accounts[account_id] = Account(account_id, role_arn)
    return sorted(accounts.values())


def list_organization_accounts(organizations_client: Any) -> list[str]:
    """The ids of the organization's active accounts (ListAccounts, every page)."""
    paginator = organizations_client.get_paginator("list_accounts")
    return sorted(
        account["Id"]
        for page in paginator.paginate()
        for account in page.get("Accounts", [])
        if account.get("Status", "ACTIVE") == "ACTIVE"
    )


class _NothingCached(dict[str, Any]):
    """The fetcher's cache, kept empty: the refreshable credentials hold the current ones, and a
    cache would hand them back by the wall clock rather than the credentials' own."""

    def __setitem__(self, key: str, value: Any) -> None:
        return None


def assumed_role_credentials(
    client_creator: Callable[..., Any],
    source_credentials: Any,
    role_arn: str,
    session_name: str = DEFAULT_ROLE_SESSION_NAME,
    external_id: str | None = None,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> DeferredRefreshableCredentials:
    """Credentials of `role_arn` that call AssumeRole again shortly before they expire, so a run
    longer than the role's session (an hour by default) keeps going."""
    extra_args = {"RoleSessionName": session_name}
    if external_id:
        extra_args["ExternalId"] = external_id
    fetcher = AssumeRoleCredentialFetcher(
        client_creator,
        source_credentials,
        role_arn,
        extra_args=extra_args,
        cache=_NothingCached(),
    )
    return DeferredRefreshableCredentials(
        refresh_using=fetcher.fetch_credentials, method="assume-role", time_fetcher=clock
    )
