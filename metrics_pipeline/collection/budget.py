"""CloudWatch's datapoint quota, kept on the client side per account and region.

GetMetricData serves 180,000 datapoints per second per account and region when the window
starts within the last three hours, and 396,000 for older data; above it CloudWatch throttles.
Each fetching thread pays for a page after receiving it; the next page of the same account and
region waits until the debt is paid, with one second of credit for bursts.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import datetime, timedelta

RECENT_DATAPOINTS_PER_SECOND = 180_000
OLDER_DATAPOINTS_PER_SECOND = 396_000
RECENT = timedelta(hours=3)
BURST_SECONDS = 1.0


def datapoints_per_second(start: datetime, now: datetime) -> int:
    """CloudWatch's quota for a request whose StartTime is `start`."""
    return RECENT_DATAPOINTS_PER_SECOND if start >= now - RECENT else OLDER_DATAPOINTS_PER_SECOND


class DatapointBudget:
    """A thread-safe pace of datapoints per second."""

    def __init__(
        self,
        rate: float,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.rate = rate
        self._clock = clock
        self._sleep = sleep
        self._paid_until = clock() - BURST_SECONDS
        self._lock = threading.Lock()

    def delay_for(self, datapoints: int) -> float:
        """Records `datapoints` as spent and returns how long to wait before the next request."""
        with self._lock:
            now = self._clock()
            self._paid_until = max(self._paid_until, now - BURST_SECONDS) + datapoints / self.rate
            delay = max(0.0, self._paid_until - now)
            return delay

    def spend(self, datapoints: int) -> None:
        delay = self.delay_for(datapoints)
        if delay > 0:
            self._sleep(delay)
