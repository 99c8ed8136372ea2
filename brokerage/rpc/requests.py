"""What every request is before any servicer sees it: within the server's size, a message of its type, its text
without control characters and its times real.

Bytes that are no message, a string carrying NUL, a newline or another control character (which PostgreSQL's text
refuses, logs mangle and no id, symbol or reason needs), or a Timestamp outside years 1 to 9999 (which no datetime
holds) are malformed input: INVALID_ARGUMENT naming the field, decided here once for every service instead of
surfacing as UNKNOWN or INTERNAL from wherever they first hurt. A request past the size is RESOURCE_EXHAUSTED,
counted with the other limits (gRPC's own bound, further out, only stops what would not fit in memory).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from google.protobuf import timestamp_pb2
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import DecodeError, Message

from brokerage.domain.errors import DomainError, FieldViolation, InvalidRequest, LimitReached

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_TIMESTAMP = timestamp_pb2.Timestamp.DESCRIPTOR.full_name
_SECONDS = (-62_135_596_800, 253_402_300_799)  # 0001-01-01 to 9999-12-31, as the Timestamp contract says


@dataclass(frozen=True)
class Malformed:
    """Stands for a request that failed its checks; the call boundary answers it with its error."""

    error: DomainError


def checked(deserialize: Callable[[bytes], Any] | None, max_bytes: int) -> Callable[[bytes], Any] | None:
    """The method's deserializer, returning Malformed instead of raising (which gRPC would answer with UNKNOWN) or
    passing on a field it may not hold."""
    if deserialize is None:
        return None
    too_large = Malformed(LimitReached("max_receive_bytes", f"a request may be at most {max_bytes:,} bytes"))

    def parse(data: bytes) -> Any:
        if len(data) > max_bytes:
            return too_large
        try:
            request = deserialize(data)
        except (DecodeError, ValueError, UnicodeDecodeError) as error:
            return Malformed(InvalidRequest([FieldViolation("", f"not a valid request message: {error}")]))
        if violations := field_violations(request):
            return Malformed(InvalidRequest(violations))
        return request

    return parse


def field_violations(message: Message, prefix: str = "") -> list[FieldViolation]:
    """Each string field, nested and repeated ones included, that carries a control character, and each Timestamp
    that is no time (the contracts have no map fields)."""
    if message.DESCRIPTOR.full_name == _TIMESTAMP:
        return _timestamp_violations(message, prefix.removesuffix("."))
    violations: list[FieldViolation] = []
    for field, value in message.ListFields():
        path = f"{prefix}{field.name}"
        if field.type == FieldDescriptor.TYPE_STRING:
            values = value if field.is_repeated else [value]
            for index, text in enumerate(values):
                if _CONTROL.search(text):
                    where = f"{path}[{index}]" if field.is_repeated else path
                    violations.append(FieldViolation(where, "must not contain control characters"))
        elif field.type == FieldDescriptor.TYPE_MESSAGE:
            children = value if field.is_repeated else [value]
            for index, child in enumerate(children):
                where = f"{path}[{index}]." if field.is_repeated else f"{path}."
                violations += field_violations(child, where)
    return violations


def _timestamp_violations(stamp: Any, path: str) -> list[FieldViolation]:
    low, high = _SECONDS
    if low <= stamp.seconds <= high and 0 <= stamp.nanos <= 999_999_999:
        return []
    return [FieldViolation(path, "must be a time between years 1 and 9999")]
