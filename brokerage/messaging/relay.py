"""The outbox relay: publishes committed messages to JetStream and removes them from the outbox once JetStream has
them. The orders' outbox has one in every OrderService replica, the post-trade feed's one in every CallbackService.

Any number of relays may run (one per OrderService replica): each claims its own rows with SKIP LOCKED,
and a message published twice (a relay died between the ack and its commit) is dropped by JetStream's
duplicate window, keyed by Nats-Msg-Id. While NATS is down messages wait in the outbox.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from prometheus_client import Counter, Histogram

from brokerage.background import stop_requested
from brokerage.messaging.connection import JetStreamLink
from brokerage.messaging.publishing import publish_all
from brokerage.messaging.streams import ShardCountMismatch
from brokerage.storage.outbox import Outbox
from brokerage.telemetry import get_logger

log = get_logger(__name__)


@dataclass(frozen=True)
class RelayMetrics:
    published: Counter
    failures: Counter
    batch_size: Histogram

    @classmethod
    def named(cls, prefix: str, what: str) -> RelayMetrics:
        return cls(
            Counter(f"{prefix}_messages_published_total", f"{what} JetStream acknowledged"),
            Counter(f"{prefix}_publish_failures_total", f"{what}: batches that failed to publish"),
            Histogram(f"{prefix}_batch_size", f"{what} per published batch", buckets=(1, 5, 20, 100, 500)),
        )


ORDERS_OUTBOX = RelayMetrics.named("outbox", "Outbox messages")
EXECUTION_FEED = RelayMetrics.named("execution_feed", "Post-trade feed messages")

MAX_BACKOFF_SECONDS = 2.0


class OutboxRelay:
    def __init__(
        self,
        outbox: Outbox,
        link: JetStreamLink,
        *,
        batch_size: int,
        poll_seconds: float,
        publish_timeout: float,
        metrics: RelayMetrics = ORDERS_OUTBOX,
    ) -> None:
        self._outbox = outbox
        self._link = link
        self._batch_size = batch_size
        self._poll_seconds = poll_seconds
        self._publish_timeout = publish_timeout
        self._metrics = metrics
        self._wakeup = asyncio.Event()

    def wake(self) -> None:
        """Called after a commit that added to the outbox, so the message goes out without waiting a poll."""
        self._wakeup.set()

    async def run(self) -> None:
        """Relays until cancelled. Transient failures back off and retry; a shard count mismatch is fatal."""
        backoff = 0.05
        while not stop_requested():
            try:
                if await self.relay_batch() == self._batch_size:
                    continue  # more are waiting
                backoff = 0.05
                await self._wait_for_work()
            except ShardCountMismatch:
                raise
            except Exception as error:
                self._metrics.failures.inc()
                log.warning("outbox relay failed; retrying", error=repr(error), retry_in=backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF_SECONDS)

    async def relay_batch(self) -> int:
        """Publishes one batch of pending messages in outbox order; returns how many."""
        js = await self._link.jetstream()
        async with self._outbox.publishing(self._batch_size) as messages:
            if not messages:
                return 0
            await publish_all(js, messages, self._publish_timeout)
        self._metrics.published.inc(len(messages))
        self._metrics.batch_size.observe(len(messages))
        return len(messages)

    async def _wait_for_work(self) -> None:
        # The poll is a timer that sets the same event, not a timeout around the wait: in Python 3.11 both
        # asyncio.wait_for and asyncio.timeout can swallow a cancellation that meets their own expiry, and the
        # relay would then outlive its shutdown.
        timer = asyncio.get_running_loop().call_later(self._poll_seconds, self._wakeup.set)
        try:
            await self._wakeup.wait()
        finally:
            timer.cancel()
            self._wakeup.clear()
