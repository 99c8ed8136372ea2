"""Hypothesis strategies for any protobuf request, built from its descriptor: the bytes a hostile or careless caller
may send to a method, from well-formed messages with plausible values to undecodable garbage.

Strings mix the values the services know (customers, symbols, tokens they issued) with what no server should choke
on: empty, NUL and control characters, 65+ characters, non-ASCII, a trailing newline; integers cover their whole
range and its edges; enums include values no contract defines.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from typing import Any

from google.protobuf import descriptor, message_factory
from google.protobuf.descriptor import FieldDescriptor
from hypothesis import strategies as st

_INT_RANGES = {
    FieldDescriptor.TYPE_INT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_SINT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_SFIXED32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_INT64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_SINT64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_SFIXED64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_UINT32: (0, 2**32 - 1),
    FieldDescriptor.TYPE_FIXED32: (0, 2**32 - 1),
    FieldDescriptor.TYPE_UINT64: (0, 2**64 - 1),
    FieldDescriptor.TYPE_FIXED64: (0, 2**64 - 1),
}


def _token(kind: str, number: int) -> str:
    """A token in the shape the services issue, for a position no sequence reaches (2^63 and past included)."""
    return base64.urlsafe_b64encode(f"{kind}:{number}".encode()).decode()


HOSTILE_TEXT = [
    "",
    " ",
    "7\x00",
    "\x00",
    "7\n",
    "AAPL\n",
    "a" * 64,
    "a" * 65,
    "x" * 5000,
    "é",
    "🙂",
    "\u202e7",
    "7 8",
    "%s",
    "'; DROP TABLE orders; --",
    "1e400",
    "-1",
    "NaN",
    "Infinity",
    "0.0000000000001",
    "99999999999999999999999999999.99",
    "2026-13-45",
    "9999-12-31",
    _token("v1", 2**63),
    _token("v1", 2**64 + 5),
    _token("events-v1", 2**63),
    _token("events-v1", -1),
    _token("v1", 0),
    "djE6MTA=",  # v1:10
]


UNDECODABLE = [
    b"\xff",  # a tag with no end
    b"\x0a\x05ab",  # a length past the end
    b"\x08" + b"\xff" * 10 + b"\x01",  # a varint of 11 bytes
    b"\x12\x02\xc3\x28",  # a string that is no UTF-8
]


def text(known: Sequence[str]) -> st.SearchStrategy[str]:
    return st.one_of(
        st.sampled_from(known) if known else st.just(""),
        st.sampled_from(HOSTILE_TEXT),
        st.text(st.characters(max_codepoint=0x7F), max_size=70),
        st.text(max_size=80),
    )


def _integers(low: int, high: int) -> st.SearchStrategy[int]:
    edges = [v for v in (0, 1, -1, 2, 10, 100, 1000, 10**6, 10**9, low, high, low + 1, high - 1) if low <= v <= high]
    return st.one_of(st.sampled_from(edges), st.integers(low, high), st.integers(max(low, -5), min(high, 300)))


def _scalar(field: FieldDescriptor, known: Sequence[str]) -> st.SearchStrategy[Any]:
    kind = field.type
    if kind == FieldDescriptor.TYPE_STRING:
        return text(known)
    if kind == FieldDescriptor.TYPE_BYTES:
        return st.binary(max_size=300)
    if kind == FieldDescriptor.TYPE_BOOL:
        return st.booleans()
    if kind == FieldDescriptor.TYPE_ENUM:
        return st.one_of(st.sampled_from([v.number for v in field.enum_type.values]), _integers(-(2**31), 2**31 - 1))
    if kind in (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT):
        return st.floats(allow_nan=True, width=32 if kind == FieldDescriptor.TYPE_FLOAT else 64)
    low, high = _INT_RANGES[kind]
    return _integers(low, high)


def messages(message: descriptor.Descriptor, known: Sequence[str] = (), depth: int = 3) -> st.SearchStrategy[Any]:
    """Messages of the type: any subset of its fields set, each to a value of its type (nested ones to a depth)."""
    cls = message_factory.GetMessageClass(message)
    fields: dict[str, st.SearchStrategy[Any]] = {}
    for field in message.fields:
        if field.type == FieldDescriptor.TYPE_MESSAGE:
            if depth == 0:
                continue
            value: st.SearchStrategy[Any] = messages(field.message_type, known, depth - 1)
        else:
            value = _scalar(field, known)
        if field.is_repeated:
            value = st.lists(value, max_size=4)
        fields[field.name] = value

    def build(values: dict[str, Any]) -> Any:
        built = cls()
        for name, value in values.items():
            field = message.fields_by_name[name]
            if field.type == FieldDescriptor.TYPE_MESSAGE:
                target = getattr(built, name)
                if field.is_repeated:
                    for item in value:
                        target.add().CopyFrom(item)
                else:
                    target.CopyFrom(value)
            elif field.is_repeated:
                getattr(built, name).extend(value)
            else:
                setattr(built, name, value)
        return built

    return st.fixed_dictionaries({}, optional=fields).map(build)


def request_bytes(message: descriptor.Descriptor, known: Sequence[str] = ()) -> st.SearchStrategy[bytes]:
    """What goes on the wire for one request: mostly a well-formed message, sometimes bytes that are none."""
    return st.one_of(
        messages(message, known).map(lambda m: m.SerializeToString()),
        messages(message, known).map(lambda m: m.SerializeToString()),
        messages(message, known).map(lambda m: m.SerializeToString()),
        st.binary(max_size=200),
        st.sampled_from(UNDECODABLE),
    )
