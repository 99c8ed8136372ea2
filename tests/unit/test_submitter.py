"""The worker's submitter with an in-memory record and exchange: what a claim returns goes to the exchange, each
customer's orders in sequence and customers side by side, and a message for an order already recorded costs no
round trip to the database."""

from __future__ import annotations

import asyncio
from dataclasses import replace

import pytest

from brokerage.domain.orders import Order, OrderStatus
from brokerage.domain.submission import Accepted, SubmissionOutcome, VenueUnavailable
from execution_service.submitter import RecentIds, Submitter
from tests.factories import placed_order


class Record:
    """The database as the submitter sees it: a claim takes whatever waits."""

    def __init__(self, waiting: list[Order]) -> None:
        self.waiting = waiting
        self.claims: list[str] = []
        self.submitted: list[str] = []

    async def claim_for_submission(self, order_id: str, customer_id: str) -> list[Order]:
        self.claims.append(order_id)
        taken, self.waiting = self.waiting, []
        return taken

    async def record_submitted(self, order: Order, venue_order_id: str) -> Order:
        self.submitted.append(order.order_id)
        return replace(order, status=OrderStatus.SUBMITTED)


class Exchange:
    """Answers each customer's first order only after the others have arrived, so side-by-side shows in arrivals;
    refuses to answer for the orders in `down`."""

    def __init__(self, down: frozenset[str] = frozenset()) -> None:
        self.arrivals: list[str] = []
        self.down = down

    async def submit(self, order: Order) -> SubmissionOutcome:
        self.arrivals.append(order.order_id)
        await asyncio.sleep(0.01 if order.sequence == 1 else 0)
        if order.order_id in self.down:
            raise VenueUnavailable("no answer")
        return Accepted(f"V-{order.order_id}")


async def test_each_customers_orders_go_in_sequence_and_the_customers_side_by_side() -> None:
    record = Record([placed_order("a1", "A", 1), placed_order("a2", "A", 2), placed_order("b1", "B", 1)])
    exchange = Exchange()
    touched: set[str] = set()

    taken = await Submitter(record, exchange).submit_through("a1", "A", touched)  # type: ignore[arg-type]

    assert taken == 3
    assert exchange.arrivals == ["a1", "b1", "a2"]  # B's order did not wait behind A's first answer
    assert record.submitted == ["a1", "b1", "a2"]
    assert touched == {"A", "B"}


async def test_a_message_for_an_order_already_recorded_is_answered_without_the_database() -> None:
    record = Record([placed_order("a1", "A", 1), placed_order("b1", "B", 1)])
    submitter = Submitter(record, Exchange())  # type: ignore[arg-type]
    await submitter.submit_through("a1", "A")

    assert await submitter.submit_through("b1", "B") == 0  # b1 went with a1's claim
    assert record.claims == ["a1"]


async def test_a_customers_failure_stops_its_later_orders_not_the_other_customers() -> None:
    record = Record([placed_order("a1", "A", 1), placed_order("a2", "A", 2), placed_order("b1", "B", 1)])
    exchange = Exchange(down=frozenset({"a1"}))
    submitter = Submitter(record, exchange)  # type: ignore[arg-type]

    with pytest.raises(VenueUnavailable):
        await submitter.submit_through("a1", "A")

    assert record.submitted == ["b1"]  # a2 waits for a1; b1 went
    assert await submitter.submit_through("b1", "B") == 0
    exchange.down, record.waiting = frozenset(), [placed_order("a1", "A", 1), placed_order("a2", "A", 2)]
    assert await submitter.submit_through("a2", "A") == 2  # a1 not recorded: its message goes to the database


def test_recent_ids_forget_the_oldest_first() -> None:
    recent = RecentIds(2)
    for id_ in ("x", "y", "x", "z"):
        recent.add(id_)
    assert ("x" in recent, "y" in recent, "z" in recent) == (True, False, True)
