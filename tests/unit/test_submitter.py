"""The worker's submitter with an in-memory record and exchange: what a claim returns goes to the exchange, each
customer's orders in sequence and customers side by side; a failed send is its order's own business (backing off,
asked about, parked), a venue failing as a whole stops everything, a cancel sends nothing first, and a message for
an order already recorded costs no round trip to the database."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from brokerage.domain.orders import Order, OrderStatus
from brokerage.domain.submission import (
    Accepted,
    CircuitBreaker,
    RetryPolicy,
    SubmissionOutcome,
    TransientVenueError,
    UnknownOutcome,
    VenueDown,
    VenueUnavailable,
)
from brokerage.exchange_client import CancelAnswer
from execution_service.submitter import CUSTOMER_CANCEL, RecentIds, Submitter
from tests.factories import placed_order

NOW = datetime(2026, 12, 4, 15, 0, tzinfo=UTC)
POLICY = RetryPolicy(initial=timedelta(seconds=1), maximum=timedelta(seconds=30), unknown_attempts=3)


class Record:
    """The database as the submitter sees it: a claim takes whatever waits."""

    def __init__(self, waiting: list[Order]) -> None:
        self.waiting = waiting
        self.claims: list[str] = []
        self.submitted: list[str] = []
        self.failures: list[tuple[str, datetime | None]] = []  # (order, retry_at; None: parked)
        self.ended: list[tuple[str, str]] = []
        self.cancels_sent: list[str] = []
        self.to_cancel: dict[str, Order] = {}

    async def claim_for_submission(self, order_id: str, customer_id: str) -> list[Order]:
        self.claims.append(order_id)
        taken, self.waiting = self.waiting, []
        return taken

    async def record_submitted(self, order: Order, venue_order_id: str) -> Order:
        self.submitted.append(order.order_id)
        return replace(order, status=OrderStatus.SUBMITTED)

    async def record_failure(self, order: Order, error: VenueUnavailable, retry_at: datetime | None) -> Order:
        self.failures.append((order.order_id, retry_at))
        return order

    async def pending_cancel(self, order_id: str) -> Order | None:
        return self.to_cancel.get(order_id)

    async def end_unsent(self, order_id: str, reason: str) -> Order | None:
        self.ended.append((order_id, reason))
        return None

    async def record_cancel_sent(self, order_id: str) -> None:
        self.cancels_sent.append(order_id)


class Exchange:
    """Answers each customer's first order only after the others have arrived, so side-by-side shows in arrivals;
    fails the orders in `failing` with their error; knows (as accepted) the orders in `known` when asked."""

    def __init__(self, failing: dict[str, VenueUnavailable] | None = None) -> None:
        self.arrivals: list[str] = []
        self.failing = failing or {}
        self.known: set[str] = set()
        self.asked: list[str] = []
        self.cancels: list[str] = []
        self.never_received: set[str] = set()

    async def submit(self, order: Order) -> SubmissionOutcome:
        self.arrivals.append(order.order_id)
        await asyncio.sleep(0.01 if order.sequence == 1 else 0)
        if (error := self.failing.get(order.order_id)) is not None:
            raise error
        return Accepted(f"V-{order.order_id}")

    async def outcome_of(self, order_id: str) -> SubmissionOutcome | None:
        self.asked.append(order_id)
        return Accepted(f"V-{order_id}", duplicate=True) if order_id in self.known else None

    async def cancel(self, order_id: str) -> CancelAnswer:
        self.cancels.append(order_id)
        if order_id in self.never_received:
            return CancelAnswer(False, "never received", never_received=True)
        return CancelAnswer(True, "")


class Halts:
    """Keeps back the orders named, as the database would answer for them."""

    def __init__(self, kept: dict[str, str] | None = None) -> None:
        self.kept = kept or {}

    async def keep_back(self, orders: Sequence[Order]) -> dict[str, str]:
        return {o.order_id: self.kept[o.order_id] for o in orders if o.order_id in self.kept}


def submitter(
    record: Record,
    exchange: Exchange,
    breaker: CircuitBreaker | None = None,
    now: datetime = NOW,
    halts: Halts | None = None,
) -> Submitter:
    breaker = breaker or CircuitBreaker(customers=3, window=timedelta(seconds=10), cooldown=timedelta(seconds=5))
    return Submitter(record, exchange, POLICY, breaker, halts or Halts(), now=lambda: now)  # type: ignore[arg-type]


async def test_each_customers_orders_go_in_sequence_and_the_customers_side_by_side() -> None:
    record = Record([placed_order("a1", "A", 1), placed_order("a2", "A", 2), placed_order("b1", "B", 1)])
    exchange = Exchange()
    touched: set[str] = set()

    taken = await submitter(record, exchange).submit_through("a1", "A", touched)

    assert taken == 3
    assert exchange.arrivals == ["a1", "b1", "a2"]  # B's order did not wait behind A's first answer
    assert record.submitted == ["a1", "b1", "a2"]
    assert touched == {"A", "B"}


async def test_a_message_for_an_order_already_recorded_is_answered_without_the_database() -> None:
    record = Record([placed_order("a1", "A", 1), placed_order("b1", "B", 1)])
    sending = submitter(record, Exchange())
    await sending.submit_through("a1", "A")

    assert await sending.submit_through("b1", "B") == 0  # b1 went with a1's claim
    assert record.claims == ["a1"]
    sending.forget_recorded()  # the database was away: what it recorded may not have committed
    assert await sending.submit_through("b1", "B") == 0 and record.claims == ["a1", "b1"]


async def test_a_transient_failure_backs_its_order_off_stops_its_later_orders_and_fails_no_one_else() -> None:
    record = Record([placed_order("a1", "A", 1), placed_order("a2", "A", 2), placed_order("b1", "B", 1)])
    exchange = Exchange({"a1": TransientVenueError("UNAVAILABLE")})

    await submitter(record, exchange).submit_through("a1", "A")  # no error: the message is done

    assert record.submitted == ["b1"]  # a2 waits behind a1; b1 went
    assert record.failures == [("a1", NOW + timedelta(seconds=1))]
    assert exchange.asked == []  # transient: nothing to ask


async def test_an_unknown_outcome_is_asked_of_the_venue_and_what_it_knows_is_recorded() -> None:
    record = Record([placed_order("a1", "A", 1), placed_order("a2", "A", 2)])
    exchange = Exchange({"a1": UnknownOutcome("INTERNAL")})
    exchange.known.add("a1")

    await submitter(record, exchange).submit_through("a1", "A")

    assert exchange.asked == ["a1"] and record.submitted == ["a1", "a2"] and record.failures == []


async def test_an_unknown_outcome_the_venue_cannot_explain_backs_off_then_parks_after_the_attempts() -> None:
    exchange = Exchange({"a1": UnknownOutcome("INTERNAL")})
    failed = []
    for attempts in range(3):  # the claim returns the order with the attempts recorded so far
        record = Record([replace(placed_order("a1", "A", 1), submit_attempts=attempts, unknown_outcomes=attempts)])
        await submitter(record, exchange).submit_through("a1", "A")
        failed += record.failures

    assert failed == [("a1", NOW + timedelta(seconds=1)), ("a1", NOW + timedelta(seconds=2)), ("a1", None)]


async def test_a_venue_wide_error_opens_the_breaker_records_nothing_and_stops_the_next_message() -> None:
    record = Record([placed_order("a1", "A", 1)])
    breaker = CircuitBreaker(customers=3, window=timedelta(seconds=10), cooldown=timedelta(seconds=5))
    sending = submitter(record, Exchange({"a1": VenueDown("PERMISSION_DENIED")}), breaker)

    with pytest.raises(VenueDown):
        await sending.submit_through("a1", "A")
    with pytest.raises(VenueDown):
        await sending.submit_through("b1", "B")

    assert record.failures == [] and record.claims == ["a1"]  # nothing parked, the second never claimed
    assert breaker.is_open and "PERMISSION_DENIED" in breaker.reason


async def test_one_code_across_customers_opens_the_breaker_at_the_third() -> None:
    orders = [placed_order(f"{c}1", c, 1) for c in "ABC"]
    record = Record(orders)
    exchange = Exchange({o.order_id: TransientVenueError("UNAVAILABLE") for o in orders})

    with pytest.raises(VenueDown):
        await submitter(record, exchange).submit_through("A1", "A")

    assert len(record.failures) == 2  # the first two back off; the third finds the venue down, and nothing is parked
    assert all(retry_at is not None for _, retry_at in record.failures)


async def test_an_order_past_its_expiry_is_not_sent() -> None:
    record = Record([replace(placed_order("a1", "A", 1), expires_at=NOW), placed_order("b1", "B", 1)])
    exchange = Exchange()

    await submitter(record, exchange).submit_through("a1", "A")

    assert exchange.arrivals == ["b1"] and record.failures == []  # the expiry ends a1 (rule 10)


async def test_a_cancel_sends_nothing_first_and_ends_an_order_the_venue_never_received() -> None:
    never, known = placed_order("a1", "A", 1), placed_order("a2", "A", 2)
    record = Record([never, known])
    record.to_cancel = {"a1": never, "a2": known}
    exchange = Exchange()
    exchange.never_received.add("a1")
    touched: set[str] = set()
    sending = submitter(record, exchange)

    await sending.cancel("a1", touched)
    await sending.cancel("a2", touched)

    assert exchange.arrivals == [] and exchange.cancels == ["a1", "a2"]
    assert record.ended == [("a1", CUSTOMER_CANCEL)] and record.cancels_sent == ["a2"] and touched == {"A"}


def test_recent_ids_forget_the_oldest_first() -> None:
    recent = RecentIds(2)
    for id_ in ("x", "y", "x", "z"):
        recent.add(id_)
    assert ("x" in recent, "y" in recent, "z" in recent) == (True, False, True)


async def test_transient_failures_do_not_count_towards_parking() -> None:
    exchange = Exchange({"a1": UnknownOutcome("INTERNAL")})
    record = Record([replace(placed_order("a1", "A", 1), submit_attempts=9, unknown_outcomes=1)])

    await submitter(record, exchange).submit_through("a1", "A")

    assert record.failures == [("a1", NOW + timedelta(seconds=30))]  # backed off (at the maximum), not parked


async def test_orders_a_halt_keeps_back_are_not_sent_and_one_that_may_have_left_is_asked_of_the_venue() -> None:
    first = [placed_order(f"{c}{n}", customer_id=c, sequence=n) for c in "ab" for n in (1, 2)]
    record, exchange = Record(first), Exchange()
    record.to_cancel["b1"] = replace(first[2], cancel_reason="canceled: trading halted")
    exchange.never_received.add("b1")
    halts = Halts({o.order_id: "rejected" if o.customer_id == "a" else "cancel_requested" for o in first})

    await submitter(record, exchange, halts=halts).submit_through("a1", "a")

    assert exchange.arrivals == [] and record.submitted == []
    assert exchange.cancels == ["b1"]  # b2's cancel is asked by its own pending_cancel: none here
    assert record.ended == [("b1", "canceled: trading halted")]
