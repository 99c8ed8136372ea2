"""Orders, balances and positions as the order desk reads and changes them. Driver errors end here."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from psycopg_pool import AsyncConnectionPool

from brokerage.domain.errors import LimitReached, UnknownCustomer
from brokerage.domain.orders import Account, Order, OrderEvent, OrderStatus, Position, Side
from brokerage.domain.risk import AccountStatus, RejectCode
from brokerage.messaging.publishing import Publication
from brokerage.storage.batching import MicroBatcher, isolating_refusals
from brokerage.storage.queries import fetch_all


@dataclass(frozen=True)
class NewOrder:
    """What the placement transaction needs: the order, its price (or why it is rejected), and its message. What
    it holds, the transaction works out."""

    order_id: str
    customer_id: str
    client_order_id: str
    symbol: str
    side: Side
    quantity: int
    protection_price: Decimal | None
    reference_price: Decimal | None  # the quote it was priced from: a sell's notional is measured at it
    reject_code: RejectCode | None  # the desk's refusal (market hours, the quote); None: the transaction decides
    reject_reason: str | None
    subject: str
    payload: bytes
    expires_at: datetime | None = None  # a DAY order's session close; None when the market never closes


class OrderStore:
    def __init__(self, pool: AsyncConnectionPool, *, placement_batch: int = 64, placement_flushers: int = 1) -> None:
        self._pool = pool
        self._placements: MicroBatcher[NewOrder, Order] = MicroBatcher(
            isolating_refusals(self._place_batch), max_batch=placement_batch, max_in_flight=placement_flushers
        )

    async def place(self, new: NewOrder) -> Order:
        """Checks, inserts and reserves in one transaction (shared with placements arriving at the same moment);
        returns the stored order, PLACED or REJECTED with its code, which for a retried client_order_id is the first
        one (possibly for other fields: the caller compares). Raises UnknownCustomer, and LimitReached (nothing
        stored) for a customer past its orders per minute."""
        return await self._placements.submit(new)

    async def _place_batch(self, batch: Sequence[NewOrder]) -> list[Order | BaseException]:
        by_customer = sorted(range(len(batch)), key=lambda i: batch[i].customer_id)  # stable: FIFO per customer
        rows = await self._fetch("place_orders", _placement_arrays([batch[i] for i in by_customer]))
        results: list[Order | BaseException] = [UnknownCustomer(new.customer_id) for new in batch]
        for i, row in zip(by_customer, rows, strict=True):
            if row["order_id"] is not None:
                results[i] = order_from_row(row)
            elif row["retry_after"] is not None:
                results[i] = rate_limited(row["retry_after"])
        return results

    async def cancel(self, customer_id: str, order_id: str, cancel_request: Publication) -> Order | None:
        """Cancels the order at once if no worker has claimed it; otherwise, if it is still open, records the
        customer's request and the message that takes it to the exchange. Returns the order as it now stands,
        None if the customer has no such order."""
        params = {
            "customer_id": customer_id,
            "order_id": order_id,
            "subject": cancel_request.subject,
            "payload": cancel_request.payload,
        }
        rows = await self._fetch("cancel_order", params)
        return order_from_row(rows[0]) if rows else None

    async def get(self, customer_id: str, order_id: str) -> Order | None:
        rows = await self._fetch("get_order", {"customer_id": customer_id, "order_id": order_id})
        return order_from_row(rows[0]) if rows else None

    async def list_orders(
        self,
        customer_id: str,
        *,
        side: Side | None,
        status: OrderStatus | None,
        before_sequence: int | None,
        limit: int,
    ) -> list[Order]:
        rows = await self._fetch(
            "list_orders",
            {
                "customer_id": customer_id,
                "side": side.value if side else None,
                "status": status.value if status else None,
                "before_sequence": before_sequence,
                "limit": limit,
            },
        )
        return [order_from_row(row) for row in rows]

    async def account(self, customer_id: str) -> Account:
        rows = await self._fetch("get_account", {"customer_id": customer_id})
        if not rows:
            raise UnknownCustomer(customer_id)
        return Account(**{**rows[0], "status": AccountStatus(rows[0]["status"])})

    async def positions(self, customer_id: str) -> list[Position]:
        await self.account(customer_id)  # an unknown customer is NOT_FOUND, not an empty portfolio
        rows = await self._fetch("list_positions", {"customer_id": customer_id})
        return [Position(**row) for row in rows]

    async def events_after(self, customer_id: str, after: int, limit: int) -> list[OrderEvent]:
        """The customer's order events after sequence `after`, oldest first."""
        rows = await self._fetch("order_events_after", {"customer_id": customer_id, "after": after, "limit": limit})
        return [_event_from_row(row) for row in rows]

    async def _fetch(self, name: str, params: dict[str, Any]) -> list[dict[str, Any]]:
        return await fetch_all(self._pool, name, params)


def _placement_arrays(batch: Sequence[NewOrder]) -> dict[str, list[Any]]:
    """The batch as one array per column, the shape place_orders_v3() takes."""
    return {
        "order_id": [n.order_id for n in batch],
        "customer_id": [n.customer_id for n in batch],
        "client_order_id": [n.client_order_id for n in batch],
        "symbol": [n.symbol for n in batch],
        "side": [n.side.value for n in batch],
        "quantity": [n.quantity for n in batch],
        "protection_price": [n.protection_price for n in batch],
        "reference_price": [n.reference_price for n in batch],
        "reject_code": [n.reject_code.value if n.reject_code else None for n in batch],
        "reject_reason": [n.reject_reason for n in batch],
        "subject": [n.subject for n in batch],
        "payload": [n.payload for n in batch],
        "expires_at": [n.expires_at for n in batch],
    }


def _event_from_row(row: dict[str, Any]) -> OrderEvent:
    """An event with the order as it stood after it: the event's own status, fills and cancel flag; an event
    carries no reservation."""
    unreserved = {"reserved_cash": Decimal(0), "reserved_shares": 0, "cancel_requested_at": None}
    order = order_from_row({**row, **unreserved, "updated_at": row["occurred_at"]})
    order = replace(order, cancel_requested=row["cancel_requested"])  # as the event recorded it
    return OrderEvent(row["event_sequence"], row["event_type"], row["occurred_at"], order)


def order_from_row(row: dict[str, Any]) -> Order:
    return Order(
        order_id=row["order_id"],
        client_order_id=row["client_order_id"],
        customer_id=row["customer_id"],
        sequence=row["sequence"],
        symbol=row["symbol"],
        side=Side(row["side"]),
        quantity=row["quantity"],
        status=OrderStatus(row["status"]),
        status_reason=row["status_reason"],
        protection_price=row["protection_price"],
        reserved_cash=row["reserved_cash"],
        reserved_shares=row["reserved_shares"],
        filled_quantity=row["filled_quantity"],
        average_fill_price=row["average_fill_price"],
        # asked of the exchange and not yet answered: the order's end is the answer
        cancel_requested=row["cancel_requested_at"] is not None and not OrderStatus(row["status"]).is_terminal,
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        expires_at=row.get("expires_at"),
        submit_attempts=row.get("submit_attempts", 0),
        unknown_outcomes=row.get("unknown_outcomes", 0),
        reject_code=RejectCode(row["reject_code"]) if row.get("reject_code") else None,
        cancel_reason=row.get("cancel_reason"),
    )


def rate_limited(retry_after: timedelta) -> LimitReached:
    """A placement refused at the customer's orders per minute: retry the same request after the delay."""
    return LimitReached(
        "orders_per_minute",
        "too many orders a minute for this customer: retry the same request later",
        retry_after_seconds=max(retry_after.total_seconds(), 0.001),
    )
