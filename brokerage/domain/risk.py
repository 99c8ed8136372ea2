"""The market-access risk controls (DESIGN.md "Risk controls", SEC Rule 15c3-5): what a refusal is called, the halts,
account statuses and limits an operator sets, and what a well-formed change of them is. No I/O.

The checks run in this order, each refusal a stored REJECTED order with its code: the halts (firm, symbol,
customer), the account status, the quantity limit, market hours and a fresh quote (the desk, brokerage.domain.
placement), the notional limit, the day's buy notional, then cash or shares. Those about the customer are made by the
placement transaction under the customer's lock (place_order_v3), in the same order; RejectCode lists them so.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from enum import StrEnum

from brokerage.domain.errors import FieldViolation, InvalidRequest
from brokerage.domain.identifiers import id_violations
from brokerage.domain.money import MoneyFormatError, parse_decimal

MAX_REASON_LENGTH = 500
# numeric(20,4): sixteen digits before the point.
MAX_MONEY = Decimal("1e15")


class RejectCode(StrEnum):
    """Why an order was stored REJECTED, in the order the checks run (the venue's last): the proto's RejectCode without
    its prefix, and the orders.reject_code CHECK's values."""

    TRADING_HALTED = "TRADING_HALTED"
    ACCOUNT_BLOCKED = "ACCOUNT_BLOCKED"
    ACCOUNT_CLOSING_ONLY = "ACCOUNT_CLOSING_ONLY"
    QUANTITY_LIMIT = "QUANTITY_LIMIT"
    MARKET_CLOSED = "MARKET_CLOSED"
    NO_QUOTE = "NO_QUOTE"
    STALE_QUOTE = "STALE_QUOTE"
    NOTIONAL_LIMIT = "NOTIONAL_LIMIT"
    DAILY_NOTIONAL_LIMIT = "DAILY_NOTIONAL_LIMIT"
    INSUFFICIENT_BUYING_POWER = "INSUFFICIENT_BUYING_POWER"
    INSUFFICIENT_SHARES = "INSUFFICIENT_SHARES"
    EXCHANGE_REJECTED = "EXCHANGE_REJECTED"

    @property
    def label(self) -> str:
        """As metrics label it (orders_rejected_total{reason})."""
        return self.value.lower()


class HaltScope(StrEnum):
    FIRM = "FIRM"  # the kill switch
    SYMBOL = "SYMBOL"  # the restricted list
    CUSTOMER = "CUSTOMER"


class AccountStatus(StrEnum):
    ACTIVE = "ACTIVE"
    CLOSING_ONLY = "CLOSING_ONLY"  # sells only
    BLOCKED = "BLOCKED"  # nothing new; its WatchOrders streams end


@dataclass(frozen=True)
class Halt:
    halt_id: int
    scope: HaltScope
    symbol: str | None
    customer_id: str | None
    reason: str  # the operator's: never shown to a customer
    cancel_open_orders: bool
    set_at: datetime
    set_by: str
    cleared_at: datetime | None = None
    cleared_by: str | None = None

    def covers(self, customer_id: str, symbol: str) -> bool:
        return (
            self.scope is HaltScope.FIRM
            or (self.scope is HaltScope.SYMBOL and self.symbol == symbol)
            or (self.scope is HaltScope.CUSTOMER and self.customer_id == customer_id)
        )


@dataclass(frozen=True)
class HaltsInForce:
    """The halts in force as a process last read them, to check an order against before it leaves."""

    halts: tuple[Halt, ...]
    read_at: float  # monotonic seconds

    def covering(self, customer_id: str, symbol: str) -> Halt | None:
        return next((h for h in self.halts if h.covers(customer_id, symbol)), None)

    @property
    def firm_halted(self) -> bool:
        return any(h.scope is HaltScope.FIRM for h in self.halts)


@dataclass(frozen=True)
class HaltRequest:
    scope: HaltScope
    symbol: str | None
    customer_id: str | None
    reason: str
    cancel_open_orders: bool


@dataclass(frozen=True)
class Limits:
    """Limits of one customer as set (None: the firm's default), or the firm's defaults, or those in force."""

    max_order_notional: Decimal | None = None
    max_order_quantity: int | None = None
    max_daily_buy_notional: Decimal | None = None
    max_orders_per_minute: int | None = None


@dataclass(frozen=True)
class RiskEvent:
    event_id: int
    occurred_at: datetime
    action: str  # halt_set, halt_cleared, account_status_set, limits_set
    customer_id: str | None
    symbol: str | None
    halt_id: int | None
    detail: str  # JSON, as stored: what changed (before and after), numbers exact
    reason: str
    operator_issuer: str
    operator: str
    operator_peer: str


def reason_violations(reason: str) -> list[FieldViolation]:
    """An operator's reason is the audit's why: required, one line, bounded."""
    if not reason.strip():
        return [FieldViolation("reason", "must say why (it is kept in the audit)")]
    if len(reason) > MAX_REASON_LENGTH:
        return [FieldViolation("reason", f"must be at most {MAX_REASON_LENGTH} characters")]
    if not reason.isprintable():
        return [FieldViolation("reason", "must be printable text on one line")]
    return []


def halt_request(scope: HaltScope, symbol: str, customer_id: str, reason: str, cancel_open_orders: bool) -> HaltRequest:
    """A well-formed halt: its scope names its target and nothing else. InvalidRequest listing what is not."""
    violations = reason_violations(reason)
    wants = {HaltScope.FIRM: (), HaltScope.SYMBOL: ("symbol",), HaltScope.CUSTOMER: ("customer_id",)}[scope]
    for field, value in (("symbol", symbol), ("customer_id", customer_id)):
        if field in wants:
            violations += id_violations(field, value)
        elif value:
            violations.append(FieldViolation(field, f"must be empty for a {scope.value.lower()} halt"))
    _raise_if(violations)
    return HaltRequest(scope, symbol or None, customer_id or None, reason, cancel_open_orders)


def parse_limits(
    *,
    max_order_notional: str | None,
    max_order_quantity: int | None,
    max_daily_buy_notional: str | None,
    max_orders_per_minute: int | None,
) -> Limits:
    """Limits from their wire form (money as decimal strings; None: not given), each positive and storable."""
    violations: list[FieldViolation] = []
    notional = _money("max_order_notional", max_order_notional, violations)
    daily = _money("max_daily_buy_notional", max_daily_buy_notional, violations)
    for field, count, bound in (
        ("max_order_quantity", max_order_quantity, 10**15),
        ("max_orders_per_minute", max_orders_per_minute, 1_000_000),
    ):
        if count is not None and not 0 < count <= bound:
            violations.append(FieldViolation(field, f"must be 1 to {bound}"))
    _raise_if(violations)
    return Limits(notional, max_order_quantity, daily, max_orders_per_minute)


def _money(field: str, text: str | None, violations: list[FieldViolation]) -> Decimal | None:
    if text is None:
        return None
    try:
        value = parse_decimal(text)
    except MoneyFormatError:
        value = Decimal(0)  # refused below with the others
    if not 0 < value < MAX_MONEY or value != value.quantize(Decimal("0.0001")):
        violations.append(FieldViolation(field, "must be a positive decimal amount with at most 4 decimals"))
        return None
    return value


def _raise_if(violations: Iterable[FieldViolation]) -> None:
    if found := list(violations):
        raise InvalidRequest(found)
