"""What CloudWatch keeps, and at which resolution, as botocore's documentation of
`MetricStat.Period` and `GetMetricData.StartTime` states it.

CloudWatch keeps 1-minute data for 15 days, 5-minute data for 63 days and 1-hour data for
455 days. A request whose StartTime is older than 3 hours must ask for a period that is a
multiple of the resolution kept at that age, or it gets no datapoints; its StartTime is rounded
down to that resolution; nothing older than 455 days is returned. The local AWS answers by these
rules, so that what the pipeline asks of history is asked as AWS would answer it.
"""

from datetime import UTC, datetime, timedelta

MINUTE = 60
FIVE_MINUTES = 300
HOUR = 3600
# (data younger than this, is kept at this resolution in seconds), finest first.
RESOLUTIONS = (
    (timedelta(days=15), MINUTE),
    (timedelta(days=63), FIVE_MINUTES),
    (timedelta(days=455), HOUR),
)
KEPT_FOR = RESOLUTIONS[-1][0]
# Up to this age any period that is a multiple of a minute may be asked (standard resolution).
RECENT = timedelta(hours=3)


def resolution_at(age: timedelta) -> int:
    """The resolution, in seconds, kept for data of this age; beyond 455 days the coarsest (a
    request may start there, and gets what is younger)."""
    for younger_than, seconds in RESOLUTIONS:
        if age < younger_than:
            return seconds
    return RESOLUTIONS[-1][1]


def answerable_start(start: datetime, period: int, now: datetime) -> datetime | None:
    """StartTime as CloudWatch uses it for a query of `period` seconds asked at `now`: rounded
    down to the resolution kept at its age; None when the period is not a multiple of that
    resolution (the query gets no datapoints)."""
    age = now - start
    resolution = MINUTE if age <= RECENT else resolution_at(age)
    if period % resolution:
        return None
    epoch = int(start.timestamp())
    return datetime.fromtimestamp(epoch - epoch % resolution, UTC)


def oldest_kept(now: datetime) -> datetime:
    """No period that starts before this is returned any more."""
    return now - KEPT_FOR
