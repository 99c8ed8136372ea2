"""Breaks and the repairs of them, as the operations service reads and makes them (migration 0014): each repair an
audit row, and where money moves, transfers that name it."""

from __future__ import annotations

from typing import Any

from psycopg_pool import AsyncConnectionPool

from brokerage.domain.orders import Order
from brokerage.domain.repairs import Break, Resolution
from brokerage.storage.orders import order_from_row
from brokerage.storage.queries import fetch_all


class RepairStore:
    def __init__(self, pool: AsyncConnectionPool) -> None:
        self._pool = pool

    async def breaks(
        self, *, kind: str | None, include_resolved: bool, limit: int, after: int | None = None
    ) -> list[Break]:
        """The breaks, oldest first: open ones unless include_resolved, of one kind if given, from the one after
        break `after` (a page's last) on."""
        return await self._breaks(kind=kind, include_resolved=include_resolved, limit=limit, break_id=None, after=after)

    async def get_break(self, break_id: int) -> Break | None:
        found = await self._breaks(kind=None, include_resolved=True, limit=1, break_id=break_id, after=None)
        return found[0] if found else None

    async def resolve(self, break_id: int, resolution: Resolution, operator: str, note: str) -> bool:
        """Resolves the break with its audit row (and, written off, the reversal of what it booked to the error
        account); whether this call resolved it (False: it was resolved already)."""
        params = {"break_id": break_id, "resolution": resolution.value, "operator": operator, "note": note}
        rows = await fetch_all(self._pool, "resolve_break", params)
        return bool(rows and rows[0]["repaired"])

    async def redrive_waiting(self, order_id: str, operator: str, note: str) -> Order | None:
        """An order holding its customer, sent again: its retry due now, its parked break closed. None unless it
        still held its customer."""
        params = {"order_id": order_id, "operator": operator, "note": note}
        return _order(await fetch_all(self._pool, "redrive_waiting_order", params))

    async def end_lost(self, order_id: str, reason: str, operator: str, note: str) -> Order | None:
        """An unfilled order at the venue that the venue never received, CANCELED and released. None unless it was."""
        params = {"order_id": order_id, "reason": reason, "operator": operator, "note": note}
        return _order(await fetch_all(self._pool, "end_lost_order", params))

    async def order(self, order_id: str) -> Order | None:
        return _order(await fetch_all(self._pool, "order_by_id", {"order_id": order_id}))

    async def _breaks(self, **params: Any) -> list[Break]:
        return [Break(**row) for row in await fetch_all(self._pool, "list_breaks", params)]


def _order(rows: list[dict[str, Any]]) -> Order | None:
    return order_from_row(rows[0]) if rows and rows[0]["order_id"] is not None else None
