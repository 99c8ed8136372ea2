"""What an operator may do about a break, by the rule of its kind, against the venue's drop copy (DESIGN.md "The
books": a repair is transfers plus an audit row, never an edit of a balance). No I/O: the operations service reads
the break and the drop copy, asks this what to do, and does it."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from brokerage.domain.errors import FailedPrecondition

MALFORMED_KINDS = frozenset({"malformed", "refused"})  # nothing booked; a well-formed copy supersedes them
PARKED = "parked"  # an order given up on: redriven, never resolved by hand


class Resolution(StrEnum):
    ACCEPT_VENUE = "accepted_venue"  # the venue's drop copy is right: its execution stands, booked under its exec_id
    WRITE_OFF = "written_off"  # the drop copy has no such execution: what the report booked is reversed


@dataclass(frozen=True)
class Break:
    break_id: int
    kind: str
    exec_id: str | None
    order_id: str | None
    detail: str
    recorded_at: datetime
    booked_to_error_account: bool
    resolved_at: datetime | None = None
    resolution: str | None = None
    resolved_by: str | None = None
    resolution_note: str = ""

    @property
    def is_open(self) -> bool:
        return self.resolved_at is None


class Step(StrEnum):
    """What resolving a break takes, beyond its audit row."""

    BOOK_DROP_COPY = "book the drop copy's execution"  # a malformed or refused report: nothing of it was booked
    KEEP = "the venue's word stands: what the report booked stays"  # the error account keeps a real fill
    REVERSE = "reverse what was booked to the error account"
    NOTHING = "nothing was booked: written off"


def resolution_step(brk: Break, resolution: Resolution, in_drop_copy: bool) -> Step:
    """What resolving the open break this way takes, or FailedPrecondition saying why it cannot be resolved so."""
    subject = f"break/{brk.break_id}"
    if brk.kind == PARKED:
        raise FailedPrecondition(
            subject, "ORDER_BREAK", f"break {brk.break_id} parks order {brk.order_id}: redrive the order instead"
        )
    if brk.exec_id is None:
        raise FailedPrecondition(
            subject, "NO_EXEC_ID", f"break {brk.break_id} names no execution: give the drop copy's exec_id for it"
        )
    if resolution is Resolution.ACCEPT_VENUE:
        if not in_drop_copy:
            raise FailedPrecondition(
                subject, "NOT_IN_DROP_COPY", f"the venue's drop copy has no execution {brk.exec_id}: write it off"
            )
        return Step.BOOK_DROP_COPY if brk.kind in MALFORMED_KINDS else Step.KEEP
    if in_drop_copy:
        raise FailedPrecondition(
            subject, "IN_DROP_COPY", f"the venue made execution {brk.exec_id} (its drop copy has it): accept it"
        )
    return Step.REVERSE if brk.booked_to_error_account else Step.NOTHING
