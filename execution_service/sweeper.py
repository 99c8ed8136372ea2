"""The sweeper: PostgreSQL is the record, and it re-drives what the messages and reports left behind (rule 4).

- An order PLACED (or a cancel asked) too long ago has lost its wake-up (a message lost with a NATS failure, or
  terminated): it is published again on its shard, under a message id of its own (the first id would fall in the
  stream's duplicate window and be dropped); a worker that finds it already done just acknowledges it.
- An order at the exchange and silent too long is asked about, with its reports sent again to CallbackService.
- An order whose retry has come due (rule 7) gets a wake-up of its own, whose claim lifts its customer's hold.
- A DAY order still waiting at its expiry (rule 10) ends: one no worker took is canceled as expired at once; one a
  worker took (or parked) only after the grace, once the venue, asked to cancel it, says it never received it (its
  tombstone refuses the order from then on). The venue's own close ends what it has.
- A halt set with cancel_open_orders has a cancel job per shard: its orders open when it was set are canceled, at
  once where no worker took them, else through a cancel request to the venue (this loop runs at the halts' pace).

Safe with any number of replicas: each order is taken by one sweeper at a time (row locks, SKIP LOCKED), and
re-driven at most once per interval. Paused shards are left alone, and busy ones are given longer: their orders
may only be queued, and republishing them would double a backlog.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import TypeVar

from nats.js import JetStreamContext
from prometheus_client import Counter

from brokerage.background import stop_requested
from brokerage.domain.sharding import subject_for_shard
from brokerage.exchange_client import ExchangeClient
from brokerage.messaging.connection import JetStreamLink
from brokerage.messaging.consumers import shard_backlogs
from brokerage.messaging.doorbell import Doorbell
from brokerage.messaging.messages import MessageType, encode_cancel_requested, encode_order_placed
from brokerage.messaging.publishing import Publication, publish_all
from brokerage.storage.submissions import SubmissionStore
from brokerage.storage.sweeps import HaltCancel, SweepStore, SweepWindow, UnsentCancel, UnsentOrder
from brokerage.telemetry import get_logger, log_context

log = get_logger(__name__)

REPUBLISHED = Counter(
    "execution_sweeper_republished_total", "Wake-ups published again: orders PLACED, or cancels asked, too long ago."
)
ASKED = Counter("execution_sweeper_status_queries_total", "Silent orders the exchange was asked about.")
UNKNOWN_AT_EXCHANGE = Counter(
    "execution_sweeper_unknown_at_exchange_total", "Orders we recorded as submitted that the exchange does not know."
)
EXPIRED = Counter(
    "execution_orders_expired_total", "DAY orders ended at their expiry, by whether a worker took them.", ("claimed",)
)
HALT_CANCELS = Counter(
    "execution_halt_cancels_total",
    "Orders a halt's cancel job reached: canceled at once, or their cancel requested of the venue.",
    ("outcome",),
)
BATCH_LIMIT = 500
HALT_CANCEL_BATCH = 200  # orders of one shard's job per transaction
EXPIRED_UNSENT = "expired: the session ended before the order reached the exchange"
EXPIRED_AT_CLOSE = "expired: the session ended; the exchange never received the order"
Due = TypeVar("Due", UnsentOrder, UnsentCancel)


@dataclass(frozen=True)
class SweepPolicy:
    interval: float
    republish_after: timedelta
    republish_busy_after: timedelta
    ask_after: timedelta
    publish_timeout: float
    expiry_grace: timedelta


class Sweeper:
    def __init__(
        self,
        store: SweepStore,
        submissions: SubmissionStore,
        link: JetStreamLink,
        exchange: ExchangeClient,
        doorbell: Doorbell,
        shards: tuple[int, ...],
        policy: SweepPolicy,
    ) -> None:
        self._store = store
        self._submissions = submissions
        self._link = link
        self._exchange = exchange
        self._doorbell = doorbell
        self._shards = shards
        self._policy = policy

    async def run(self) -> None:
        """Sweeps every interval until cancelled; a failed sweep is logged and tried again next time."""
        while not stop_requested():
            await asyncio.sleep(self._policy.interval)
            # Each goes on while another cannot (the exchange or NATS away).
            for sweep in (
                self.expire_day_orders,
                self.ask_about_silent,
                self.republish_unsent,
                self.republish_unsent_cancels,
                self.ring_due_retries,
            ):
                try:
                    await sweep()
                except Exception as error:
                    log.warning("sweep failed", sweep=sweep.__name__, error=repr(error))

    async def follow_halt_cancels(self, interval: float) -> None:
        """Works the owned shards' halt cancel jobs every interval until cancelled (a kill switch's cancels must not
        wait for the slower sweeps)."""
        while not stop_requested():
            try:
                while await self.cancel_for_halts() >= HALT_CANCEL_BATCH:
                    pass  # more in scope
            except Exception as error:
                log.warning("halt cancels failed", error=repr(error))
            await asyncio.sleep(interval)

    async def cancel_for_halts(self) -> int:
        """One batch of the halt cancel jobs: canceled at once, or a cancel request published for the worker to
        take to the venue (the unsent-cancel sweep re-drives one whose message is lost). Returns how many."""
        reached = await self._store.cancel_for_halts(self._shards, HALT_CANCEL_BATCH)
        if not reached:
            return 0
        requests = [_halt_cancel(item) for item in reached if item.outcome == "requested"]
        if requests and self._link.connected:
            js = await self._link.jetstream()
            await publish_all(js, requests, self._policy.publish_timeout)
        for item in reached:
            HALT_CANCELS.labels(item.outcome).inc()
            log.warning(
                "order canceled by a halt", order_id=item.order_id, customer_id=item.customer_id, outcome=item.outcome
            )
        await self._doorbell.ring(sorted({item.customer_id for item in reached}))
        return len(reached)

    async def republish_unsent(self) -> int:
        """Publishes again the orders PLACED too long. They are marked swept first: should publishing fail, they
        are due again after the window's limit."""
        if not self._link.connected:  # nothing to publish with; a first connect would wait here without end
            return 0
        js = await self._link.jetstream()
        due = await self._store.unsent_placed(await self._window(js), BATCH_LIMIT)
        return await self._republish(js, due, _wake_up, "order placed long ago published again")

    async def republish_unsent_cancels(self) -> int:
        """Publishes again the cancels asked long ago and not sent, likewise."""
        if not self._link.connected:
            return 0
        js = await self._link.jetstream()
        due = await self._store.unsent_cancels(await self._window(js), BATCH_LIMIT)
        return await self._republish(js, due, _cancel_wake_up, "cancel asked long ago published again")

    async def ring_due_retries(self) -> int:
        """Publishes a wake-up for each order whose backoff is over; its claim lifts its customer's hold."""
        if not self._link.connected:
            return 0
        js = await self._link.jetstream()
        due = await self._store.due_retries(self._shards, self._policy.republish_after, BATCH_LIMIT)
        return await self._republish(js, due, _retry_wake_up, "order whose retry is due woken")

    async def expire_day_orders(self) -> int:
        """Ends the DAY orders still waiting at their expiry (rule 10); returns how many ended."""
        expired = await self._store.expire_unclaimed(self._shards, EXPIRED_UNSENT, BATCH_LIMIT)
        EXPIRED.labels("false").inc(len(expired))
        ended = [o.customer_id for o in expired]
        for order in await self._store.expired_claimed(
            self._shards, self._policy.expiry_grace, self._policy.republish_after, BATCH_LIMIT
        ):
            with log_context(order_id=order.order_id, customer_id=order.customer_id):
                answer = await self._exchange.cancel(order.order_id)
                if answer.never_received:
                    if await self._submissions.end_unsent(order.order_id, EXPIRED_AT_CLOSE) is not None:
                        EXPIRED.labels("true").inc()
                        ended.append(order.customer_id)
                else:  # the venue has it: its close cancels what it still works, and its report ends the order
                    log.info("expired order is the venue's to end", accepted=answer.accepted, reason=answer.reason)
        for order in expired:
            log.info("order expired unsent", order_id=order.order_id, customer_id=order.customer_id)
        if ended:
            await self._doorbell.ring(ended)
        return len(ended)

    async def _window(self, js: JetStreamContext) -> SweepWindow:
        """A shard with nothing waiting and nothing in flight has lost the wake-up of any order still waiting; a
        busy one is given longer, so a backlog is not doubled by republishing what is only queued."""
        backlogs = await shard_backlogs(js)
        idle = tuple(shard for shard in self._shards if backlogs.get(shard, 0) == 0)
        return SweepWindow(self._shards, idle, self._policy.republish_after, self._policy.republish_busy_after)

    async def _republish(
        self,
        js: JetStreamContext,
        due: list[Due],
        wake_up: Callable[[Due], Publication],
        event: str,
    ) -> int:
        await publish_all(js, [wake_up(item) for item in due], self._policy.publish_timeout)
        for item in due:
            log.warning(event, order_id=item.order_id, customer_id=item.customer_id)
        REPUBLISHED.inc(len(due))
        return len(due)

    async def ask_about_silent(self) -> int:
        """Asks the exchange about orders silent too long, and to send their reports again."""
        order_ids = await self._store.silent_at_exchange(self._shards, self._policy.ask_after, BATCH_LIMIT)
        for order_id in order_ids:
            with log_context(order_id=order_id):
                status = await self._exchange.order_status(order_id, resend_reports=True)
                ASKED.inc()
                if not status.known:  # a break for an operator: we hold it as at the exchange, the exchange does not
                    UNKNOWN_AT_EXCHANGE.inc()
                    log.error("the exchange does not know an order recorded as submitted")
                else:
                    log.info("silent order asked about", venue_status=status.status, filled=status.cumulative_quantity)
        return len(order_ids)


def _wake_up(order: UnsentOrder) -> Publication:
    payload = encode_order_placed(
        order_id=order.order_id,
        customer_id=order.customer_id,
        symbol=order.symbol,
        side=order.side,
        quantity=order.quantity,
        protection_price=order.protection_price,
        shard=order.shard,
    )
    return Publication(subject_for_shard(order.shard), payload, dedupe_id=f"{order.order_id}:sweep:{order.sweep_count}")


def _retry_wake_up(order: UnsentOrder) -> Publication:
    wake_up = _wake_up(order)
    return Publication(wake_up.subject, wake_up.payload, dedupe_id=f"{order.order_id}:retry:{order.sweep_count}")


def _halt_cancel(item: HaltCancel) -> Publication:
    """As the customer's cancel request: one per order (its cancel_requested_at was unset), the same message id."""
    return Publication(
        subject_for_shard(item.shard),
        encode_cancel_requested(order_id=item.order_id, customer_id=item.customer_id, shard=item.shard),
        dedupe_id=f"{item.order_id}:cancel",
        message_type=MessageType.CANCEL_REQUESTED,
    )


def _cancel_wake_up(cancel: UnsentCancel) -> Publication:
    payload = encode_cancel_requested(order_id=cancel.order_id, customer_id=cancel.customer_id, shard=cancel.shard)
    return Publication(
        subject_for_shard(cancel.shard),
        payload,
        dedupe_id=f"{cancel.order_id}:cancel:sweep:{cancel.sweep_count}",
        message_type=MessageType.CANCEL_REQUESTED,
    )
