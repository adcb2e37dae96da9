"""Performance Insights as botocore's model describes it: the two protocols PI is spoken in,
a request read against its operation's input shape, and an answer or an error written back.

The model lists smithy-rpc-v2-cbor (a POST to /service/<targetPrefix>/operation/<name>, CBOR
both ways) and JSON 1.1 (a POST to / with X-Amz-Target <targetPrefix>.<name>): botocore 1.44
picks JSON (the first of the model's protocols in its own order of preference), a client that
prefers CBOR speaks that. Errors are HTTP 400 with `__type` and `message` in either.

botocore has no public CBOR codec: a request is decoded with BaseCBORParser.parse_data_item,
an answer encoded with CBORSerializer._serialize_data_item against the operation's output
shape, both as botocore 1.44 has them.
"""

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, NoReturn

import botocore.session
from botocore.model import ShapeResolver
from botocore.parsers import ResponseParserError, RpcV2CBORParser
from botocore.serialize import RpcV2CBORSerializer

MODEL = botocore.session.get_session().get_service_model("pi")
TARGET_PREFIX: str = MODEL.metadata["targetPrefix"]
CBOR_PATH = f"/service/{TARGET_PREFIX}/operation/"


class PiError(Exception):
    """An error PI answers with HTTP 400; `code` is one of the model's errors."""

    code = ""


class InvalidArgument(PiError):
    code = "InvalidArgumentException"


class NotAuthorized(PiError):
    code = "NotAuthorizedException"


def member_shape(operation: str, *path: str) -> Any:
    """The shape of a request's member, by its path (a list's items are passed through)."""
    shape: Any = MODEL.operation_model(operation).input_shape
    for name in path:
        shape = shape.member if shape.type_name == "list" else shape
        shape = shape.members[name]
    return shape


def documented_periods() -> tuple[int, ...]:
    """The periods PeriodInSeconds may take: the model lists them in its documentation only."""
    text = member_shape("GetResourceMetrics", "PeriodInSeconds").documentation
    return tuple(int(value) for value in re.findall(r"<code>(\d+)</code>", text))


def documented_element_bytes() -> int:
    """The most PI returns of one element (a statement), as its operations' documentation says."""
    match = re.search(
        r"maximum of (\d+) bytes", MODEL.operation_model("GetResourceMetrics").documentation
    )
    if match is None:
        raise LookupError("botocore's PI model no longer says how much of an element PI returns")
    return int(match.group(1))


def _utc(seconds: Any) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


_CBOR_PARSER = RpcV2CBORParser(timestamp_parser=_utc)
_CBOR_SERIALIZER = RpcV2CBORSerializer()
# The error body's shape, as the model's JSON writes shapes (botocore-stubs types them Shapes).
_ERROR_SHAPES: Any = {
    "Error": {
        "type": "structure",
        "members": {"__type": {"shape": "String"}, "message": {"shape": "String"}},
    },
    "String": {"type": "string"},
}
ERROR_SHAPE = ShapeResolver(_ERROR_SHAPES).get_shape_by_name("Error")


def _cbor_decode(body: bytes) -> Any:
    try:
        return _CBOR_PARSER.parse_data_item(_CBOR_PARSER.get_peekable_stream_from_bytes(body))
    except (ResponseParserError, ValueError) as error:
        raise InvalidArgument(f"The request body is not CBOR: {error}") from None


def _cbor_encode(value: Mapping[str, Any], shape: Any) -> bytes:
    body = bytearray()
    _CBOR_SERIALIZER._serialize_data_item(body, value, shape)  # type: ignore[attr-defined]
    return bytes(body)


def _json_decode(body: bytes) -> Any:
    try:
        return json.loads(body)
    except ValueError as error:
        raise InvalidArgument(f"The request body is not JSON: {error}") from None


def _json_encode(value: Mapping[str, Any], shape: Any) -> bytes:
    """JSON 1.1 writes timestamps as epoch seconds; the shape adds nothing else."""
    return json.dumps(value, default=lambda time: time.timestamp()).encode()


@dataclass(frozen=True)
class Protocol:
    headers: tuple[tuple[str, str], ...]
    decode: Callable[[bytes], Any]
    encode: Callable[[Mapping[str, Any], Any], bytes]


CBOR = Protocol(
    (("Content-Type", "application/cbor"), ("smithy-protocol", "rpc-v2-cbor")),
    _cbor_decode,
    _cbor_encode,
)
JSON = Protocol((("Content-Type", "application/x-amz-json-1.1"),), _json_decode, _json_encode)


def requested_operation(environ: Mapping[str, Any]) -> tuple[str, Protocol] | None:
    """The PI operation a request calls and the protocol it speaks; None if not PI's."""
    if environ.get("REQUEST_METHOD") != "POST":
        return None
    path = environ.get("PATH_INFO", "")
    if path.startswith(CBOR_PATH):
        return path.removeprefix(CBOR_PATH), CBOR
    target = environ.get("HTTP_X_AMZ_TARGET", "")
    if target.startswith(f"{TARGET_PREFIX}."):
        return target.removeprefix(f"{TARGET_PREFIX}."), JSON
    return None


_PYTHON_TYPES: dict[str, type[Any]] = {
    "structure": dict,
    "map": dict,
    "list": list,
    "string": str,
    "integer": int,
    "long": int,
    "timestamp": datetime,
}


def read(shape: Any, value: Any, path: str = "") -> Any:
    """`value` as `shape` models it (timestamps sent as epoch seconds made datetimes; members
    the shape lacks left out, as AWS ignores them); InvalidArgument naming the parameter where
    it breaks the model's type, required members, enum, pattern, min or max."""
    meta, kind = shape.metadata, shape.type_name

    def refuse(constraint: str) -> NoReturn:
        raise InvalidArgument(
            f"Value {value!r} at '{path or shape.name}' failed to satisfy constraint: {constraint}"
        )

    if kind == "timestamp" and isinstance(value, int | float) and not isinstance(value, bool):
        value = _utc(value)
    expected = _PYTHON_TYPES.get(kind, object)
    if not isinstance(value, expected) or (expected is int and isinstance(value, bool)):
        refuse(f"Member must be of type {kind}")
    if kind in ("string", "list", "map", "integer", "long"):
        size, measure = (value, "value") if expected is int else (len(value), "length")
        if "min" in meta and size < meta["min"]:
            refuse(f"Member must have {measure} greater than or equal to {meta['min']}")
        if "max" in meta and size > meta["max"]:
            refuse(f"Member must have {measure} less than or equal to {meta['max']}")
    if kind == "string" and "enum" in meta and value not in meta["enum"]:
        refuse(f"Member must satisfy enum value set: [{', '.join(meta['enum'])}]")
    if kind == "string" and "pattern" in meta and not re.search(meta["pattern"], value):
        refuse(f"Member must satisfy regular expression pattern: {meta['pattern']}")
    if kind == "structure":
        missing = [name for name in shape.required_members if name not in value]
        if missing:
            raise InvalidArgument(f"Missing required parameter '{_join(path, missing[0])}'")
        return {
            name: read(shape.members[name], item, _join(path, name))
            for name, item in value.items()
            if name in shape.members
        }
    if kind == "list":
        return [read(shape.member, item, f"{path}.{n}") for n, item in enumerate(value, 1)]
    if kind == "map":
        return {
            read(shape.key, name, path): read(shape.value, item, f"{path}.{name}")
            for name, item in value.items()
        }
    return value


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name
