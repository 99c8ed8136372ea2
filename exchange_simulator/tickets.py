"""What an order looks like when it reaches the venue, and what makes a submission malformed.

A malformed submission is an error (nothing is created); an order the venue cannot take (an unknown or halted
symbol, a closed market) is well-formed and becomes a rejected order, which is data.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from brokerage.domain.errors import FieldViolation, InvalidRequest
from brokerage.domain.identifiers import id_violations
from brokerage.domain.money import MoneyFormatError, parse_decimal
from brokerage.domain.orders import Side


@dataclass(frozen=True)
class OrderTicket:
    """A SubmitOrder command: our order id is the venue's client order id and the idempotency key."""

    order_id: str
    customer_id: str
    symbol: str
    side: Side
    quantity: int
    protection_price: Decimal  # a buy never fills above it, a sell never below
    expires_at: datetime | None = None  # a DAY order: refused after this, canceled at it if still working

    def allows(self, price: Decimal) -> bool:
        """Whether a fill at this price respects the protection price."""
        if self.side is Side.BUY:
            return price <= self.protection_price
        return price >= self.protection_price


def order_ticket(
    *,
    order_id: str,
    customer_id: str,
    symbol: str,
    side: Side | None,
    quantity: int,
    protection_price: str,
    expires_at: datetime | None = None,
) -> OrderTicket:
    """The ticket, or InvalidRequest naming every malformed field at once."""
    violations = [*id_violations("order_id", order_id), *id_violations("customer_id", customer_id)]
    if side is None:
        violations.append(FieldViolation("side", "must be SIDE_BUY or SIDE_SELL"))
    if quantity <= 0:
        violations.append(FieldViolation("quantity", "must be a positive number of shares"))
    price = _positive_price(protection_price, violations)
    if violations or side is None or price is None:
        raise InvalidRequest(violations)
    return OrderTicket(order_id, customer_id, symbol.strip().upper(), side, quantity, price, expires_at)


def _positive_price(text: str, violations: list[FieldViolation]) -> Decimal | None:
    try:
        price = parse_decimal(text.strip())
    except MoneyFormatError:
        violations.append(FieldViolation("protection_price", f"not a decimal number: {text!r}"))
        return None
    if price <= 0:
        violations.append(FieldViolation("protection_price", f"must be positive: {text!r}"))
        return None
    return price
