"""Orders, balances and positions as the order desk reads and changes them. Driver errors end here."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, TypeVar

import psycopg
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

from brokerage.domain.errors import Unavailable, UnknownCustomer
from brokerage.domain.orders import Account, Order, OrderStatus, Position, Side
from brokerage.storage.queries import query

T = TypeVar("T")
UNKNOWN_CUSTOMER = "BR001"
# Safe to run again whole: every write here is idempotent (placement by its key, cancel by its guard).
_RETRYABLE = (psycopg.errors.SerializationFailure, psycopg.errors.DeadlockDetected, psycopg.OperationalError)
_ATTEMPTS = 3


@dataclass(frozen=True)
class NewOrder:
    """What the placement transaction needs: the order, what to hold (or why not), and its message."""

    order_id: str
    customer_id: str
    client_order_id: str
    symbol: str
    side: Side
    quantity: int
    protection_price: Decimal | None
    reserve_cash: Decimal
    reject_reason: str | None
    subject: str
    payload: bytes


class OrderStore:
    def __init__(self, pool: AsyncConnectionPool) -> None:
        self._pool = pool

    async def place(self, new: NewOrder) -> Order:
        """Inserts and reserves in one transaction; returns the stored order, which for a retried
        client_order_id is the first one (possibly for other fields: the caller compares)."""
        params = {
            "order_id": new.order_id,
            "customer_id": new.customer_id,
            "client_order_id": new.client_order_id,
            "symbol": new.symbol,
            "side": new.side.value,
            "quantity": new.quantity,
            "protection_price": new.protection_price,
            "reserve_cash": new.reserve_cash,
            "reject_reason": new.reject_reason,
            "subject": new.subject,
            "payload": new.payload,
        }
        rows = await self._fetch("place_order", params)
        return order_from_row(rows[0])

    async def cancel_placed(self, customer_id: str, order_id: str) -> Order | None:
        """Cancels the order if no worker has claimed it; returns it as it now stands, None if unknown."""
        rows = await self._fetch("cancel_placed_order", {"customer_id": customer_id, "order_id": order_id})
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
        return Account(**rows[0])

    async def positions(self, customer_id: str) -> list[Position]:
        await self.account(customer_id)  # an unknown customer is NOT_FOUND, not an empty portfolio
        rows = await self._fetch("list_positions", {"customer_id": customer_id})
        return [Position(**row) for row in rows]

    async def _fetch(self, name: str, params: dict[str, Any]) -> list[dict[str, Any]]:
        async def run() -> list[dict[str, Any]]:
            async with self._pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
                await cur.execute(query(name), params)
                return await cur.fetchall()

        try:
            return await with_retries(run)
        except psycopg.Error as error:
            if error.sqlstate == UNKNOWN_CUSTOMER:
                raise UnknownCustomer(params["customer_id"]) from error
            if isinstance(error, psycopg.OperationalError):
                raise Unavailable(f"database unavailable: {error.__class__.__name__}") from error
            raise


async def with_retries(operation: Callable[[], Awaitable[T]]) -> T:
    """Runs a whole transaction again on serialization failure, deadlock or a lost connection.

    A connection lost during COMMIT leaves the outcome unknown; the operations passed here are idempotent,
    so running them again looks the result up rather than doing the work twice.
    """
    for attempt in range(1, _ATTEMPTS + 1):
        try:
            return await operation()
        except _RETRYABLE as error:
            # A statement timeout means overload: running it again would only add to it.
            if attempt == _ATTEMPTS or isinstance(error, psycopg.errors.QueryCanceled):
                raise
    raise AssertionError("unreachable")


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
        cancel_requested=row["cancel_requested_at"] is not None,
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )
