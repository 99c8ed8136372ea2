"""What the sweeper re-drives (DESIGN.md rules 4, 7 and 10): orders PLACED too long and cancels asked too long ago,
whose wake-up message may be lost; orders whose retry has come due; orders at the exchange that have been silent too
long; and DAY orders still waiting at their expiry."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal
from typing import Any

from psycopg_pool import AsyncConnectionPool

from brokerage.domain.orders import Order, Side
from brokerage.storage.orders import order_from_row
from brokerage.storage.queries import fetch_all


@dataclass(frozen=True)
class UnsentOrder:
    """A PLACED order to publish again; sweep_count makes each republish's message id new."""

    order_id: str
    customer_id: str
    shard: int
    symbol: str
    side: Side
    quantity: int
    protection_price: Decimal
    sweep_count: int


@dataclass(frozen=True)
class HaltCancel:
    """An order a halt's cancel job reached: 'canceled' at once, or its cancel 'requested' of the venue."""

    order_id: str
    customer_id: str
    shard: int
    outcome: str


@dataclass(frozen=True)
class UnsentCancel:
    """A customer's cancel to publish again."""

    order_id: str
    customer_id: str
    shard: int
    sweep_count: int


@dataclass(frozen=True)
class SweepWindow:
    """Which wake-ups count as lost: in an idle shard (nothing waiting, nothing in flight) after `after`; in a busy
    one, where the order may only be queued, after `busy_after`."""

    shards: tuple[int, ...]
    idle_shards: tuple[int, ...]
    after: timedelta
    busy_after: timedelta


class SweepStore:
    def __init__(self, pool: AsyncConnectionPool) -> None:
        self._pool = pool

    async def unsent_placed(self, window: SweepWindow, limit: int) -> list[UnsentOrder]:
        """Orders of the window's (unpaused) shards PLACED, and not swept, for longer than its limits, marked swept
        now (committed before they are republished: no order's row stays locked while NATS answers)."""
        rows = await fetch_all(self._pool, "claim_unsent_placed", self._params(window, limit))
        return [UnsentOrder(**{**row, "side": Side(row["side"])}) for row in rows]

    async def unsent_cancels(self, window: SweepWindow, limit: int) -> list[UnsentCancel]:
        """Cancels of the window's (unpaused) shards asked, and not sent, for longer than its limits; likewise."""
        rows = await fetch_all(self._pool, "claim_unsent_cancels", self._params(window, limit))
        return [UnsentCancel(**row) for row in rows]

    async def cancel_for_halts(self, shards: tuple[int, ...], limit: int) -> list[HaltCancel]:
        """Works the shards' halt cancel jobs a batch further: the orders canceled at once, and those whose cancel
        is now asked of the venue (their messages the caller's to publish)."""
        rows = await fetch_all(self._pool, "cancel_for_halts", {"shards": list(shards), "limit": limit})
        return [HaltCancel(**row) for row in rows]

    async def due_retries(self, shards: tuple[int, ...], after: timedelta, limit: int) -> list[UnsentOrder]:
        """Orders whose backoff is over, marked swept now: their wake-ups lift their customers' holds."""
        rows = await fetch_all(
            self._pool, "claim_due_retries", {"shards": list(shards), "after": after, "limit": limit}
        )
        return [UnsentOrder(**{**row, "side": Side(row["side"])}) for row in rows]

    async def expire_unclaimed(self, shards: tuple[int, ...], reason: str, limit: int) -> list[Order]:
        """The orders still waiting unclaimed at their expiry, CANCELED as expired and released."""
        params = {"shards": list(shards), "reason": reason, "limit": limit}
        return [order_from_row(row) for row in await fetch_all(self._pool, "expire_unclaimed_orders", params)]

    async def expired_claimed(
        self, shards: tuple[int, ...], grace: timedelta, after: timedelta, limit: int
    ) -> list[Order]:
        """The orders a worker took (or parked) still waiting longer than the grace past their expiry, marked swept
        now, for the venue to be asked to cancel them."""
        params = {"shards": list(shards), "grace": grace, "after": after, "limit": limit}
        return [order_from_row(row) for row in await fetch_all(self._pool, "claim_expired_claimed", params)]

    async def silent_at_exchange(self, shards: tuple[int, ...], after: timedelta, limit: int) -> list[str]:
        """Ids of orders at the exchange with no change for longer than `after`, marked swept now."""
        params = {"shards": list(shards), "after": after, "limit": limit}
        return [row["order_id"] for row in await fetch_all(self._pool, "claim_silent_submitted", params)]

    @staticmethod
    def _params(window: SweepWindow, limit: int) -> dict[str, Any]:
        return {
            "shards": list(window.shards),
            "idle_shards": list(window.idle_shards),
            "after": window.after,
            "busy_after": window.busy_after,
            "limit": limit,
        }
