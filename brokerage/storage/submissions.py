"""Orders on their way to the exchange, as the execution workers claim and record them (DESIGN.md rules 5-7), and
the ends of those that must not go: canceled before they arrived, or expired (rules 9 and 10)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import psycopg
from psycopg_pool import AsyncConnectionPool

from brokerage.domain.orders import Order
from brokerage.domain.submission import ShardPaused, UnknownOutcome, VenueUnavailable
from brokerage.storage.group_commit import Call, GroupCommit
from brokerage.storage.orders import order_from_row
from brokerage.storage.queries import fetch_all


class SubmissionStore:
    """Claims (and records) of a process's shard workers that arrive together share a statement (group commit)."""

    def __init__(
        self, pool: AsyncConnectionPool, *, claim_batch_max: int = 32, group_max: int = 32, group_flushers: int = 1
    ) -> None:
        self._pool = pool
        self._claim_batch_max = claim_batch_max
        self._claims, self._records, self._rejections = (
            GroupCommit(pool, name, max_batch=group_max, flushers=group_flushers)
            for name in ("claim_for_submissions", "record_submissions", "record_venue_rejections")
        )

    async def claim_for_submission(self, order_id: str, customer_id: str) -> list[Order]:
        """Claims the order and every older order of its customer still PLACED, and the shard's orders that have
        waited longest, up to the claim batch (each customer's through the newest one taken); returns them
        customer by customer, each customer's oldest first. Raises ShardPaused while the shard is paused."""
        try:
            params = {"order_id": order_id, "batch_max": self._claim_batch_max}
            rows = await self._claims.fetch(Call(customer_id, params))
        except psycopg.errors.ObjectNotInPrerequisiteState as error:
            raise ShardPaused(error.diag.message_primary or "shard paused") from error
        return [order_from_row(row) for row in rows]

    async def withhold_halted_claims(self, order_ids: Sequence[str]) -> dict[str, str]:
        """Of these claimed orders, those under a halt in force, kept from the venue: a first claim, never sent,
        ended as its halt says ('rejected' TRADING_HALTED, or 'canceled') and released; or 'cancel_requested' (it may
        have left before: the venue is to be asked to cancel it)."""
        rows = await fetch_all(self._pool, "withhold_halted_claims", {"order_ids": list(order_ids)})
        return {row["order_id"]: row["outcome"] for row in rows}

    async def record_submitted(self, order: Order, venue_order_id: str) -> Order | None:
        """SUBMITTED, unless a report already moved the order further; the order as it now stands."""
        params = {"order_id": order.order_id, "venue_order_id": venue_order_id}
        return _first(await self._records.fetch(Call(order.customer_id, params)))

    async def record_venue_rejection(self, order: Order, reason: str) -> Order | None:
        """REJECTED with the venue's reason and the reservation released, unless the order filled or ended."""
        params = {"order_id": order.order_id, "reason": reason}
        return _first(await self._rejections.fetch(Call(order.customer_id, params)))

    async def record_failure(self, order: Order, error: VenueUnavailable, retry_at: datetime | None) -> Order | None:
        """The send failed: the order backs off until retry_at (None: it is parked, a break with its reservation
        held), holding back its customer's later orders. Nothing, for an order no longer waiting."""
        params = {
            "order_id": order.order_id,
            "error": str(error),
            "unknown": isinstance(error, UnknownOutcome),
            "retry_at": retry_at,
            "park": retry_at is None,
        }
        return await self._one("record_submit_failure", params)

    async def end_unsent(self, order_id: str, reason: str) -> Order | None:
        """The venue said it never received the order, and keeps a tombstone that refuses it: CANCELED here with
        the reason, released. Returns it; None when it ended nothing (the order no longer waiting)."""
        return await self._one("end_unsent_order", {"order_id": order_id, "reason": reason})

    async def pending_cancel(self, order_id: str) -> Order | None:
        """The order, if a worker has taken it, its customer asked to cancel it and the cancel is not yet sent."""
        return await self._one("pending_cancel", {"order_id": order_id})

    async def record_cancel_sent(self, order_id: str) -> None:
        await fetch_all(self._pool, "record_cancel_sent", {"order_id": order_id})

    async def _one(self, name: str, params: dict[str, Any]) -> Order | None:
        return _first(await fetch_all(self._pool, name, params))


def _first(rows: list[dict[str, Any]]) -> Order | None:
    """The order a function returned, None for its row of nulls (no such order)."""
    return order_from_row(rows[0]) if rows and rows[0]["order_id"] is not None else None
