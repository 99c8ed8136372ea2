"""What an operator may do about a break, by its kind and the venue's drop copy, without I/O."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from brokerage.domain.errors import FailedPrecondition
from brokerage.domain.repairs import Break, Resolution, Step, resolution_step

ACCEPT, WRITE_OFF = Resolution.ACCEPT_VENUE, Resolution.WRITE_OFF


def a_break(kind: str, *, exec_id: str | None = "E1", booked: bool = False) -> Break:
    return Break(1, kind, exec_id, "o1", "detail", datetime(2026, 12, 4, tzinfo=UTC), booked)


@pytest.mark.parametrize(
    ("kind", "booked", "resolution", "in_drop_copy", "step"),
    [
        ("malformed", False, ACCEPT, True, Step.BOOK_DROP_COPY),
        ("refused", False, ACCEPT, True, Step.BOOK_DROP_COPY),
        ("malformed", False, WRITE_OFF, False, Step.NOTHING),
        ("overfill", True, ACCEPT, True, Step.KEEP),
        ("overfill", True, WRITE_OFF, False, Step.REVERSE),
        ("impossible_final", False, ACCEPT, True, Step.KEEP),
        ("unknown_order", True, WRITE_OFF, False, Step.REVERSE),
    ],
)
def test_each_kind_has_its_rule(
    kind: str, booked: bool, resolution: Resolution, in_drop_copy: bool, step: Step
) -> None:
    assert resolution_step(a_break(kind, booked=booked), resolution, in_drop_copy) is step


@pytest.mark.parametrize(
    ("brk", "resolution", "in_drop_copy", "why"),
    [
        (a_break("malformed"), ACCEPT, False, "write it off"),
        (a_break("overfill", booked=True), WRITE_OFF, True, "accept it"),
        (a_break("parked", exec_id=None), ACCEPT, False, "redrive the order"),
        (a_break("malformed", exec_id=None), WRITE_OFF, False, "give the drop copy's exec_id"),
    ],
)
def test_what_the_drop_copy_contradicts_is_refused(
    brk: Break, resolution: Resolution, in_drop_copy: bool, why: str
) -> None:
    with pytest.raises(FailedPrecondition, match=why):
        resolution_step(brk, resolution, in_drop_copy)
