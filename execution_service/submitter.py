"""Takes an order, and every older order of its customer still waiting, to the exchange in sequence order, with
whatever else its shard has waiting longest (customers side by side, each in sequence order); and a customer's
cancel, on its own.

For each order: claim it (rule 6), check it against the halts again just before its send (one may have landed since
the claim: the order then ends as its halt says, or the venue is asked to cancel it if it may have left before),
submit it, and record what
the exchange said: SUBMITTED (unless a report already moved it further) or REJECTED with the venue's reason. The
message that woke us is only a wake-up; PostgreSQL says what is still to do, so a lost, duplicated or reordered
message can neither skip nor repeat an order.

A send that fails is the order's own business (rule 7): a transient error backs it off, an unknown outcome is asked
of the venue and backs it off, up to a bounded number of attempts before it is parked; either way it holds back its
customer's later orders, and the message is acknowledged so the shard's other customers keep flowing. Only a failure
of the venue as a whole (the circuit breaker) fails the message, which is then retried with nothing recorded.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Protocol

from prometheus_client import Counter, Gauge, Histogram

from brokerage.domain.orders import Order, OrderStatus
from brokerage.domain.submission import (
    CircuitBreaker,
    Park,
    Refused,
    RetryPolicy,
    SubmissionOutcome,
    UnknownOutcome,
    VenueDown,
    VenueUnavailable,
)
from brokerage.exchange_client import ExchangeClient
from brokerage.storage.submissions import SubmissionStore
from brokerage.telemetry import get_logger, log_context

log = get_logger(__name__)

ORDERS_SUBMITTED = Counter("execution_orders_submitted_total", "Orders the exchange acknowledged.")
ORDERS_REFUSED = Counter("execution_orders_refused_total", "Orders the exchange refused (stored REJECTED).")
SEND_FAILURES = Counter(
    "execution_send_failures_total",
    "Sends of an order that failed, by the venue's code and what became of the order (retry, parked).",
    ("code", "outcome"),
)
BREAKER_OPEN = Gauge("execution_venue_breaker_open", "1 while the circuit breaker stops all sending to the venue.")
CANCELS_SENT = Counter("execution_cancels_sent_total", "Cancels taken to the exchange, by its answer.", ("answer",))
PLACED_TO_SUBMITTED = Histogram(
    "execution_placed_to_submitted_seconds",
    "From an order's placement to the record of the exchange's acknowledgement.",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
# Order ids a worker process remembers as recorded: far more than the messages of one claim's orders still queued.
REMEMBERED = 100_000
CUSTOMER_CANCEL = "canceled by the customer"


class HaltGate(Protocol):
    """The check just before each send (execution_service.halts.HaltWatch): the claimed orders a halt keeps back."""

    async def keep_back(self, orders: Sequence[Order]) -> dict[str, str]: ...


class RecentIds:
    """The last `capacity` ids added, the least recently added forgotten first."""

    def __init__(self, capacity: int) -> None:
        self._capacity = capacity
        self._ids: OrderedDict[str, None] = OrderedDict()

    def add(self, id_: str) -> None:
        self._ids[id_] = None
        self._ids.move_to_end(id_)
        if len(self._ids) > self._capacity:
            self._ids.popitem(last=False)

    def clear(self) -> None:
        self._ids.clear()

    def __contains__(self, id_: object) -> bool:
        return id_ in self._ids


class Submitter:
    def __init__(
        self,
        store: SubmissionStore,
        exchange: ExchangeClient,
        policy: RetryPolicy,
        breaker: CircuitBreaker,
        halts: HaltGate,
        *,
        remembered: int = REMEMBERED,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._store = store
        self._exchange = exchange
        self._policy = policy
        self._breaker = breaker
        self._halts = halts
        self._now = now
        self._recorded = RecentIds(remembered)  # orders whose exchange answer this process recorded

    async def submit_through(self, order_id: str, customer_id: str, touched: set[str] | None = None) -> int:
        """Submits the customer's waiting orders up to and including order_id, and the other waiting orders of the
        shard that the claim takes with them: each customer's oldest first, the customers side by side. Returns
        how many were claimed; `touched` gathers the customers whose orders were recorded (their watchers have news).

        An order this process has recorded needs nothing more: its message only woke us for what an earlier claim
        already took, so it is answered without a round trip to the database.

        A customer whose send failed is left backing off or parked, its later orders waiting behind it; the others go
        on. Raises VenueDown while the venue fails as a whole (the breaker), ShardPaused, or Unavailable, with the rest
        left for the next attempt: each order done stays done, and one claimed but not recorded is submitted again
        (the exchange dedupes).
        """
        if self.has_recorded(order_id):
            return 0
        if self._breaker.cooling_down(self._now()):  # nothing would go: no claim either
            raise VenueDown("BREAKER_OPEN", f"circuit breaker open: {self._breaker.reason}")
        orders = await self._store.claim_for_submission(order_id, customer_id)
        by_customer: dict[str, list[Order]] = {}
        for order in orders:
            by_customer.setdefault(order.customer_id, []).append(order)
        outcomes = await asyncio.gather(
            *(self._submit_in_sequence(waiting, touched) for waiting in by_customer.values()), return_exceptions=True
        )
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                raise outcome  # the first customer's failure; the others' orders that went are recorded
        return len(orders)

    def has_recorded(self, order_id: str) -> bool:
        """Whether this process recorded the exchange's answer to the order (of the last REMEMBERED it did)."""
        return order_id in self._recorded

    def forget_recorded(self) -> None:
        """After the database was away, what this process recorded may not have committed: ask it again."""
        self._recorded.clear()

    async def _submit_in_sequence(self, orders: list[Order], touched: set[str] | None) -> None:
        """One customer's orders, oldest first: one that is not done (backing off, parked) stops those after it."""
        for order in orders:
            with log_context(order_id=order.order_id, customer_id=order.customer_id):
                kept = (await self._halts.keep_back([order])).get(order.order_id)
                if kept == "cancel_requested":  # it may have left before: the venue is asked to cancel it
                    await self.cancel(order.order_id, touched)
                done = kept is not None or await self._submit(order)  # kept: ended, or its cancel asked
            if not done:
                return
            self._recorded.add(order.order_id)
            if touched is not None:
                touched.add(order.customer_id)

    async def _submit(self, order: Order) -> bool:
        """Sends the order and records the venue's answer; whether the order is done with (recorded SUBMITTED or
        REJECTED), False when it backs off or was parked."""
        if order.expires_at is not None and order.expires_at <= self._now():
            log.info("order expired before it was sent; left for the expiry")  # rule 10: never sent late
            return False
        self._stop_if_venue_down()
        try:
            outcome = await self._exchange.submit(order)
        except VenueUnavailable as error:
            known = await self._after_failure(order, error)
            if known is None:
                return False
            outcome = known
        self._breaker.succeeded()
        BREAKER_OPEN.set(0)
        await self._record(order, outcome)
        return True

    async def _after_failure(self, order: Order, error: VenueUnavailable) -> SubmissionOutcome | None:
        """What to make of a failed send: the venue's own word, if asked it has one (an unknown outcome), or else the
        order backs off or is parked, unless the failure shows the venue failing as a whole (then VenueDown)."""
        if isinstance(error, UnknownOutcome):
            try:
                if (known := await self._exchange.outcome_of(order.order_id)) is not None:
                    return known
            except VenueUnavailable as asking:
                log.warning("the venue cannot say what became of the order", error=str(asking))
        now = self._now()
        if self._breaker.failed(error, order.customer_id, now):
            BREAKER_OPEN.set(1)
            log.error("circuit breaker open: nothing goes to the venue", reason=self._breaker.reason)
            raise VenueDown(error.code, f"circuit breaker open: {self._breaker.reason}") from error
        unknown = order.unknown_outcomes + isinstance(error, UnknownOutcome)
        decision = self._policy.after(error, order.submit_attempts + 1, unknown, now)
        retry_at = None if isinstance(decision, Park) else decision.moment
        await self._store.record_failure(order, error, retry_at)
        SEND_FAILURES.labels(error.code, "parked" if retry_at is None else "retry").inc()
        if retry_at is None:
            log.error("order parked as a break: its outcome stayed unknown", unknown_outcomes=unknown)
        else:
            log.warning("order send failed; it will be retried", error=str(error), retry_at=retry_at.isoformat())
        return None

    def _stop_if_venue_down(self) -> None:
        if not self._breaker.allows(self._now()):
            raise VenueDown("BREAKER_OPEN", f"circuit breaker open: {self._breaker.reason}")

    async def _record(self, order: Order, outcome: SubmissionOutcome) -> None:
        if isinstance(outcome, Refused):
            await self._store.record_venue_rejection(order, outcome.reason)
            ORDERS_REFUSED.inc()
            log.info("order refused by the exchange", reason=outcome.reason)
            return
        recorded = await self._store.record_submitted(order, outcome.venue_order_id)
        ORDERS_SUBMITTED.inc()
        if recorded is not None and recorded.status is OrderStatus.SUBMITTED:
            PLACED_TO_SUBMITTED.observe((self._now() - order.created_at).total_seconds())
        log.info(
            "order submitted",
            venue_order_id=outcome.venue_order_id,
            sequence=order.sequence,
            resubmitted=outcome.duplicate,
            status=recorded.status.value if recorded else None,
        )

    async def cancel(self, order_id: str, touched: set[str] | None = None) -> None:
        """Takes a customer's cancel of an order a worker has taken to the venue (rule 9). Nothing is sent first: the
        venue either cancels what it has (its reports end the order, and a fill may win) or answers that it never
        received the order, keeping a tombstone that refuses it today, and only then the order ends here. While the
        venue is away the order stays cancel-requested (VenueUnavailable: the message is retried)."""
        order = await self._store.pending_cancel(order_id)
        if order is None:
            return
        with log_context(order_id=order.order_id, customer_id=order.customer_id):
            answer = await self._exchange.cancel(order_id)
            if answer.never_received:
                await self._store.end_unsent(order_id, order.cancel_reason or CUSTOMER_CANCEL)
                if touched is not None:
                    touched.add(order.customer_id)
            else:
                await self._store.record_cancel_sent(order_id)
            verdict = "never received" if answer.never_received else "accepted" if answer.accepted else "refused"
            CANCELS_SENT.labels(verdict).inc()
            log.info("cancel sent to the exchange", answer=verdict, reason=answer.reason)
