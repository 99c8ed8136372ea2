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
    def __init__(self, link: JetStreamLink) -> None:
        self._link = link

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
        rung = asyncio.Event()

        async def on_ring(_: Msg) -> None:
            rung.set()

        if not self._link.connected:
            yield rung
            return
        try:
            subscription = await (await self._link.client()).subscribe(doorbell_subject(customer_id), cb=on_ring)
        except Exception as error:
            log.warning("doorbell unavailable; watching by polling", error=repr(error))
            yield rung
            return
        try:
            yield rung
        finally:
            try:
                await subscription.unsubscribe()
            except Exception as error:  # the connection is gone: so is the subscription
                log.debug("doorbell unsubscribe failed", error=repr(error))
