"""The DB instance classes the project knows the size of, and the class a finding suggests.

Source: AWS's "Hardware specifications for DB instance classes" (Amazon RDS User Guide,
https://docs.aws.amazon.com/AmazonRDS/latest/UserGuide/Concepts.DBInstanceClass.Summary.html),
read for the families below. Within a family each size doubles the vCPUs of the one before
(12xlarge and 24xlarge are the steps between), and the memory per vCPU is the family's: 4 GiB
for the general-purpose m classes, 8 GiB for the memory-optimized r classes; the burstable t
classes start smaller. A class not listed here has no suggestion; db.serverless has no fixed
size (its capacity range is what changes).
"""

from __future__ import annotations

from dataclasses import dataclass

from metrics_pipeline.rightsizing.verdicts import Verdict

# Each size's vCPUs in the m and r families.
_SIZES = {
    "large": 2, "xlarge": 4, "2xlarge": 8, "4xlarge": 16, "8xlarge": 32,
    "12xlarge": 48, "16xlarge": 64, "24xlarge": 96, "32xlarge": 128,
}  # fmt: skip
# The sizes each family offers, and its GiB per vCPU.
_FAMILIES = {
    "db.m5": (("large", "xlarge", "2xlarge", "4xlarge", "8xlarge", "12xlarge", "16xlarge",
               "24xlarge"), 4),
    "db.m6g": (("large", "xlarge", "2xlarge", "4xlarge", "8xlarge", "12xlarge", "16xlarge"), 4),
    "db.m6i": (tuple(_SIZES), 4),
    "db.m7g": (("large", "xlarge", "2xlarge", "4xlarge", "8xlarge", "12xlarge", "16xlarge"), 4),
    "db.r5": (("large", "xlarge", "2xlarge", "4xlarge", "8xlarge", "12xlarge", "16xlarge",
               "24xlarge"), 8),
    "db.r6g": (("large", "xlarge", "2xlarge", "4xlarge", "8xlarge", "12xlarge", "16xlarge"), 8),
    "db.r6i": (tuple(_SIZES), 8),
    "db.r7g": (("large", "xlarge", "2xlarge", "4xlarge", "8xlarge", "12xlarge", "16xlarge"), 8),
}  # fmt: skip
# The burstable classes: vCPUs and GiB of each size.
_BURSTABLE = {
    "micro": (2, 1), "small": (2, 2), "medium": (2, 4), "large": (2, 8), "xlarge": (4, 16),
    "2xlarge": (8, 32),
}  # fmt: skip


@dataclass(frozen=True)
class InstanceClass:
    name: str
    vcpus: int
    memory_gib: float


def _known_classes() -> dict[str, InstanceClass]:
    known = {}
    for family, (sizes, gib_per_vcpu) in _FAMILIES.items():
        for size in sizes:
            vcpus = _SIZES[size]
            known[f"{family}.{size}"] = InstanceClass(
                f"{family}.{size}", vcpus, vcpus * gib_per_vcpu
            )
    for family in ("db.t3", "db.t4g"):
        for size, (vcpus, gib) in _BURSTABLE.items():
            known[f"{family}.{size}"] = InstanceClass(f"{family}.{size}", vcpus, gib)
    return known


# In each family's order, smallest first.
CLASSES = _known_classes()


def instance_class(name: str | None) -> InstanceClass | None:
    return CLASSES.get(name) if name else None


def suggested_class(name: str | None, verdict: str) -> InstanceClass | None:
    """The next size down for an over-provisioned instance, up for an under-provisioned one,
    in its own family; None when the class is unknown, the family has no such size, or the
    verdict asks for no change of class."""
    current = instance_class(name)
    if current is None or verdict not in (Verdict.OVER, Verdict.UNDER):
        return None
    family = current.name.rsplit(".", 1)[0]
    sizes = [c for c in CLASSES.values() if c.name.rsplit(".", 1)[0] == family]
    at = sizes.index(current) + (-1 if verdict == Verdict.OVER else 1)
    return sizes[at] if 0 <= at < len(sizes) else None
