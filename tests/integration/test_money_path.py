"""The money path never stalls and never sends what must not go (DESIGN.md rules 7, 9 and 10): the execution worker
in-process against real PostgreSQL and NATS, an in-process OrderService, and the fake exchange misbehaving on cue.

One customer's deterministic failure parks that customer alone; a venue failing as a whole stops all sending and
parks nothing; a cancel of an order claimed but never sent wins, whoever else holds the shard; and a DAY order still
waiting at its session's end ends, once, however many sweepers run.
"""

from __future__ import annotations

import asyncio
from decimal import Decimal

import grpc
import psycopg
import pytest
from prometheus_client import REGISTRY

from brokerage.domain.sharding import shard_for
from brokerage.exchange_client import ExchangeClient
from brokerage.messaging.connection import JetStreamLink
from brokerage.messaging.doorbell import Doorbell
from brokerage.proto import exchange_pb2, exchange_pb2_grpc, orders_pb2, orders_pb2_grpc
from brokerage.settings import Settings
from brokerage.storage.pool import open_pool
from brokerage.storage.submissions import SubmissionStore
from brokerage.storage.sweeps import SweepStore
from execution_service.main import ExecutionApp, _sweep_policy
from execution_service.sweeper import EXPIRED_AT_CLOSE, EXPIRED_UNSENT, Sweeper
from order_service.main import OrderServiceApp
from tests.integration.conftest import SHARD_COUNT, available, transfers_of
from tests.integration.fake_exchange import FakeExchange
from tests.integration.test_execution import all_submitted, eventually, statuses
from tests.integration.test_place_order import place

pytestmark = pytest.mark.integration

SAME_SHARD = ("4", "13", "15", "18")  # customers whose orders share shard 6


def breaker_open() -> float | None:
    return REGISTRY.get_sample_value("execution_venue_breaker_open")


def order_row(db: psycopg.Connection, order_id: str) -> tuple[object, ...]:
    row = db.execute(
        "SELECT status, held_by IS NOT NULL, parked_at IS NOT NULL, reserved_cash FROM orders WHERE order_id = %s",
        (order_id,),
    ).fetchone()
    assert row is not None
    return tuple(row)


async def test_a_customer_the_venue_fails_for_ever_is_parked_alone_and_the_shards_others_all_reach_the_venue(
    app: OrderServiceApp,
    stub: orders_pb2_grpc.OrderServiceStub,
    execution: ExecutionApp,
    fake_exchange: FakeExchange,
    db: psycopg.Connection,
) -> None:
    assert {shard_for(c, SHARD_COUNT) for c in SAME_SHARD} == {6}
    failing, others = SAME_SHARD[0], SAME_SHARD[1:]
    fake_exchange.failing_customers[failing] = grpc.StatusCode.INTERNAL
    first = await stub.PlaceOrder(place(customer=failing, key="a", quantity=1), timeout=5)
    second = await stub.PlaceOrder(place(customer=failing, key="b", quantity=1), timeout=5)
    flowing = [
        await stub.PlaceOrder(place(customer=c, key=f"k{i}", quantity=1), timeout=5) for i in range(3) for c in others
    ]

    await eventually(all_submitted(db, [o.order_id for o in flowing]), "every other customer's order SUBMITTED")
    await eventually(lambda: order_row(db, first.order_id)[2], "the failing customer's order parked", timeout=30)

    assert order_row(db, first.order_id) == ("PLACED", True, True, Decimal(first.reserved_amount))  # still held
    assert order_row(db, second.order_id)[:3] == ("PLACED", True, False)  # waiting behind it (FIFO), never sent
    assert second.order_id not in {s.order_id for s in fake_exchange.submissions}
    [(kind, detail)] = db.execute("SELECT kind, detail FROM breaks WHERE order_id = %s", (first.order_id,)).fetchall()
    assert kind == "parked" and "INTERNAL" in detail
    asked = {q[0] for q in fake_exchange.status_queries}
    assert first.order_id in asked  # each unknown outcome was asked of the venue before the next attempt


async def test_a_venue_wide_refusal_opens_the_breaker_and_parks_or_rejects_nothing_until_it_closes(
    app: OrderServiceApp,
    stub: orders_pb2_grpc.OrderServiceStub,
    execution: ExecutionApp,
    fake_exchange: FakeExchange,
    db: psycopg.Connection,
) -> None:
    fake_exchange.outage = grpc.StatusCode.PERMISSION_DENIED
    orders = [await stub.PlaceOrder(place(customer=str(c), key="k", quantity=1), timeout=5) for c in range(1, 9)]

    await eventually(lambda: breaker_open() == 1, "the breaker open")
    await asyncio.sleep(1.0)  # several cooldowns: the breaker lets a trial through each, and closes again
    assert set(statuses(db, [o.order_id for o in orders]).values()) == {"PLACED"}
    assert db.execute("SELECT count(*) FROM breaks").fetchone() == (0,)
    assert db.execute("SELECT count(*) FROM orders WHERE submit_attempts > 0").fetchone() == (0,)

    fake_exchange.outage = None
    await eventually(all_submitted(db, [o.order_id for o in orders]), "every order SUBMITTED once the venue is back")
    assert breaker_open() == 0


async def test_a_claimed_order_canceled_while_the_venue_is_away_is_never_sent_even_by_a_second_holder(
    app: OrderServiceApp,
    stub: orders_pb2_grpc.OrderServiceStub,
    execution: ExecutionApp,
    fake_exchange: FakeExchange,
    db: psycopg.Connection,
) -> None:
    before = available(db, "1")
    fake_exchange.outage = grpc.StatusCode.UNAVAILABLE  # the send fails: claimed, never acknowledged
    order = await stub.PlaceOrder(place(customer="1", key="k", quantity=2), timeout=5)
    await eventually(lambda: order_row(db, order.order_id)[1], "the order backing off after a failed send")

    requested = await stub.CancelOrder(orders_pb2.CancelOrderRequest(customer_id="1", order_id=order.order_id))
    assert requested.cancel_requested  # claimed: the venue decides, not we
    await asyncio.sleep(1.0)  # its retries come due meanwhile: none sends it, and the cancel waits for the venue
    assert statuses(db, [order.order_id]) == {order.order_id: "PLACED"}
    fake_exchange.outage = None

    await eventually(lambda: statuses(db, [order.order_id])[order.order_id] == "CANCELED", "the order canceled")
    assert fake_exchange.tombstones == [order.order_id] and order.order_id not in fake_exchange.arrivals()
    assert available(db, "1") == before and db.execute(
        "SELECT tombstoned_at IS NOT NULL FROM orders WHERE order_id = %s", (order.order_id,)
    ).fetchone() == (True,)
    # A second holder of the shard (a zombie replica waking up with the order still in hand) sends it now:
    async with grpc.aio.insecure_channel(fake_exchange.target) as channel:
        zombie = exchange_pb2.SubmitOrderRequest(order_id=order.order_id, customer_id="1", symbol="AAPL", quantity=2)
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await exchange_pb2_grpc.ExchangeServiceStub(channel).SubmitOrder(zombie, timeout=5)
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION  # the tombstone refuses it
    assert order.order_id not in fake_exchange.arrivals()


async def test_a_session_end_cancels_what_is_still_waiting_and_what_a_worker_took_through_the_tombstone(
    app: OrderServiceApp,
    stub: orders_pb2_grpc.OrderServiceStub,
    execution_settings: Settings,
    fake_exchange: FakeExchange,
    db: psycopg.Connection,
) -> None:
    before = available(db, "1")
    unclaimed = await stub.PlaceOrder(place(customer="1", key="u", quantity=1), timeout=5)
    claimed = await stub.PlaceOrder(place(customer="1", key="c", quantity=1), timeout=5)
    db.execute("UPDATE orders SET expires_at = now() - interval '1 minute' WHERE order_id = %s", (unclaimed.order_id,))
    db.execute(
        "UPDATE orders SET claimed_at = now(), expires_at = now() - interval '1 hour' WHERE order_id = %s",
        (claimed.order_id,),
    )

    ended = await sweep_twice_at_once(execution_settings, fake_exchange)

    assert ended == 2  # each once, though two sweepers ran side by side
    rows = db.execute(
        "SELECT order_id, status, status_reason, tombstoned_at IS NOT NULL FROM orders ORDER BY sequence"
    ).fetchall()
    assert rows == [
        (unclaimed.order_id, "CANCELED", EXPIRED_UNSENT, False),
        (claimed.order_id, "CANCELED", EXPIRED_AT_CLOSE, True),
    ]
    assert fake_exchange.cancels == [claimed.order_id] and fake_exchange.arrivals() == []
    assert available(db, "1") == before
    for order in (unclaimed, claimed):
        assert [kind for kind, *_ in transfers_of(db, order.order_id)] == ["reserve", "release"]


async def sweep_twice_at_once(settings: Settings, exchange: FakeExchange) -> int:
    """Two sweepers of every shard expiring at the same moment, as two replicas would; how many orders they ended."""
    pool = await open_pool(settings)
    link = JetStreamLink(settings.nats_url, "test-sweepers")
    client = ExchangeClient.connect(exchange.target, 5)
    try:
        sweepers = [
            Sweeper(
                SweepStore(pool),
                SubmissionStore(pool),
                link,
                client,
                Doorbell(link),
                tuple(range(SHARD_COUNT)),
                _sweep_policy(settings.model_copy(update={"expiry_grace_seconds": 1})),
            )
            for _ in range(2)
        ]
        return sum(await asyncio.gather(*(s.expire_day_orders() for s in sweepers)))
    finally:
        await client.close()
        await link.close()
        await pool.close()


def test_the_grace_must_outlast_a_send() -> None:
    with pytest.raises(ValueError, match="expiry_grace_seconds"):
        Settings(exchange_deadline_seconds=5, expiry_grace_seconds=1)  # type: ignore[call-arg]
