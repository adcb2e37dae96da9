"""A CloudWatch endpoint that misbehaves, on a real HTTP server on loopback.

botocore's CloudWatch clients speak JSON (awsJson1_0) to it: every request is a POST whose
`X-Amz-Target` names the operation. Each answer is written to the socket as a test chooses: a
page that never ends (a new NextToken every time), a body trickled a byte at a time, truncated
JSON, an HTML page with HTTP 200, a page far larger than the MaxDatapoints asked. The server
records every request it got and how many bytes of each answer the client took.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

JSON_TYPE = "application/x-amz-json-1.0"


@dataclass(frozen=True)
class Answer:
    """What the server sends: status, content type, the declared length (None: the body's own),
    and the body in pieces written `pause` seconds apart."""

    body: bytes | Iterator[bytes]
    status: int = 200
    content_type: str = JSON_TYPE
    content_length: int | None = None
    pause: float = 0.0


@dataclass
class Request:
    params: dict[str, Any]
    region: str
    number: int  # from 1, in the order received
    bytes_sent: int = 0
    finished: bool = False  # the whole answer was written


def results(request: Request, points: int, start: float) -> list[dict[str, Any]]:
    """`points` datapoints 300 s apart from `start` (epoch seconds) for each query asked."""
    return [
        {
            "Id": query["Id"],
            "Label": query["Id"],
            "StatusCode": "Complete",
            "Timestamps": [start + 300 * n for n in range(points)],
            "Values": [float(n) for n in range(points)],
        }
        for query in request.params["MetricDataQueries"]
    ]


def complete(start: float) -> Callable[[Request], Answer]:
    """A valid, whole answer: 12 datapoints per query (values 0 to 11), no NextToken."""

    def answer(request: Request) -> Answer:
        return Answer(json.dumps({"MetricDataResults": results(request, 12, start)}).encode())

    return answer


def by_region(answers: dict[str, Callable[[Request], Answer]]) -> Callable[[Request], Answer]:
    return lambda request: answers[request.region](request)


def empty_object(request: Request) -> Answer:
    """Valid JSON, but no GetMetricData answer."""
    return Answer(b"{}")


def endless_pages(request: Request) -> Answer:
    """Every page empty, and a new NextToken each time."""
    page = {
        "MetricDataResults": [
            {"Id": q["Id"], "StatusCode": "PartialData", "Timestamps": [], "Values": []}
            for q in request.params["MetricDataQueries"]
        ],
        "NextToken": f"page-{request.number + 1}",
    }
    return Answer(json.dumps(page).encode())


def html_page(request: Request) -> Answer:
    """A proxy's or captive portal's page, with HTTP 200."""
    return Answer(b"<html><body><h1>Welcome</h1></body></html>", content_type="text/html")


def answer_cut_short(start: float) -> Callable[[Request], Answer]:
    """A valid page of 12 datapoints per query, cut in the middle (its length says so)."""

    def answer(request: Request) -> Answer:
        body = json.dumps({"MetricDataResults": results(request, 12, start)}).encode()
        return Answer(body[: len(body) // 2])

    return answer


def trickled(start: float, pause: float) -> Callable[[Request], Answer]:
    """A valid page of 12 datapoints per query, a byte every `pause` seconds."""

    def answer(request: Request) -> Answer:
        body = json.dumps({"MetricDataResults": results(request, 12, start)}).encode()
        return Answer(
            (body[i : i + 1] for i in range(len(body))), content_length=len(body), pause=pause
        )

    return answer


def oversized(start: float, points: int) -> Callable[[Request], Answer]:
    """One page of `points` datapoints per query, whatever MaxDatapoints asked, streamed."""

    def answer(request: Request) -> Answer:
        def pieces() -> Iterator[bytes]:
            yield b'{"MetricDataResults": ['
            for n, query in enumerate(request.params["MetricDataQueries"]):
                head = {"Id": query["Id"], "Label": query["Id"], "StatusCode": "Complete"}
                yield (b", " if n else b"") + json.dumps(head).encode()[:-1]
                yield b', "Timestamps": ['
                for i in range(0, points, 1000):
                    count = min(1000, points - i)
                    times = ", ".join(str(start + 300 * (i + k)) for k in range(count))
                    yield (b", " if i else b"") + times.encode()
                yield b'], "Values": ['
                for i in range(0, points, 1000):
                    count = min(1000, points - i)
                    yield (b", " if i else b"") + ", ".join(["1.5"] * count).encode()
                yield b"]}"
            yield b"]}"

        return Answer(pieces())

    return answer


@dataclass
class MisbehavingCloudWatch:
    """The server's state: how it answers GetMetricData, and what it was asked."""

    answer: Callable[[Request], Answer]
    requests: list[Request] = field(default_factory=list)
    url: str = ""
    _server: ThreadingHTTPServer | None = None

    def start(self) -> MisbehavingCloudWatch:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", 0))
                params = json.loads(self.rfile.read(length) or b"{}")
                target = self.headers.get("X-Amz-Target", "")
                if not target.endswith(".GetMetricData"):
                    self.send_error(400, f"not answered here: {target}")
                    return
                # Signature V4 names the region: Credential=<key>/<date>/<region>/monitoring/...
                region = self.headers.get("Authorization", "").split("/")[2]
                request = Request(params, region, len(owner.requests) + 1)
                owner.requests.append(request)
                owner.send(self, owner.answer(request), request)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        host, port = self._server.server_address[:2]
        self.url = f"http://{host}:{port}"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def send(self, handler: BaseHTTPRequestHandler, answer: Answer, request: Request) -> None:
        pieces = [answer.body] if isinstance(answer.body, bytes) else answer.body
        try:
            handler.send_response(answer.status)
            handler.send_header("Content-Type", answer.content_type)
            if isinstance(answer.body, bytes):
                length = len(answer.body) if answer.content_length is None else None
                handler.send_header("Content-Length", str(answer.content_length or length))
            elif answer.content_length is not None:
                handler.send_header("Content-Length", str(answer.content_length))
            else:
                handler.send_header("Connection", "close")
            handler.send_header("x-amzn-RequestId", f"request-{len(self.requests)}")
            handler.end_headers()
            handler.wfile.flush()
            for piece in pieces:
                if answer.pause:
                    time.sleep(answer.pause)
                handler.wfile.write(piece)
                handler.wfile.flush()
                request.bytes_sent += len(piece)
            request.finished = True
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up on the answer
        if not request.finished:
            handler.close_connection = True

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
