"""Domain objects as tests need them, built in one place."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

from brokerage.domain.orders import Order, OrderStatus, Side


def placed_order(order_id: str, customer_id: str = "1", sequence: int = 1, symbol: str = "AAPL") -> Order:
    """A priced buy of one share, PLACED, as a worker's claim returns it."""
    now = datetime.now(UTC)
    return Order(
        order_id=order_id,
        client_order_id=f"k-{order_id}",
        customer_id=customer_id,
        sequence=sequence,
        symbol=symbol,
        side=Side.BUY,
        quantity=1,
        status=OrderStatus.PLACED,
        status_reason="",
        protection_price=Decimal("241.50"),
        reserved_cash=Decimal("241.50"),
        reserved_shares=0,
        filled_quantity=0,
        average_fill_price=None,
        cancel_requested=False,
        created_at=now,
        updated_at=now,
    )
