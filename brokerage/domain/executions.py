"""Execution reports: what the exchange says happened to an order, at least once per execution, and what
settlement made of each. The venue produces them; CallbackService books them (DESIGN.md rule 7)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from enum import StrEnum

from brokerage.domain.orders import Side


class ExecType(StrEnum):
    NEW = "NEW"  # the exchange accepted the order
    PARTIAL_FILL = "PARTIAL_FILL"
    FILL = "FILL"  # the order is filled in full
    CANCELED = "CANCELED"  # the unfilled rest is canceled
    REJECTED = "REJECTED"

    @property
    def is_fill(self) -> bool:
        return self in (ExecType.PARTIAL_FILL, ExecType.FILL)


@dataclass(frozen=True)
class ExecutionReport:
    exec_id: str  # unique per execution
    order_id: str  # ours: the exchange's client order id
    venue_order_id: str
    exec_type: ExecType
    last_quantity: int
    last_price: Decimal | None  # only fills have a price
    cumulative_quantity: int
    reason: str  # for rejects and cancels
    transact_time: datetime
    symbol: str
    side: Side
    order_quantity: int


@dataclass(frozen=True)
class MalformedReport:
    """A report that cannot be booked as it came: it could not be parsed, a field is out of form ('malformed'), or
    the database refused it ('refused'). It is kept whole, as its bytes, as a break that claims nothing: a later
    well-formed copy of it is booked and supersedes the break."""

    raw: bytes
    detail: str
    exec_id: str | None  # as read from it, when it is a well-formed id
    order_id: str | None
    kind: str = "malformed"

    @property
    def break_key(self) -> str:
        """One break per exec_id, else per distinct bytes."""
        return f"malformed:{self.exec_id or 'sha256:' + hashlib.sha256(self.raw).hexdigest()}"


@dataclass(frozen=True)
class Received:
    """A report as it arrived: its bytes, and what they parse to."""

    raw: bytes
    parsed: ExecutionReport | MalformedReport

    @property
    def exec_id(self) -> str:
        return self.parsed.exec_id or ""


@dataclass(frozen=True)
class DropCopyEntry:
    """One report of the exchange's day, as its drop copy lists it: for reconciliation and checking FIFO."""

    report: ExecutionReport
    customer_id: str
    arrival_sequence: int  # the order's place in the exchange's arrival order


class SettlementOutcome(StrEnum):
    APPLIED = "applied"  # booked: money and status follow it
    DUPLICATE = "duplicate"  # this exec_id was booked before; nothing changed
    BREAK = "break"  # impossible (an unknown order, an overfill, ...): kept for an operator, no balance moved


@dataclass(frozen=True)
class Settled:
    outcome: SettlementOutcome
    customer_id: str | None  # None for a report about no order of ours
    events_through: int | None  # the customer's last event sequence, when a client can see a change


@dataclass(frozen=True)
class Tombstone:
    """The venue was asked to cancel an order it had not received: it refuses that order, should it come, all day."""

    order_id: str
    recorded_at: datetime


@dataclass(frozen=True)
class DropCopy:
    """The exchange's record of a trading day: every report, and every tombstone."""

    executions: list[DropCopyEntry]
    tombstones: list[Tombstone]
