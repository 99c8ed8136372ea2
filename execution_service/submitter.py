"""Takes an order, and every older order of its customer still waiting, to the exchange in sequence order, with
whatever else its shard has waiting longest (customers side by side, each in sequence order); and a customer's
cancel, after them.

For each: claim it (rule 6), submit it, and record what the exchange said: SUBMITTED (unless a report already
moved it further) or REJECTED with the venue's reason. The message that woke us is only a wake-up; PostgreSQL
says what is still to do, so a lost, duplicated or reordered message can neither skip nor repeat an order.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from datetime import UTC, datetime

from prometheus_client import Counter, Histogram

from brokerage.domain.orders import Order, OrderStatus
from brokerage.domain.submission import Refused
from brokerage.exchange_client import ExchangeClient
from brokerage.storage.submissions import SubmissionStore
from brokerage.telemetry import get_logger, log_context

log = get_logger(__name__)

ORDERS_SUBMITTED = Counter("execution_orders_submitted_total", "Orders the exchange acknowledged.")
ORDERS_REFUSED = Counter("execution_orders_refused_total", "Orders the exchange refused (stored REJECTED).")
CANCELS_SENT = Counter("execution_cancels_sent_total", "Cancels taken to the exchange, by its answer.", ("answer",))
PLACED_TO_SUBMITTED = Histogram(
    "execution_placed_to_submitted_seconds",
    "From an order's placement to the record of the exchange's acknowledgement.",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
# Order ids a worker process remembers as recorded: far more than the messages of one claim's orders still queued.
REMEMBERED = 100_000


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

    def __contains__(self, id_: object) -> bool:
        return id_ in self._ids


class Submitter:
    def __init__(self, store: SubmissionStore, exchange: ExchangeClient, *, remembered: int = REMEMBERED) -> None:
        self._store = store
        self._exchange = exchange
        self._recorded = RecentIds(remembered)  # orders whose exchange answer this process recorded

    async def submit_through(self, order_id: str, customer_id: str, touched: set[str] | None = None) -> int:
        """Submits the customer's waiting orders up to and including order_id, and the other waiting orders of the
        shard that the claim takes with them: each customer's oldest first, the customers side by side. Returns
        how many; `touched` gathers the customers whose orders were recorded (their watchers have news).

        An order this process has recorded needs nothing more: its message only woke us for what an earlier claim
        already took, so it is answered without a round trip to the database.

        Raises ShardPaused, VenueUnavailable or Unavailable with the rest left for the next attempt: each order
        already done stays done, and one claimed but not recorded is submitted again (the exchange dedupes).
        """
        if self.has_recorded(order_id):
            return 0
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

    async def _submit_in_sequence(self, orders: list[Order], touched: set[str] | None) -> None:
        """One customer's orders, oldest first: one that fails stops those after it (rule 5)."""
        for order in orders:
            with log_context(order_id=order.order_id, customer_id=order.customer_id):
                await self._submit(order)
            self._recorded.add(order.order_id)
            if touched is not None:
                touched.add(order.customer_id)

    async def cancel_through(self, order_id: str, customer_id: str, touched: set[str] | None = None) -> None:
        """Takes a customer's cancel to the exchange: first anything of the customer still waiting up to the order
        (so the cancel never overtakes the order itself), then the cancel, unless the order ended meanwhile."""
        await self.submit_through(order_id, customer_id, touched)
        order = await self._store.pending_cancel(order_id)
        if order is None:
            return
        with log_context(order_id=order.order_id, customer_id=order.customer_id):
            answer = await self._exchange.cancel(order_id)
            await self._store.record_cancel_sent(order_id)
            CANCELS_SENT.labels("accepted" if answer.accepted else "refused").inc()
            log.info("cancel sent to the exchange", accepted=answer.accepted, reason=answer.reason)

    async def _submit(self, order: Order) -> None:
        outcome = await self._exchange.submit(order)
        if isinstance(outcome, Refused):
            await self._store.record_venue_rejection(order, outcome.reason)
            ORDERS_REFUSED.inc()
            log.info("order refused by the exchange", reason=outcome.reason)
            return
        recorded = await self._store.record_submitted(order, outcome.venue_order_id)
        ORDERS_SUBMITTED.inc()
        if recorded is not None and recorded.status is OrderStatus.SUBMITTED:
            PLACED_TO_SUBMITTED.observe((datetime.now(UTC) - order.created_at).total_seconds())
        log.info(
            "order submitted",
            venue_order_id=outcome.venue_order_id,
            sequence=order.sequence,
            resubmitted=outcome.duplicate,
            status=recorded.status.value if recorded else None,
        )
