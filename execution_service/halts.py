"""The halts in force as a worker checks its claimed orders against them just before it sends them (DESIGN.md "Risk
controls"). The claim itself passes over halted orders in its transaction; this second check covers a halt that lands
between the claim and the send. It reads a copy of the halts at most `max_age` old (refreshed each `refresh_seconds`);
without one (never read, or too old: the database away) it asks the database about every claimed order, so an order
never leaves unchecked. The database decides what becomes of each order kept back (withhold_halted_claims)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from typing import Protocol

from prometheus_client import Counter, Gauge
from psycopg_pool import AsyncConnectionPool

from brokerage.background import stop_requested
from brokerage.domain.orders import Order
from brokerage.domain.risk import HaltScope, HaltsInForce
from brokerage.storage.risk import halts_in_force
from brokerage.telemetry import get_logger

log = get_logger(__name__)

HALTS_IN_FORCE = Gauge("trading_halts_in_force", "Trading halts in force, by scope, as last read.", ("scope",))
KILL_SWITCH = Gauge("trading_kill_switch_engaged", "1 while a firm-wide trading halt (the kill switch) is in force.")
KEPT_FROM_VENUE = Counter(
    "execution_orders_kept_from_venue_total",
    "Claimed orders a halt kept from the venue just before their send: rejected, canceled (a halt canceling open "
    "orders), or cancel_requested (one that may have left before: the venue is asked to cancel it).",
    ("outcome",),
)


class Withholding(Protocol):
    async def withhold_halted_claims(self, order_ids: Sequence[str]) -> dict[str, str]: ...


class HaltWatch:
    def __init__(
        self,
        pool: AsyncConnectionPool,
        store: Withholding,
        refresh_seconds: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._pool = pool
        self._store = store
        self._refresh_seconds = refresh_seconds
        self._max_age = 2 * refresh_seconds
        self._clock = clock
        self._halts: HaltsInForce | None = None

    async def follow(self) -> None:
        """Reads the halts each refresh until cancelled; a failed read keeps the last copy until it is too old."""
        while not stop_requested():
            try:
                await self.refresh()
            except Exception as error:
                log.warning("halts refresh failed", error=repr(error))
            await asyncio.sleep(self._refresh_seconds)

    async def refresh(self) -> None:
        read_at = self._clock()  # as old as the moment the read began: a slow read is not fresher than it is
        halts = HaltsInForce(await halts_in_force(self._pool), read_at)
        for scope in HaltScope:
            HALTS_IN_FORCE.labels(scope.value.lower()).set(sum(h.scope is scope for h in halts.halts))
        KILL_SWITCH.set(1 if halts.firm_halted else 0)
        if self._halts is None or {h.halt_id for h in halts.halts} != {h.halt_id for h in self._halts.halts}:
            log.info("halts in force", halts=[h.halt_id for h in halts.halts], firm=halts.firm_halted)
        self._halts = halts

    async def keep_back(self, orders: Sequence[Order]) -> dict[str, str]:
        """Of these claimed orders, those a halt keeps from the venue, by order id: 'rejected' (REJECTED
        TRADING_HALTED) or 'canceled' (by a halt that cancels open orders), released; or 'cancel_requested' (it may
        have left before: the venue is to be asked to cancel it)."""
        halts = self._halts
        if halts is None or self._clock() - halts.read_at > self._max_age:
            suspects = list(orders)  # no copy to trust: the database checks them all
        else:
            suspects = [o for o in orders if halts.covering(o.customer_id, o.symbol) is not None]
        if not suspects:
            return {}
        kept = await self._store.withhold_halted_claims([o.order_id for o in suspects])
        for order_id, outcome in kept.items():
            KEPT_FROM_VENUE.labels(outcome).inc()
            log.warning("order kept from the venue by a halt", order_id=order_id, outcome=outcome)
        return kept
