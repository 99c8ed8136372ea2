"""The workers' SubmitOrders stream against a real in-process server (the programmable fake exchange): results
matched to their orders whatever order they come in, per-order failures as SubmitOrder's, a deadline, a broken
stream, and the next stream after it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc
import pytest

from brokerage.domain.orders import Order
from brokerage.domain.submission import Accepted, Refused, SubmissionOutcome, VenueUnavailable
from brokerage.exchange_client import ExchangeClient
from tests.factories import placed_order
from tests.integration.fake_exchange import FakeExchange, serve_fake_exchange

pytestmark = pytest.mark.integration


@pytest.fixture
def venue(fake_exchange: FakeExchange) -> FakeExchange:
    return fake_exchange


@pytest.fixture
async def client(venue: FakeExchange) -> AsyncIterator[ExchangeClient]:
    exchange = ExchangeClient.connect(venue.target, deadline=1.0)
    try:
        yield exchange
    finally:
        await exchange.close()


async def test_each_order_gets_its_own_result_whatever_order_they_come_back_in(
    venue: FakeExchange, client: ExchangeClient
) -> None:
    first_taken, first_may_answer = asyncio.Event(), asyncio.Event()

    async def hold_the_first(order_id: str) -> None:
        if order_id == "first":
            first_taken.set()
            await first_may_answer.wait()

    venue.before_ack = hold_the_first
    first = asyncio.create_task(client.submit(placed_order("first")))
    await first_taken.wait()
    second = await client.submit(placed_order("second"))  # answered while the first is held
    first_may_answer.set()

    assert second == Accepted("V2", duplicate=False)
    assert await first == Accepted("V1", duplicate=False)


async def test_orders_submitted_while_one_is_written_share_the_next_message_and_arrive_as_submitted(
    venue: FakeExchange, client: ExchangeClient
) -> None:
    await client.submit(placed_order("opens-the-stream"))

    outcomes = await asyncio.gather(*(client.submit(placed_order(f"o{i}")) for i in range(5)))

    assert all(isinstance(outcome, Accepted) for outcome in outcomes)
    assert venue.batch_sizes == [1, 1, 4]  # o0 went at once; the four that came while it was written, together
    assert [s.order_id for s in venue.submissions][1:] == [f"o{i}" for i in range(5)]


async def test_an_orders_failure_is_its_own_and_the_stream_carries_on(
    venue: FakeExchange, client: ExchangeClient
) -> None:
    venue.refused_symbols["GME"] = "halted"
    venue.failures.append(grpc.StatusCode.INVALID_ARGUMENT)

    assert isinstance(await client.submit(placed_order("a")), Refused)  # the venue's refusal of the request
    with pytest.raises(VenueUnavailable):
        venue.failures.append(grpc.StatusCode.UNAVAILABLE)
        await client.submit(placed_order("b"))
    assert await client.submit(placed_order("c", symbol="GME")) == Refused("halted")
    assert await client.submit(placed_order("d")) == Accepted("V2", duplicate=False)


async def test_an_order_unanswered_by_its_deadline_is_unavailable_and_its_late_result_is_dropped(
    venue: FakeExchange, client: ExchangeClient
) -> None:
    venue.stall_after_taking = 1

    with pytest.raises(VenueUnavailable):
        await client.submit(placed_order("slow"))
    assert await client.submit(placed_order("next")) == Accepted("V2", duplicate=False)
    assert await client.submit(placed_order("slow")) == Accepted("V1", duplicate=True)  # the venue had taken it


async def test_a_broken_stream_fails_what_waits_on_it_and_the_next_order_opens_a_new_one() -> None:
    venue = FakeExchange()
    running = await serve_fake_exchange(venue)
    client = ExchangeClient.connect(venue.target, deadline=2.0)
    try:
        held = asyncio.Event()

        async def hold(order_id: str) -> None:
            held.set()
            await asyncio.sleep(10)

        venue.before_ack = hold
        waiting = asyncio.create_task(client.submit(placed_order("lost")))
        await held.wait()
        await running.server.stop(0)  # the venue goes away mid-stream
        with pytest.raises(VenueUnavailable):
            await waiting

        venue.before_ack = None
        running = await serve_fake_exchange(venue, venue.target)  # back, on the same port
        assert await submitted_once_reachable(client, placed_order("after")) == Accepted("V2", duplicate=False)
    finally:
        await client.close()
        await running.server.stop(0)


async def submitted_once_reachable(client: ExchangeClient, sent: Order) -> SubmissionOutcome:
    """The submission, tried again while the channel reconnects to the venue (as the worker's backoff would)."""
    async with asyncio.timeout(10):
        while True:
            try:
                return await client.submit(sent)
            except VenueUnavailable:
                await asyncio.sleep(0.1)
