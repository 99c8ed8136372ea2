"""One shard's worker: pulls the shard's messages one at a time and takes each order to the exchange.

Every replica of the cluster runs one per owned shard on the same durable consumer; JetStream hands each message
to one of them and lets no second message of the shard out until the first is acknowledged (MaxAckPending 1).
A message is acknowledged once the database records what became of its customer's orders: sent, or backing off or
parked after a failed send (their retry state is theirs, in PostgreSQL), so one customer never holds the shard. A
failure of the venue as a whole (the circuit breaker) or of the database is a `nak(delay)`, which keeps the shard's
slot so nothing overtakes it; a malformed message is terminated and logged, never redelivered for ever. A worker
that dies holding a message stops reporting progress, and JetStream gives the message to another replica once
AckWait passes; a worker whose work on a message outlasts its limit abandons it and naks, so a stuck await cannot
hold the shard behind its progress reports.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from functools import partial

import nats.errors
from google.protobuf.message import DecodeError
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from prometheus_client import Counter

from brokerage.background import Backoff, stop_requested
from brokerage.domain.errors import Unavailable
from brokerage.domain.sharding import shard_for
from brokerage.domain.submission import ShardPaused, VenueUnavailable
from brokerage.messaging.connection import JetStreamLink
from brokerage.messaging.consumers import ensure_shard_consumer, shard_consumer_name
from brokerage.messaging.doorbell import Doorbell
from brokerage.messaging.messages import MessageType, WakeUp, decode_wake_up
from brokerage.messaging.streams import ORDERS_STREAM
from brokerage.telemetry import get_logger, log_context
from execution_service.shards import ShardBoard
from execution_service.submitter import Submitter

log = get_logger(__name__)

MESSAGES = Counter("execution_messages_total", "Order messages handled, by outcome.", ("shard", "outcome"))
# An ack, nak or progress report is a publish: on a connection that is reconnecting it could wait without end,
# holding the shard. Past this it counts as lost, and JetStream redelivers the message (the record decides).
REPLY_TIMEOUT_SECONDS = 2.0


class MalformedMessage(ValueError):
    """A message no attempt can ever handle."""


@dataclass(frozen=True)
class Answer:
    """What becomes of a message once its work is over: its outcome, the reply to JetStream (ack, nak or term),
    and the customers whose watchers to ring."""

    outcome: str
    reply: Callable[[], Awaitable[None]]
    ring: frozenset[str] = frozenset()


class WorkOverran(Exception):
    """A message's work outlasted its limit; it was abandoned, to be tried again (the record says what is done)."""


class ShardWorker:
    def __init__(
        self,
        shard: int,
        *,
        shard_count: int,
        link: JetStreamLink,
        submitter: Submitter,
        doorbell: Doorbell,
        board: ShardBoard,
        ack_wait: float,
        fetch_timeout: float,
        work_limit: float,
        backoff: Backoff,
        manage_consumer: bool = True,
    ) -> None:
        self.shard = shard
        self._shard_count = shard_count
        self._link = link
        self._submitter = submitter
        self._doorbell = doorbell
        self._board = board
        self._ack_wait = ack_wait
        self._fetch_timeout = fetch_timeout
        self._work_limit = work_limit
        self._backoff = backoff
        self._manage_consumer = manage_consumer  # else the consumer is the setup Job's to make: bind to it alone
        self._subscription: JetStreamContext.PullSubscription | None = None

    async def run(self) -> None:
        """Works the shard until cancelled; a message in hand when cancelled is finished first."""
        try:
            await self._work()
        finally:
            # A message delivered after the last fetch expired waits in the subscription's queue; unsubscribing
            # leaves it to another replica (after AckWait) instead of holding up the connection's drain.
            await self._drop_subscription()

    async def _work(self) -> None:
        failures = 0
        while not stop_requested():
            if self._board.is_paused(self.shard):
                await asyncio.sleep(self._fetch_timeout)
                continue
            try:
                message = await self._next_message()
            except Exception as error:
                failures += 1
                log.warning("cannot pull the shard's messages", shard=self.shard, error=repr(error))
                await self._drop_subscription()
                await asyncio.sleep(self._backoff.delay(failures))
                continue
            failures = 0
            if message is not None:
                await self._handle_and_answer(message)

    async def _next_message(self) -> Msg | None:
        if self._subscription is None:
            js = await self._link.jetstream()
            if self._manage_consumer:
                await ensure_shard_consumer(js, self.shard, self._ack_wait)
            self._subscription = await js.pull_subscribe_bind(
                consumer=shard_consumer_name(self.shard), stream=ORDERS_STREAM
            )
        try:
            messages = await self._subscription.fetch(1, timeout=self._fetch_timeout)
        except nats.errors.TimeoutError:
            return None  # nothing waiting
        return messages[0]

    async def _handle_and_answer(self, message: Msg) -> None:
        """Works the message to its end even if our task is cancelled meanwhile (a shutdown), answers it, then lets
        the cancellation through: an order claimed and submitted is recorded and its message answered, not left to
        AckWait. The answer is sent here, not in the work's task, so that the doorbell ring, the answer and the next
        message's pull request leave on one socket write (each write costs the worker and the NATS server alike)."""
        try:
            wake_up = self._decode(message)
        except MalformedMessage as error:
            log.error("malformed order message terminated", shard=self.shard, subject=message.subject, error=str(error))
            await self._send(Answer("terminated", message.term))
            return
        if wake_up.kind is MessageType.ORDER_PLACED and self._submitter.has_recorded(wake_up.order_id):
            await self._send(Answer("done", message.ack))  # an earlier claim took it: no work, no task, no timer
            return
        work = asyncio.create_task(self._handle(message, wake_up))
        try:
            answer = await asyncio.shield(work)
        except asyncio.CancelledError:
            await self._send(await work)
            raise
        await self._send(answer)

    async def _handle(self, message: Msg, wake_up: WakeUp) -> Answer:
        with log_context(order_id=wake_up.order_id, customer_id=wake_up.customer_id, shard=self.shard):
            touched: set[str] = set()  # whatever happens, what was recorded before it is news to watchers
            try:
                async with _reporting_progress(message, every=self._ack_wait / 3):
                    await self._work_on(wake_up, touched)
            except ShardPaused:
                return Answer("paused", partial(message.nak, delay=self._fetch_timeout))
            except (VenueUnavailable, Unavailable) as error:
                if isinstance(error, Unavailable):  # what this process recorded may not have committed
                    self._submitter.forget_recorded()
                delay = self._backoff.delay(message.metadata.num_delivered)
                log.warning("message will be retried", error=str(error), retry_in=round(delay, 3))
                return Answer("retried", partial(message.nak, delay=delay), frozenset(touched))
            except Exception:
                delay = self._backoff.delay(message.metadata.num_delivered)
                log.exception("order failed unexpectedly; it will be retried", retry_in=round(delay, 3))
                return Answer("failed", partial(message.nak, delay=delay), frozenset(touched))
            return Answer("done", message.ack, frozenset(touched))

    async def _send(self, answer: Answer) -> None:
        if answer.ring:
            await self._doorbell.ring(answer.ring)
        await self._settle(answer.outcome, answer.reply())

    async def _work_on(self, wake_up: WakeUp, touched: set[str]) -> None:
        """The message's work, within its limit. Every call in it has a deadline of its own; this one catches an
        await that is stuck all the same, which would otherwise hold the shard while the progress reports go on."""
        limit = asyncio.timeout(self._work_limit)
        try:
            async with limit:
                if wake_up.kind is MessageType.CANCEL_REQUESTED:
                    touched.add(wake_up.customer_id)
                    await self._submitter.cancel(wake_up.order_id, touched)
                else:
                    await self._submitter.submit_through(wake_up.order_id, wake_up.customer_id, touched)
        except TimeoutError as error:
            if limit.expired():
                raise WorkOverran(f"the message's work took over {self._work_limit:g} s; abandoned") from error
            raise

    def _decode(self, message: Msg) -> WakeUp:
        try:
            wake_up = decode_wake_up(message.data, message.headers)
        except (DecodeError, ValueError) as error:
            raise MalformedMessage(f"not an order message: {error}") from error
        if not wake_up.order_id or not wake_up.customer_id:
            raise MalformedMessage(f"a {wake_up.kind} message without order_id or customer_id")
        owner = shard_for(wake_up.customer_id, self._shard_count)
        if owner != self.shard:  # a customer's orders on two shards could be worked at once, out of order
            raise MalformedMessage(f"order {wake_up.order_id} belongs to shard {owner}")
        return wake_up

    async def _settle(self, outcome: str, reply: Awaitable[None]) -> None:
        """Sends the ack, nak or term; if it is lost the message comes back, and the record says it is done."""
        MESSAGES.labels(str(self.shard), outcome).inc()
        try:
            async with asyncio.timeout(REPLY_TIMEOUT_SECONDS):
                await reply
        except Exception as error:
            log.warning("message reply lost; it will be redelivered", outcome=outcome, error=repr(error))

    async def _drop_subscription(self) -> None:
        subscription, self._subscription = self._subscription, None
        if subscription is not None:
            with suppress(Exception):
                await subscription.unsubscribe()


@asynccontextmanager
async def _reporting_progress(message: Msg, *, every: float) -> AsyncIterator[None]:
    """Tells JetStream the message is still being worked on, so a slow exchange does not look like a dead worker."""

    async def beat() -> None:
        while True:
            await asyncio.sleep(every)
            with suppress(Exception):
                async with asyncio.timeout(REPLY_TIMEOUT_SECONDS):
                    await message.in_progress()

    heartbeat = asyncio.create_task(beat())
    try:
        yield
    finally:
        heartbeat.cancel()
