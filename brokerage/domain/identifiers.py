"""What an id may be: 1 to 64 visible ASCII characters, no spaces. Ids end up in logs, subjects and transfer keys;
anything else in one is malformed input."""

from __future__ import annotations

import re

from brokerage.domain.errors import FieldViolation, InvalidRequest

MAX_ID_LENGTH = 64
_VISIBLE_ASCII = re.compile(r"[\x21-\x7e]+")


def is_id(value: str) -> bool:
    return len(value) <= MAX_ID_LENGTH and _VISIBLE_ASCII.fullmatch(value) is not None


def id_violations(field: str, value: str) -> list[FieldViolation]:
    """Why the value is no id, as the field violations to report; none when it is one."""
    if not value:
        return [FieldViolation(field, "must not be empty")]
    if len(value) > MAX_ID_LENGTH:
        return [FieldViolation(field, f"must be at most {MAX_ID_LENGTH} characters")]
    if not is_id(value):
        return [FieldViolation(field, "must be visible ASCII characters without spaces")]
    return []


def required_id(field: str, value: str) -> str:
    """The value, when it is an id; InvalidRequest naming the field when it is not."""
    if violations := id_violations(field, value):
        raise InvalidRequest(violations)
    return value
