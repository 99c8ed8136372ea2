"""Execution reports: what the exchange says happened to an order, at least once per execution, and what
settlement made of each. The venue produces them; CallbackService books them (DESIGN.md rule 7)."""

from __future__ import annotations

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
