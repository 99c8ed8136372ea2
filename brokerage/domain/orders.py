"""What an order is: its sides, its statuses and the one table of moves between them."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from enum import StrEnum

from brokerage.domain.risk import AccountStatus, RejectCode


class Side(StrEnum):
    BUY = "BUY"
    SELL = "SELL"


class OrderStatus(StrEnum):
    PLACED = "PLACED"
    SUBMITTED = "SUBMITTED"
    PARTIALLY_FILLED = "PARTIALLY_FILLED"
    FILLED = "FILLED"
    REJECTED = "REJECTED"
    CANCELED = "CANCELED"

    @property
    def is_terminal(self) -> bool:
        return self in TERMINAL_STATUSES


TERMINAL_STATUSES = frozenset({OrderStatus.FILLED, OrderStatus.REJECTED, OrderStatus.CANCELED})

# The status only moves forward; reports may skip steps (a fill can arrive before SUBMITTED is recorded).
ALLOWED_TRANSITIONS: dict[OrderStatus, frozenset[OrderStatus]] = {
    OrderStatus.PLACED: frozenset(
        {
            OrderStatus.SUBMITTED,
            OrderStatus.PARTIALLY_FILLED,
            OrderStatus.FILLED,
            OrderStatus.REJECTED,
            OrderStatus.CANCELED,
        }
    ),
    OrderStatus.SUBMITTED: frozenset(
        {OrderStatus.PARTIALLY_FILLED, OrderStatus.FILLED, OrderStatus.REJECTED, OrderStatus.CANCELED}
    ),
    OrderStatus.PARTIALLY_FILLED: frozenset({OrderStatus.PARTIALLY_FILLED, OrderStatus.FILLED, OrderStatus.CANCELED}),
    OrderStatus.FILLED: frozenset(),
    OrderStatus.REJECTED: frozenset(),
    OrderStatus.CANCELED: frozenset(),
}


class IllegalTransition(ValueError):
    pass


def can_transition(current: OrderStatus, target: OrderStatus) -> bool:
    return target in ALLOWED_TRANSITIONS[current]


def transition(current: OrderStatus, target: OrderStatus) -> OrderStatus:
    """The new status, or IllegalTransition for a move backwards or out of a terminal status."""
    if not can_transition(current, target):
        raise IllegalTransition(f"{current} cannot become {target}")
    return target


@dataclass(frozen=True)
class OrderRequest:
    """A customer's market order as it arrives, before anything is checked."""

    customer_id: str
    client_order_id: str
    symbol: str
    side: Side | None
    quantity: int


@dataclass(frozen=True)
class Order:
    order_id: str
    client_order_id: str
    customer_id: str
    sequence: int
    symbol: str
    side: Side
    quantity: int
    status: OrderStatus
    status_reason: str
    protection_price: Decimal | None
    reserved_cash: Decimal
    reserved_shares: int
    filled_quantity: int
    average_fill_price: Decimal | None
    cancel_requested: bool
    created_at: datetime
    updated_at: datetime
    expires_at: datetime | None = None  # a DAY order's session close (rule 10); None when the market never closes
    submit_attempts: int = 0  # attempts to send it that failed (rule 7)
    unknown_outcomes: int = 0  # of them, those whose outcome the venue could not account for
    reject_code: RejectCode | None = None  # why it is REJECTED, as data; None unless REJECTED
    cancel_reason: str | None = None  # why a cancel was asked when not by the customer (a halt's)

    def same_request_as(self, request: OrderRequest) -> bool:
        """Whether a retry under the same client_order_id asks for this very order."""
        return (self.symbol, self.side, self.quantity) == (request.symbol, request.side, request.quantity)


@dataclass(frozen=True)
class Account:
    customer_id: str
    available: Decimal
    reserved: Decimal
    updated_at: datetime
    status: AccountStatus = AccountStatus.ACTIVE


@dataclass(frozen=True)
class Position:
    symbol: str
    quantity: int
    reserved: int
    average_cost: Decimal


@dataclass(frozen=True)
class OrderEvent:
    """One change of an order, as its customer watches it."""

    sequence: int  # the customer's event sequence: where a watcher resumes
    event_type: str  # placed, rejected, submitted, partially_filled, filled, cancel_requested, canceled
    occurred_at: datetime
    order: Order  # the order as this change left it (what it still holds is not kept per event: zero here)
