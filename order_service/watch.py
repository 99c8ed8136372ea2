"""WatchOrders: a customer's order events replayed from PostgreSQL after the client's resume point, then followed
as they are committed. The doorbell wakes the watch at once; a poll covers a ring that never came. PostgreSQL is
the only source, read in sequence, so a client that reconnects with its last resume token misses nothing and sees
nothing twice. A customer holds at most `watches_per_customer` of a replica's streams (RESOURCE_EXHAUSTED past it),
so one client opening streams in a loop cannot take a replica from the other customers. A blocked account's streams
end (FAILED_PRECONDITION, ACCOUNT_BLOCKED) within a poll of the block."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator
from contextlib import AbstractContextManager

from brokerage.background import stop_requested
from brokerage.domain.errors import FailedPrecondition
from brokerage.domain.orders import OrderEvent
from brokerage.domain.risk import AccountStatus
from brokerage.messaging.doorbell import Doorbell
from brokerage.rpc.limits import Places
from brokerage.storage.orders import OrderStore

PAGE = 200


class OrderWatch:
    def __init__(self, store: OrderStore, doorbell: Doorbell, poll_seconds: float, per_customer: int) -> None:
        self._store = store
        self._doorbell = doorbell
        self._poll_seconds = poll_seconds
        self._watchers = Places(per_customer, "watches_per_customer", "WatchOrders streams per customer")

    async def follow(self, customer_id: str, after: int) -> AsyncGenerator[OrderEvent, None]:
        """The customer's events after sequence `after`, for as long as the caller keeps reading, and the account
        not blocked (a block rings no doorbell: it is read each poll interval, however often the doorbell rings)."""
        status_read = time.monotonic()
        async with self._doorbell.listening(customer_id) as rung:  # listening before reading: no ring is missed
            while not stop_requested():
                rung.clear()
                events = await self._store.events_after(customer_id, after, PAGE)
                for event in events:
                    yield event
                    after = event.sequence
                if time.monotonic() - status_read >= self._poll_seconds:
                    await self.refuse_if_blocked(customer_id)
                    status_read = time.monotonic()
                if len(events) < PAGE:
                    await _rung_or_polled(rung, self._poll_seconds)

    async def refuse_if_blocked(self, customer_id: str) -> None:
        """FailedPrecondition when the account is blocked; UnknownCustomer when there is no such customer."""
        if (await self._store.account(customer_id)).status is AccountStatus.BLOCKED:
            raise FailedPrecondition(f"customer/{customer_id}", "ACCOUNT_BLOCKED", "the account is blocked")

    def admitted(self, customer_id: str) -> AbstractContextManager[None]:
        """A place among the customer's watches on this replica, for as long as the stream is open; LimitReached
        when they hold them all."""
        return self._watchers.holding(customer_id)


async def _rung_or_polled(rung: asyncio.Event, poll_seconds: float) -> None:
    # A timer that sets the event, not a timeout around the wait: Python 3.11's asyncio.timeout can swallow a
    # cancellation that meets its own expiry, and a cancelled watch must end.
    timer = asyncio.get_running_loop().call_later(poll_seconds, rung.set)
    try:
        await rung.wait()
    finally:
        timer.cancel()
