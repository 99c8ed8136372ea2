"""The order-events doorbell: after a commit that added a customer's order events, a ring on core NATS
(`order_events.<customer>`) so that watchers read PostgreSQL at once instead of at their next poll.

A ring carries nothing: PostgreSQL's order_events is the record, and a lost ring only delays a watcher until it
polls. Rings are best effort and never block the commit they follow.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager

from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from prometheus_client import Counter

from brokerage.messaging.connection import JetStreamLink
from brokerage.telemetry import get_logger

log = get_logger(__name__)

RING_FAILURES = Counter("order_events_doorbell_failures_total", "Doorbell rings that could not be sent.")
SUBJECT_PREFIX = "order_events"
RING_TIMEOUT_SECONDS = 1.0


def doorbell_subject(customer_id: str) -> str:
    """Customer ids may hold '.', '*' or '>', which NATS reads as subject syntax: the token is base64url."""
    token = base64.urlsafe_b64encode(customer_id.encode()).decode().rstrip("=")
    return f"{SUBJECT_PREFIX}.{token}"


class Doorbell:
    """Rings, and hears them for the watchers of this process: one subscription to every customer's subject,
    made on the first watch, fanned out in process, so a thousand watches cost NATS one interest, not a thousand."""

    def __init__(self, link: JetStreamLink) -> None:
        self._link = link
        self._listeners: dict[str, set[asyncio.Event]] = {}
        self._subscription: Subscription | None = None
        self._subscribing = asyncio.Lock()

    async def ring(self, customer_ids: Iterable[str]) -> None:
        """Rings for each customer; while NATS is away, watchers find the events at their next poll."""
        if not self._link.connected:
            return
        try:
            async with asyncio.timeout(RING_TIMEOUT_SECONDS):  # best effort: never hold up the caller's work
                client = await self._link.client()
                for customer_id in set(customer_ids):
                    await client.publish(doorbell_subject(customer_id), b"")
        except Exception as error:
            RING_FAILURES.inc()
            log.debug("doorbell ring failed", error=repr(error))

    @asynccontextmanager
    async def listening(self, customer_id: str) -> AsyncIterator[asyncio.Event]:
        """An event set by every ring for the customer (the watcher clears it before reading); without NATS, an
        event no ring sets, and the watcher relies on its poll."""
        await self._subscribe()
        rung = asyncio.Event()
        subject = doorbell_subject(customer_id)
        self._listeners.setdefault(subject, set()).add(rung)
        try:
            yield rung
        finally:
            listeners = self._listeners[subject]
            listeners.discard(rung)
            if not listeners:
                del self._listeners[subject]

    async def _subscribe(self) -> None:
        """The process's one subscription, once NATS is there (the client renews it across reconnects)."""
        if self._subscription is not None or not self._link.connected:
            return
        async with self._subscribing:
            if self._subscription is not None:
                return
            try:
                client = await self._link.client()
                self._subscription = await client.subscribe(f"{SUBJECT_PREFIX}.>", cb=self._on_ring)
            except Exception as error:
                log.warning("doorbell unavailable; watching by polling", error=repr(error))

    async def _on_ring(self, message: Msg) -> None:
        for rung in self._listeners.get(message.subject, ()):
            rung.set()
