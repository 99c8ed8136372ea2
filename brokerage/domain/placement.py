"""The rules an order meets before it is stored that the desk decides: well-formed input, in hours, and priced from a
fresh quote. The risk checks about the customer (halts, status, limits) and the last rule, enough cash or shares, are
the placement transaction's, in the order brokerage.domain.risk gives (rule 1).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

from brokerage.domain.errors import FieldViolation, InvalidRequest
from brokerage.domain.identifiers import id_violations
from brokerage.domain.market_hours import MarketClock
from brokerage.domain.money import round_down_to_tick, round_up_to_tick
from brokerage.domain.orders import OrderRequest, Side
from brokerage.domain.risk import RejectCode


@dataclass(frozen=True)
class Instrument:
    symbol: str
    tick_size: Decimal


@dataclass(frozen=True)
class Quote:
    symbol: str
    price: Decimal
    quoted_at: datetime


@dataclass(frozen=True)
class Rejection:
    code: RejectCode
    reason: str


@dataclass(frozen=True)
class Pricing:
    """The price a market order is sent with: a buy never fills above it, a sell never below. What the order holds
    follows from it in the placement transaction (quantity x this for a buy, the shares for a sell), not here; a sell's
    notional is measured at the reference price it was priced from."""

    protection_price: Decimal
    reference_price: Decimal


@dataclass(frozen=True)
class PlacementPolicy:
    price_collar: Decimal
    max_quantity: int
    quote_max_age: timedelta
    clock: MarketClock

    def validate(self, request: OrderRequest, known_symbols: set[str] | frozenset[str]) -> None:
        """Raises InvalidRequest listing every malformed field; an unknown symbol is malformed input."""
        violations = [
            *id_violations("customer_id", request.customer_id),
            *id_violations("client_order_id", request.client_order_id),
        ]
        if not request.symbol:
            violations.append(FieldViolation("symbol", "must not be empty"))
        elif request.symbol not in known_symbols:
            violations.append(FieldViolation("symbol", f"unknown symbol {request.symbol!r}"))
        if request.side is None:
            violations.append(FieldViolation("side", "must be SIDE_BUY or SIDE_SELL"))
        if request.quantity <= 0:
            violations.append(FieldViolation("quantity", "must be a positive number of shares"))
        elif request.quantity > self.max_quantity:
            violations.append(FieldViolation("quantity", f"must be at most {self.max_quantity}"))
        if violations:
            raise InvalidRequest(violations)

    def expires_at(self, now: datetime) -> datetime | None:
        """A market order is a DAY order: it expires at the close of the session it is placed in (rule 10)."""
        return self.clock.session_close(now)

    def price(
        self, request: OrderRequest, instrument: Instrument, quote: Quote | None, now: datetime
    ) -> Pricing | Rejection:
        """The protection price of a valid order, or why it is rejected before any money is held."""
        if not self.clock.is_open(now):
            return Rejection(RejectCode.MARKET_CLOSED, "market closed")
        if quote is None:
            return Rejection(RejectCode.NO_QUOTE, f"no reference price for {instrument.symbol}")
        age = now - quote.quoted_at
        if age > self.quote_max_age:
            return Rejection(
                RejectCode.STALE_QUOTE,
                f"reference price for {instrument.symbol} is stale ({age.total_seconds():.0f}s old)",
            )
        if request.side is Side.BUY:
            limit = round_up_to_tick(quote.price * (1 + self.price_collar), instrument.tick_size)
            return Pricing(protection_price=limit, reference_price=quote.price)
        limit = round_down_to_tick(quote.price * (1 - self.price_collar), instrument.tick_size)
        return Pricing(protection_price=max(limit, instrument.tick_size), reference_price=quote.price)
