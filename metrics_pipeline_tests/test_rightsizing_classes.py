"""The class table against AWS's hardware specifications, and the class a finding suggests."""

from __future__ import annotations

import pytest

from metrics_pipeline.rightsizing.classes import instance_class, suggested_class

pytestmark = pytest.mark.storage_neutral


@pytest.mark.parametrize(
    ("name", "vcpus", "memory_gib"),
    [
        # As AWS's "Hardware specifications for DB instance classes" lists them.
        ("db.t3.micro", 2, 1),
        ("db.t4g.medium", 2, 4),
        ("db.t3.2xlarge", 8, 32),
        ("db.m5.large", 2, 8),
        ("db.m5.24xlarge", 96, 384),
        ("db.m6g.12xlarge", 48, 192),
        ("db.r6g.large", 2, 16),
        ("db.r6i.32xlarge", 128, 1024),
        ("db.r7g.16xlarge", 64, 512),
    ],
)
def test_a_class_has_the_vcpus_and_memory_aws_lists(name: str, vcpus: int, memory_gib: int) -> None:
    known = instance_class(name)
    assert known is not None
    assert (known.vcpus, known.memory_gib) == (vcpus, memory_gib)


@pytest.mark.parametrize(
    ("name", "verdict", "suggested"),
    [
        ("db.r6g.xlarge", "over-provisioned", "db.r6g.large"),
        ("db.r6g.xlarge", "under-provisioned", "db.r6g.2xlarge"),
        ("db.m5.8xlarge", "under-provisioned", "db.m5.12xlarge"),
        ("db.t3.small", "over-provisioned", "db.t3.micro"),
        # The ends of a family, a verdict that changes nothing, no fixed size, unknown.
        ("db.t3.micro", "over-provisioned", None),
        ("db.r6g.16xlarge", "under-provisioned", None),
        ("db.r6g.xlarge", "ok", None),
        ("db.r6g.xlarge", "insufficient data", None),
        ("db.serverless", "over-provisioned", None),
        ("db.x2g.large", "under-provisioned", None),
        (None, "under-provisioned", None),
    ],
)
def test_the_suggestion_is_the_next_size_of_the_same_family(
    name: str | None, verdict: str, suggested: str | None
) -> None:
    found = suggested_class(name, verdict)
    assert (found.name if found else None) == suggested
