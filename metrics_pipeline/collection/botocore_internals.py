"""The two things the collection asks of botocore that botocore has no public API for, kept in
this one module, and the check that they still hold.

- The fast parse of GetMetricData: a response parser that takes a list of numbers or
  timestamps as the JSON decoder produced it, instead of visiting each element (for Values and
  Timestamps that walk was a third of the pipeline's CPU: 4.3 s per 2 million datapoints), and
  that refuses a body that is not JSON rather than read it as "no data". botocore lets a session
  register its own parser factory (public), but a parser can only be changed by overriding its
  `_handle_list`, `_handle_json_body` and `_parse_shape`.
- A whole answer read under a deadline and a byte limit (bounds.py): botocore reads each
  answer through its endpoint's HTTP session, which has no public setter, and its events come
  either before the request is sent (a `before-send` handler that answered would bypass moto and
  any other stubber) or after the body has been read in full.

botocore is pinned to the minor version these were written against (pyproject.toml), and
`check_botocore_internals` fails with a line naming what changed when a client is made on
another; test_botocore_internals.py runs it on every version the suite is run with.
"""

from __future__ import annotations

import json
from typing import Any

import botocore
from botocore.parsers import (
    PROTOCOL_PARSERS,
    BaseCBORParser,
    BaseJSONParser,
    ResponseParserFactory,
)

from metrics_pipeline.collection.bounds import BoundedHttpSession, MalformedAnswer

# The botocore minor version the overrides below were written and measured against; the pin
# in pyproject.toml allows this one only.
TESTED_BOTOCORE = "1.44"


class BotocoreChanged(RuntimeError):
    """botocore no longer has an internal the collection relies on."""


def _require(owner: Any, name: str, used_for: str) -> None:
    if not hasattr(owner, name):
        raise BotocoreChanged(
            f"botocore {botocore.__version__} has no {getattr(owner, '__name__', owner)}.{name} "
            f"any more, which {used_for} relies on (written against botocore {TESTED_BOTOCORE}): "
            "adapt metrics_pipeline/collection/botocore_internals.py to it or keep botocore at "
            f"{TESTED_BOTOCORE}"
        )


def check_botocore_internals(client: Any = None) -> None:
    """Raises BotocoreChanged naming the internal that is gone: the parser's methods, and the
    HTTP session of `client`'s endpoint when a client is given."""
    for parser in (BaseJSONParser, BaseCBORParser):
        for method in ("_handle_list", "_parse_shape"):
            _require(parser, method, "the fast GetMetricData parse")
    _require(PROTOCOL_PARSERS["json"], "_handle_json_body", "refusing a body that is not JSON")
    if client is not None:
        _require(client, "_endpoint", "reading an answer within its deadline and size")
        _require(client._endpoint, "http_session", "reading an answer within its deadline and size")


class _ScalarListsAsDecoded:
    """A JSON or CBOR response parser that returns a list of numbers or timestamps as the
    decoder produced it; the values are the same, and page_to_table converts them in bulk."""

    def _handle_list(self, shape: Any, node: Any) -> Any:
        if isinstance(node, list) and shape.member.type_name in ("double", "timestamp"):
            return node
        return super()._handle_list(shape, node)  # type: ignore[misc]

    def _handle_json_body(self, raw_body: bytes, shape: Any) -> Any:
        """botocore reads a body that is not JSON as an answer with nothing in it; for a
        successful call that is an error, never "CloudWatch had no data"."""
        try:
            parsed = json.loads(raw_body) if raw_body else {}
        except ValueError as error:
            raise MalformedAnswer(
                f"an answer that is not JSON ({error}; {len(raw_body):,} bytes beginning "
                f"{raw_body[:40]!r}); not stored"
            ) from None
        if not isinstance(parsed, dict):
            raise MalformedAnswer(f"an answer that is not a JSON object ({raw_body[:40]!r})")
        return self._parse_shape(shape, parsed)  # type: ignore[attr-defined]


class RawListsParserFactory(ResponseParserFactory):
    """botocore's parser factory (a session's `response_parser_factory` component) whose JSON
    and CBOR parsers take scalar lists as decoded."""

    def __init__(self) -> None:
        super().__init__()
        self.parser_defaults: dict[str, Any] = {}

    def set_parser_defaults(self, **kwargs: Any) -> None:
        super().set_parser_defaults(**kwargs)
        self.parser_defaults.update(kwargs)

    def create_parser(self, protocol_name: str) -> Any:
        # botocore-stubs types the table's values as parsers; they are parser classes.
        parser_class: type[Any] = PROTOCOL_PARSERS[protocol_name]  # type: ignore[assignment]
        if issubclass(parser_class, BaseJSONParser | BaseCBORParser):
            parser_class = type(
                f"RawLists{parser_class.__name__}", (_ScalarListsAsDecoded, parser_class), {}
            )
        return parser_class(**self.parser_defaults)


def bound_answers(client: Any) -> None:
    """Every answer `client` receives is read within the thread's deadline and the request's
    byte limit (bounds.py)."""
    check_botocore_internals(client)
    endpoint = client._endpoint
    endpoint.http_session = BoundedHttpSession(endpoint.http_session)
