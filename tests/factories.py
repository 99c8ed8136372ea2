"""Domain objects as tests need them, built in one place."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from brokerage.domain.executions import ExecType, ExecutionReport, Received
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


def execution_report(exec_id: str, order_id: str = "o-1", **changes: Any) -> ExecutionReport:
    """The exchange's partial fill of 1 of 10 AAPL at 10.00, now, unless changes say otherwise."""
    report = ExecutionReport(
        exec_id=exec_id,
        order_id=order_id,
        venue_order_id=f"V-{order_id}",
        exec_type=ExecType.PARTIAL_FILL,
        last_quantity=1,
        last_price=Decimal("10.00"),
        cumulative_quantity=1,
        reason="",
        transact_time=datetime.now(UTC),
        symbol="AAPL",
        side=Side.BUY,
        order_quantity=10,
    )
    return replace(report, **changes)


def received(report: ExecutionReport) -> Received:
    """The report as CallbackService receives it: its bytes (here only a stand-in), parsed."""
    return Received(f"bytes of {report.exec_id}".encode(), report)
