"""How long and how large a CloudWatch answer may be, and what is refused.

botocore bounds each connection attempt and each read from the socket (Config's
connect_timeout and read_timeout), not a whole answer: a body trickled a byte every few
seconds never trips a read timeout, an endpoint can answer every page with a new NextToken,
and one page can hold far more than the MaxDatapoints asked. So a fetch runs under a deadline
(the chunk's, capped by the run's), its answers are read a socket read at a time with the
deadline checked in between and their size capped by what was asked, and an answer that is
not a GetMetricData answer is refused rather than read as "no data". A refused answer fails
its chunk: nothing of it is written, so the fetch log does not mark its hours settled and the
gap sensor asks for them again.
"""

from __future__ import annotations

import io
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from botocore.awsrequest import AWSResponse
from botocore.exceptions import ConnectionClosedError, HTTPClientError, ReadTimeoutError
from urllib3 import HTTPResponse
from urllib3.exceptions import HTTPError, ProtocolError
from urllib3.exceptions import ReadTimeoutError as URLLib3ReadTimeoutError

# A GetMetricData answer in JSON: a datapoint is a timestamp and a value (some 30 bytes at
# most: "1764115200.0, 12.345678901234567, "), a result its Id, Label and StatusCode.
BYTES_PER_DATAPOINT = 64
BYTES_PER_QUERY = 4096
BYTES_PER_ANSWER = 65_536
# Where the byte limit of an answer goes in botocore's request context.
MAX_ANSWER_BYTES = "metrics_pipeline_max_answer_bytes"
READ_SIZE = 65_536


class AnswerRefused(Exception):
    """An answer that is not stored. `retryable`: the step's retry may get past it; otherwise
    the hours stay gaps for the gap sensor's next look."""

    retryable = True


class MalformedAnswer(AnswerRefused):
    """HTTP 200 with a body that is not a GetMetricData answer (truncated, HTML, empty)."""


class OversizedAnswer(AnswerRefused):
    """More than the request asked for."""


class EndlessAnswer(AnswerRefused):
    """More pages than the datapoints asked can fill."""

    retryable = False


class DeadlineExceeded(AnswerRefused):
    """No complete answer within the chunk's or the run's time."""

    retryable = False


@dataclass(frozen=True)
class Deadline:
    """A point on the monotonic clock, and the setting that put it there (for the error)."""

    at: float
    setting: str
    clock: Callable[[], float] = time.monotonic

    @classmethod
    def after(
        cls, seconds: float, setting: str, clock: Callable[[], float] = time.monotonic
    ) -> Deadline:
        return cls(clock() + seconds, f"{setting}={seconds:g}", clock)

    def remaining(self) -> float:
        return self.at - self.clock()

    def check(self, doing: str) -> None:
        if self.remaining() <= 0:
            raise DeadlineExceeded(f"no complete answer within {self.setting} s ({doing})")


_scope = threading.local()


@contextmanager
def bounded_by(deadline: Deadline) -> Iterator[None]:
    """Every request this thread sends inside the block is bounded by `deadline`."""
    previous = getattr(_scope, "deadline", None)
    _scope.deadline = deadline
    try:
        yield
    finally:
        _scope.deadline = previous


def current_deadline() -> Deadline | None:
    return getattr(_scope, "deadline", None)


def max_answer_bytes(queries: int, max_datapoints: int) -> int:
    """The largest GetMetricData answer that holds `max_datapoints` for `queries` queries."""
    return BYTES_PER_ANSWER + queries * BYTES_PER_QUERY + max_datapoints * BYTES_PER_DATAPOINT


def max_pages(query_count: int, datapoints_per_query: int, max_datapoints: int) -> int:
    """How many pages one request may take: twice the pages its datapoints fill, and a few
    more, as CloudWatch may send pages that are not full."""
    full_pages = -(-query_count * datapoints_per_query // max_datapoints)
    return 2 * full_pages + 3


def limit_get_metric_data(params: dict[str, Any], context: dict[str, Any], **_: Any) -> None:
    """botocore's before-parameter-build handler: the answer's byte limit, from what the
    call asks."""
    max_datapoints = params.get("MaxDatapoints")
    if max_datapoints:
        context[MAX_ANSWER_BYTES] = max_answer_bytes(
            len(params.get("MetricDataQueries", [])), max_datapoints
        )


class BoundedHttpSession:
    """botocore's HTTP session with every answer read under the thread's deadline and within
    its byte limit: the body is read one socket read at a time (each bounded by the read
    timeout), so that neither a trickle nor an endless body holds a fetch for ever."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner

    def send(self, request: Any) -> AWSResponse:
        deadline = current_deadline()
        limit = getattr(request, "context", {}).get(MAX_ANSWER_BYTES)
        if (deadline is None and limit is None) or request.stream_output:
            return self._inner.send(request)
        if deadline is not None:
            deadline.check("before sending a request")
        request.stream_output = True
        response = self._inner.send(request)
        body = read_bounded(response.raw, request.url, deadline, limit)
        return AWSResponse(
            response.url,
            response.status_code,
            response.headers,
            HTTPResponse(body=io.BytesIO(body), headers=response.headers, preload_content=False),
        )

    def close(self) -> None:
        self._inner.close()


def read_bounded(raw: Any, url: str, deadline: Deadline | None, limit: int | None) -> bytes:
    """The whole body of `raw` (a urllib3 response), or an error: the deadline passed, or the
    body grew past `limit` bytes. The connection of a body not read to its end is closed."""
    pieces: list[bytes] = []
    size = 0
    complete = False
    try:
        while True:
            try:
                piece = raw.read1(READ_SIZE)
            except URLLib3ReadTimeoutError as error:
                raise ReadTimeoutError(endpoint_url=url, error=error) from None
            except ProtocolError as error:
                raise ConnectionClosedError(endpoint_url=url, error=error) from None
            except (HTTPError, OSError) as error:  # as botocore's own session does
                raise HTTPClientError(error=error) from None
            if not piece:
                complete = True
                return b"".join(pieces)
            size += len(piece)
            if limit is not None and size > limit:
                raise OversizedAnswer(
                    f"an answer of more than {limit:,} bytes, more than the MaxDatapoints "
                    "asked can fill; refused"
                )
            pieces.append(piece)
            if deadline is not None:
                deadline.check(f"{size:,} bytes of an answer received")
    finally:
        if complete:
            raw.release_conn()
        else:
            raw.close()
