"""What the rightsizing report concludes of an instance: kept apart from the report's asset so
that readers without Dagster (the class table, the dashboard) compare with the same values."""

from enum import StrEnum


class Verdict(StrEnum):
    OVER = "over-provisioned"
    UNDER = "under-provisioned"
    OK = "ok"
    INSUFFICIENT_DATA = "insufficient data"
