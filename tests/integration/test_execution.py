"""Taking orders to the exchange (DESIGN.md rules 4 to 7): the execution worker in-process against real
PostgreSQL and NATS JetStream, an in-process OrderService placing the orders, and the fake exchange."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import timedelta
from decimal import Decimal

import grpc
import nats
import psycopg
import pytest
from nats.aio.msg import Msg

from brokerage.domain.orders import Order, Side
from brokerage.domain.sharding import shard_for, subject_for
from brokerage.domain.submission import ShardPaused
from brokerage.messaging.consumers import shard_backlogs
from brokerage.messaging.doorbell import doorbell_subject
from brokerage.messaging.messages import encode_order_placed
from brokerage.proto import common_pb2, execution_pb2, execution_pb2_grpc, orders_pb2, orders_pb2_grpc
from brokerage.settings import Settings
from brokerage.storage.pool import open_pool
from brokerage.storage.submissions import SubmissionStore
from brokerage.storage.sweeps import SweepStore, SweepWindow
from brokerage.wire import SIDE_FROM_PROTO
from devtools.stack import NatsServer
from execution_service.main import ExecutionApp
from execution_service.main import start as start_execution
from order_service.main import OrderServiceApp
from tests.identity import operator_channel
from tests.integration.conftest import SHARD_COUNT, available, make_settings, running_service, transfers_of
from tests.integration.fake_exchange import FakeExchange
from tests.integration.test_place_order import place

pytestmark = pytest.mark.integration


async def eventually(condition: Callable[[], bool | Awaitable[bool]], what: str, timeout: float = 20) -> None:
    """Polls condition (plain or async) until it holds; fails the test naming `what` after timeout seconds."""

    async def holds() -> bool:
        outcome = condition()
        return await outcome if inspect.isawaitable(outcome) else outcome

    try:
        async with asyncio.timeout(timeout):
            while not await holds():
                await asyncio.sleep(0.05)
    except TimeoutError:
        raise AssertionError(f"timed out after {timeout} s waiting for {what}") from None


def statuses(db: psycopg.Connection, order_ids: list[str]) -> dict[str, str]:
    rows = db.execute("SELECT order_id, status FROM orders WHERE order_id = ANY(%s)", (order_ids,)).fetchall()
    return dict(rows)


def all_submitted(db: psycopg.Connection, order_ids: list[str]) -> Callable[[], bool]:
    return lambda: set(statuses(db, order_ids).values()) == {"SUBMITTED"}


async def place_many(
    stub: orders_pb2_grpc.OrderServiceStub, customers: list[str], per_customer: int, prefix: str = "k"
) -> list[orders_pb2.Order]:
    """Places per_customer orders for each customer, all at once: each customer's sequence is decided by commit."""
    requests = [place(customer=c, key=f"{prefix}-{i}", quantity=1) for c in customers for i in range(per_customer)]
    return list(await asyncio.gather(*(stub.PlaceOrder(r, timeout=10) for r in requests)))


def in_sequence(orders: list[orders_pb2.Order], customer: str) -> list[str]:
    return [o.order_id for o in sorted(orders, key=lambda o: o.sequence) if o.customer_id == customer]


def assert_sent_again_as_one_exchange_order(
    exchange: FakeExchange, order_id: str, orders: list[orders_pb2.Order], customer: str = "1"
) -> None:
    """The order went to the exchange a second time, which the exchange took as the same order, and the customer's
    orders (all of one customer) still arrived in sequence."""
    assert [s.duplicate for s in exchange.submissions if s.order_id == order_id] == [False, True]
    assert exchange.arrivals() == in_sequence(orders, customer)


async def test_every_order_is_submitted_once_and_each_customers_in_sequence_order(
    app: OrderServiceApp,
    stub: orders_pb2_grpc.OrderServiceStub,
    execution: ExecutionApp,
    fake_exchange: FakeExchange,
    db: psycopg.Connection,
) -> None:
    customers = [str(c) for c in range(1, 11)]
    orders = await place_many(stub, customers, per_customer=8)
    order_ids = [o.order_id for o in orders]

    await eventually(all_submitted(db, order_ids), "every order SUBMITTED")

    assert sorted(fake_exchange.arrivals()) == sorted(order_ids)
    assert not [s for s in fake_exchange.submissions if s.duplicate]  # nothing was sent twice
    for customer in customers:
        assert fake_exchange.arrivals_of(customer) == in_sequence(orders, customer)
    events = db.execute("SELECT count(*) FROM order_events WHERE event_type = 'submitted'").fetchone()
    assert events == (len(orders),)
    venue_ids = db.execute("SELECT count(DISTINCT venue_order_id) FROM orders").fetchone()
    assert venue_ids == (len(orders),)


async def test_a_submission_rings_the_customers_doorbell_for_watchers(
    app: OrderServiceApp,
    stub: orders_pb2_grpc.OrderServiceStub,
    execution: ExecutionApp,
    settings: Settings,
    db: psycopg.Connection,
) -> None:
    rings: list[str] = []

    async def heard(message: Msg) -> None:
        rings.append(message.subject)

    client = await nats.connect(settings.nats_url)
    try:
        await client.subscribe(doorbell_subject("1"), cb=heard)
        await client.flush()
        (order,) = await place_many(stub, ["1"], per_customer=1)
        await eventually(all_submitted(db, [order.order_id]), "the order SUBMITTED")
        await eventually(lambda: len(rings) >= 2, "a ring for the placement and one for the submission")
    finally:
        await client.close()


async def test_a_message_for_an_order_already_submitted_is_acknowledged_and_nothing_is_sent_again(
    app: OrderServiceApp,
    stub: orders_pb2_grpc.OrderServiceStub,
    execution: ExecutionApp,
    fake_exchange: FakeExchange,
    db: psycopg.Connection,
    settings: Settings,
) -> None:
    (order,) = await place_many(stub, ["1"], per_customer=1)
    await eventually(all_submitted(db, [order.order_id]), "the order SUBMITTED")

    await publish_wake_up(settings.nats_url, order, message_id="redelivered")

    await eventually(lambda: shard_idle(settings.nats_url, order.customer_id), "the shard drained")
    assert len(fake_exchange.submissions) == 1


async def test_older_waiting_orders_of_the_customer_are_submitted_first_whatever_message_comes_first(
    stub: orders_pb2_grpc.OrderServiceStub,
    app: OrderServiceApp,
    execution_settings: Settings,
    fake_exchange: FakeExchange,
    db: psycopg.Connection,
) -> None:
    # The relay is held back: three orders wait in the outbox, then only the newest one's message goes out.
    await stop_relay(app)
    orders = [await stub.PlaceOrder(place(key=f"k-{i}", quantity=1), timeout=5) for i in range(3)]

    async with running_service(start_execution, execution_settings):
        await publish_wake_up(execution_settings.nats_url, orders[2], message_id="newest-first")
        await eventually(all_submitted(db, [o.order_id for o in orders]), "all three SUBMITTED")

    assert fake_exchange.arrivals_of("1") == [o.order_id for o in orders]


async def test_a_malformed_message_is_terminated_and_the_shard_carries_on(
    app: OrderServiceApp,
    stub: orders_pb2_grpc.OrderServiceStub,
    execution: ExecutionApp,
    fake_exchange: FakeExchange,
    db: psycopg.Connection,
    settings: Settings,
) -> None:
    subject = subject_for("1", SHARD_COUNT)
    foreign = next(c for c in map(str, range(2, 100)) if shard_for(c, SHARD_COUNT) != shard_for("1", SHARD_COUNT))
    nc = await nats.connect(settings.nats_url)
    try:
        js = nc.jetstream()
        await js.publish(subject, b"\xff not protobuf", headers={"Nats-Msg-Id": "garbage"})
        await js.publish(subject, b"", headers={"Nats-Msg-Id": "empty"})
        misrouted = encode_order_placed(
            order_id="x",
            customer_id=foreign,
            symbol="AAPL",
            side=Side.BUY,
            quantity=1,
            protection_price=Decimal(1),
            shard=0,
        )
        await js.publish(subject, misrouted, headers={"Nats-Msg-Id": "misrouted"})
    finally:
        await nc.close()

    (order,) = await place_many(stub, ["1"], per_customer=1)

    await eventually(all_submitted(db, [order.order_id]), "the order behind three bad messages SUBMITTED")
    await eventually(lambda: shard_idle(settings.nats_url, "1"), "nothing left on the shard, nothing redelivered")


async def test_the_exchanges_refusal_rejects_the_order_releases_its_cash_and_the_customer_carries_on(
    app: OrderServiceApp,
    stub: orders_pb2_grpc.OrderServiceStub,
    execution: ExecutionApp,
    fake_exchange: FakeExchange,
    db: psycopg.Connection,
) -> None:
    fake_exchange.refused_symbols["MSFT"] = "trading in MSFT is halted"
    before = available(db, "1")
    refused = await stub.PlaceOrder(place(key="msft", symbol="MSFT", quantity=2), timeout=5)
    accepted = await stub.PlaceOrder(place(key="aapl", quantity=1), timeout=5)

    await eventually(all_submitted(db, [accepted.order_id]), "the next order SUBMITTED")

    row = db.execute("SELECT status, status_reason FROM orders WHERE order_id = %s", (refused.order_id,)).fetchone()
    assert row == ("REJECTED", "trading in MSFT is halted")
    aapl_reserved = Decimal(accepted.reserved_amount)
    assert available(db, "1") == (before[0] - aapl_reserved, aapl_reserved)
    reserved = Decimal(refused.reserved_amount)
    assert transfers_of(db, refused.order_id) == [
        ("reserve", "USD", "available", "reserved", reserved),
        ("release", "USD", "reserved", "available", reserved),
    ]
    events = db.execute(
        "SELECT event_type FROM order_events WHERE order_id = %s ORDER BY sequence", (refused.order_id,)
    )
    assert [e for (e,) in events.fetchall()] == ["placed", "rejected"]


async def test_transient_exchange_failures_are_retried_and_the_customers_orders_stay_in_order(
    app: OrderServiceApp,
    stub: orders_pb2_grpc.OrderServiceStub,
    execution: ExecutionApp,
    fake_exchange: FakeExchange,
    db: psycopg.Connection,
) -> None:
    fake_exchange.failures.extend([grpc.StatusCode.UNAVAILABLE] * 4 + [grpc.StatusCode.INTERNAL] * 2)
    orders = await place_many(stub, ["1"], per_customer=5)

    await eventually(all_submitted(db, [o.order_id for o in orders]), "every order SUBMITTED")

    assert fake_exchange.arrivals_of("1") == in_sequence(orders, "1")
    assert not fake_exchange.failures  # every injected failure was met


async def test_an_order_the_exchange_took_whose_answer_was_lost_is_sent_again_and_is_one_exchange_order(
    app: OrderServiceApp,
    stub: orders_pb2_grpc.OrderServiceStub,
    execution: ExecutionApp,
    fake_exchange: FakeExchange,
    db: psycopg.Connection,
) -> None:
    # The exchange takes the first order but answers after our deadline: to the worker, the outcome is unknown.
    fake_exchange.stall_after_taking = 1
    orders = await place_many(stub, ["1"], per_customer=3)

    await eventually(all_submitted(db, [o.order_id for o in orders]), "every order SUBMITTED")

    first = in_sequence(orders, "1")[0]
    assert_sent_again_as_one_exchange_order(fake_exchange, first, orders)


def first_record_of_submitted_meets(
    mishap: Callable[[], Awaitable[object]], monkeypatch: pytest.MonkeyPatch
) -> list[str]:
    """The worker's first record of SUBMITTED awaits `mishap` (which may raise, or never return) before it runs;
    returns the id of the order it hit, once it has."""
    record = SubmissionStore.record_submitted
    hit: list[str] = []

    async def once(self: SubmissionStore, order: Order, venue_order_id: str) -> Order | None:
        if not hit:
            hit.append(order.order_id)
            await mishap()
        return await record(self, order, venue_order_id)

    monkeypatch.setattr(SubmissionStore, "record_submitted", once)
    return hit


async def test_a_crash_between_the_exchanges_ack_and_our_commit_sends_the_order_again_but_makes_no_second(
    app: OrderServiceApp,
    stub: orders_pb2_grpc.OrderServiceStub,
    execution: ExecutionApp,
    fake_exchange: FakeExchange,
    db: psycopg.Connection,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The first record of SUBMITTED fails as a crash would leave it: the exchange has the order, we do not know.
    async def crash() -> None:
        raise ConnectionResetError("worker died before its commit")

    failed = first_record_of_submitted_meets(crash, monkeypatch)
    orders = await place_many(stub, ["1"], per_customer=2)

    await eventually(all_submitted(db, [o.order_id for o in orders]), "both orders SUBMITTED")

    assert_sent_again_as_one_exchange_order(fake_exchange, failed[0], orders)


async def test_work_stuck_past_its_limit_is_abandoned_and_retried_and_the_shard_carries_on(
    app: OrderServiceApp,
    stub: orders_pb2_grpc.OrderServiceStub,
    execution_settings: Settings,
    fake_exchange: FakeExchange,
    db: psycopg.Connection,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The first record of SUBMITTED never returns. Its message's progress reports would keep it from every other
    # replica; only the work limit frees the shard.
    stuck = first_record_of_submitted_meets(asyncio.Event().wait, monkeypatch)
    limited = execution_settings.model_copy(update={"message_work_limit_seconds": 1.5})
    async with running_service(start_execution, limited):
        orders = await place_many(stub, ["1"], per_customer=3)
        await eventually(all_submitted(db, [o.order_id for o in orders]), "every order SUBMITTED")

    assert_sent_again_as_one_exchange_order(fake_exchange, stuck[0], orders)


async def test_a_duplicate_order_refusal_is_answered_by_asking_the_exchange(
    app: OrderServiceApp,
    stub: orders_pb2_grpc.OrderServiceStub,
    execution: ExecutionApp,
    fake_exchange: FakeExchange,
    db: psycopg.Connection,
) -> None:
    fake_exchange.refuse_duplicates = True
    fake_exchange.stall_after_taking = 1  # taken, answer lost; the retry meets ALREADY_EXISTS
    (order,) = await place_many(stub, ["1"], per_customer=1)

    await eventually(all_submitted(db, [order.order_id]), "the order SUBMITTED")

    assert (order.order_id, False) in fake_exchange.status_queries
    row = db.execute("SELECT venue_order_id FROM orders WHERE order_id = %s", (order.order_id,)).fetchone()
    assert row == (fake_exchange.acks[order.order_id].venue_order_id,)


async def test_a_report_that_arrives_before_the_acknowledgement_is_kept_and_does_not_stall_the_shard(
    app: OrderServiceApp,
    stub: orders_pb2_grpc.OrderServiceStub,
    execution: ExecutionApp,
    fake_exchange: FakeExchange,
    db: psycopg.Connection,
) -> None:
    async def fill_reported_first(order_id: str) -> None:  # settlement got a partial fill in before our ack
        db.execute(
            "UPDATE orders SET status = 'PARTIALLY_FILLED', filled_quantity = 1 WHERE order_id = %s", (order_id,)
        )

    fake_exchange.before_ack = fill_reported_first
    first = await stub.PlaceOrder(place(key="first", quantity=5), timeout=5)
    await eventually(lambda: statuses(db, [first.order_id]) == {first.order_id: "PARTIALLY_FILLED"}, "the fill")
    fake_exchange.before_ack = None
    second = await stub.PlaceOrder(place(key="second", quantity=1), timeout=5)

    await eventually(all_submitted(db, [second.order_id]), "the next order SUBMITTED")

    row = db.execute("SELECT status, venue_order_id FROM orders WHERE order_id = %s", (first.order_id,)).fetchone()
    assert row == ("PARTIALLY_FILLED", fake_exchange.acks[first.order_id].venue_order_id)
    assert [s.order_id for s in fake_exchange.submissions] == [first.order_id, second.order_id]


def cancels_sent(db: psycopg.Connection, order_ids: set[str]) -> set[str]:
    rows = db.execute(
        "SELECT order_id FROM orders WHERE order_id = ANY(%s) AND cancel_sent_at IS NOT NULL", (list(order_ids),)
    )
    return {order_id for (order_id,) in rows}


async def test_a_cancel_racing_the_workers_claim_never_releases_cash_for_an_order_the_exchange_has(
    app: OrderServiceApp,
    stub: orders_pb2_grpc.OrderServiceStub,
    execution: ExecutionApp,
    fake_exchange: FakeExchange,
    db: psycopg.Connection,
) -> None:
    customers = [str(c) for c in range(1, 21)]
    orders = await place_many(stub, customers, per_customer=3, prefix="race")
    requests = [orders_pb2.CancelOrderRequest(customer_id=o.customer_id, order_id=o.order_id) for o in orders]
    answers = await asyncio.gather(*(stub.CancelOrder(r, timeout=5) for r in requests))
    order_ids = [o.order_id for o in orders]
    at_exchange = {a.order_id for a in answers if a.status != common_pb2.ORDER_STATUS_CANCELED}
    await eventually(lambda: set(fake_exchange.cancels) == at_exchange, "every cancel asked of the exchange")
    # The exchange hears a cancel before the worker records its answer: wait for the records too.
    await eventually(lambda: cancels_sent(db, at_exchange) == at_exchange, "every cancel recorded as sent")

    canceled_at_once = set(order_ids) - at_exchange
    assert not canceled_at_once & set(fake_exchange.arrivals())  # nothing canceled here went to the exchange
    assert set(fake_exchange.arrivals()) == at_exchange
    assert all(a.cancel_requested for a in answers if a.order_id in at_exchange)
    rows = db.execute(
        "SELECT order_id, status, reserved_cash > 0, cancel_sent_at IS NOT NULL FROM orders WHERE order_id = ANY(%s)",
        (order_ids,),
    ).fetchall()
    for order_id, status, holds_cash, cancel_sent in rows:
        if order_id in at_exchange:  # the exchange has it: its cash stays held until the exchange's reports end it
            assert (status, holds_cash, cancel_sent) == ("SUBMITTED", True, True)
        else:
            assert (status, holds_cash) == ("CANCELED", False)
    released = db.execute(
        "SELECT count(*) FROM transfers WHERE kind = 'release' AND order_id = ANY(%s)", (list(at_exchange),)
    ).fetchone()
    assert released == (0,)


async def test_a_paused_shard_sends_nothing_the_pause_survives_a_restart_and_resuming_sends_in_order(
    app: OrderServiceApp,
    stub: orders_pb2_grpc.OrderServiceStub,
    execution_settings: Settings,
    fake_exchange: FakeExchange,
    db: psycopg.Connection,
) -> None:
    shard = shard_for("1", SHARD_COUNT)
    async with running_service(start_execution, execution_settings) as worker, operator(worker) as shards:
        paused = await shards.PauseShard(execution_pb2.PauseShardRequest(shard=shard, reason="venue incident"))
        assert (paused.paused, paused.pause_reason) == (True, "venue incident")
        orders = await place_many(stub, ["1"], per_customer=4)
        await asyncio.sleep(1.0)
        assert fake_exchange.arrivals() == []

    async with running_service(start_execution, execution_settings) as worker, operator(worker) as shards:
        listed = await shards.ListShards(execution_pb2.ListShardsRequest())
        (view,) = [s for s in listed.shards if s.shard == shard]
        assert view.paused and view.pause_reason == "venue incident" and view.oldest_placed_at.seconds > 0
        await asyncio.sleep(0.5)
        assert fake_exchange.arrivals() == []

        resumed = await shards.ResumeShard(execution_pb2.ResumeShardRequest(shard=shard))
        assert not resumed.paused
        await eventually(all_submitted(db, [o.order_id for o in orders]), "every order SUBMITTED after resume")

    assert fake_exchange.arrivals() == in_sequence(orders, "1")


async def test_the_operator_view_lists_the_owned_shards_and_refuses_a_shard_that_does_not_exist(
    fake_exchange: FakeExchange, seeded_database: str, execution_settings: Settings
) -> None:
    settings = execution_settings.model_copy(update={"shards": "3-5,9"})
    async with running_service(start_execution, settings) as worker, operator(worker) as shards:
        await eventually(lambda: worker.link.connected, "the worker connected to NATS")
        listed = await shards.ListShards(execution_pb2.ListShardsRequest())
        assert listed.shard_count == SHARD_COUNT
        assert [s.shard for s in listed.shards] == [3, 4, 5, 9]
        assert all(s.pending == 0 and not s.paused and not s.order_in_flight for s in listed.shards)
        other = await shards.GetShard(execution_pb2.GetShardRequest(shard=12))  # any shard may be looked at
        assert other.shard == 12
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await shards.GetShard(execution_pb2.GetShardRequest(shard=SHARD_COUNT))
        assert refused.value.code() is grpc.StatusCode.INVALID_ARGUMENT
        assert "owns 3-5,9" in (refused.value.details() or "")


async def test_the_sweeper_publishes_again_an_order_whose_message_was_lost(
    app: OrderServiceApp,
    stub: orders_pb2_grpc.OrderServiceStub,
    execution_settings: Settings,
    fake_exchange: FakeExchange,
    db: psycopg.Connection,
) -> None:
    await stop_relay(app)  # the order's own message never goes out
    (order,) = await place_many(stub, ["1"], per_customer=1)

    async with running_service(start_execution, execution_settings):
        await eventually(all_submitted(db, [order.order_id]), "the order SUBMITTED", timeout=10)

    sweeps = db.execute("SELECT sweep_count FROM orders WHERE order_id = %s", (order.order_id,)).fetchone()
    assert sweeps == (1,)
    assert fake_exchange.arrivals() == [order.order_id]


async def test_the_sweeper_publishes_again_a_lost_cancel_although_it_also_asks_about_the_silent_order(
    app: OrderServiceApp,
    stub: orders_pb2_grpc.OrderServiceStub,
    execution: ExecutionApp,
    fake_exchange: FakeExchange,
    db: psycopg.Connection,
) -> None:
    (order,) = await place_many(stub, ["1"], per_customer=1)
    await eventually(all_submitted(db, [order.order_id]), "the order SUBMITTED")
    await stop_relay(app)  # the cancel's own message never goes out
    cancel = orders_pb2.CancelOrderRequest(customer_id="1", order_id=order.order_id)
    assert (await stub.CancelOrder(cancel, timeout=5)).cancel_requested

    # The exchange reports nothing meanwhile, so the sweeper keeps asking about the order as silent, too.
    await eventually(lambda: fake_exchange.cancels == [order.order_id], "the cancel at the exchange", timeout=15)
    assert (order.order_id, True) in fake_exchange.status_queries


async def test_the_sweeper_asks_the_exchange_about_a_silent_order_with_its_reports_resent(
    app: OrderServiceApp,
    stub: orders_pb2_grpc.OrderServiceStub,
    execution: ExecutionApp,
    fake_exchange: FakeExchange,
    db: psycopg.Connection,
) -> None:
    (order,) = await place_many(stub, ["1"], per_customer=1)
    await eventually(all_submitted(db, [order.order_id]), "the order SUBMITTED")

    await eventually(lambda: (order.order_id, True) in fake_exchange.status_queries, "a status query", timeout=10)

    asked = [q for q in fake_exchange.status_queries if q[0] == order.order_id]
    assert len(asked) == 1  # once per interval, not once per sweep


async def test_nats_killed_and_restarted_mid_run_loses_no_order_and_keeps_each_customers_order(
    app: OrderServiceApp,
    stub: orders_pb2_grpc.OrderServiceStub,
    execution: ExecutionApp,
    fake_exchange: FakeExchange,
    db: psycopg.Connection,
    nats_server: NatsServer,
) -> None:
    customers = [str(c) for c in range(1, 11)]
    before = asyncio.create_task(place_many(stub, customers, per_customer=6, prefix="before"))
    await asyncio.sleep(0.2)
    nats_server.kill()
    during = await place_many(stub, customers, per_customer=4, prefix="during")
    await asyncio.sleep(0.5)
    nats_server.start()
    orders = [*await before, *during, *await place_many(stub, customers, per_customer=3, prefix="after")]

    await eventually(all_submitted(db, [o.order_id for o in orders]), "every order SUBMITTED", timeout=40)

    assert sorted(fake_exchange.arrivals()) == sorted(o.order_id for o in orders)
    for customer in customers:
        assert fake_exchange.arrivals_of(customer) == in_sequence(orders, customer)


async def test_the_exchanges_quotes_become_our_reference_prices(
    execution: ExecutionApp, fake_exchange: FakeExchange, db: psycopg.Connection
) -> None:
    fake_exchange.quotes = {"AAPL": "231.17", "NOT-LISTED-HERE": "1.00"}

    await eventually(
        lambda: db.execute("SELECT price FROM quotes WHERE symbol = 'AAPL'").fetchone() == (Decimal("231.17"),),
        "AAPL quoted at 231.17",
    )
    assert db.execute("SELECT count(*) FROM quotes WHERE symbol = 'NOT-LISTED-HERE'").fetchone() == (0,)


def test_the_databases_shard_rule_is_the_same_as_the_services(db: psycopg.Connection) -> None:
    customers = [str(i) for i in range(2000)] + ["c-ü-42", "a" * 64, "CUSTOMER:7"]
    for count in (1, 7, 16, 4096):
        in_sql = db.execute("SELECT shard_of(c, %s) FROM unnest(%s::text[]) AS c", (count, customers)).fetchall()
        assert [s for (s,) in in_sql] == [shard_for(c, count) for c in customers]


@asynccontextmanager
async def operator(worker: ExecutionApp) -> AsyncIterator[execution_pb2_grpc.ExecutionServiceStub]:
    """ExecutionService on the worker, as an operator calls it."""
    async with operator_channel(f"127.0.0.1:{worker.running.port}") as channel:
        yield execution_pb2_grpc.ExecutionServiceStub(channel)


async def publish_wake_up(nats_url: str, order: orders_pb2.Order, message_id: str) -> None:
    payload = encode_order_placed(
        order_id=order.order_id,
        customer_id=order.customer_id,
        symbol=order.symbol,
        side=SIDE_FROM_PROTO[order.side],
        quantity=order.quantity,
        protection_price=Decimal(order.protection_price),
        shard=shard_for(order.customer_id, SHARD_COUNT),
    )
    nc = await nats.connect(nats_url)
    try:
        await nc.jetstream().publish(
            subject_for(order.customer_id, SHARD_COUNT), payload, headers={"Nats-Msg-Id": message_id}
        )
    finally:
        await nc.close()


async def shard_idle(nats_url: str, customer_id: str) -> bool:
    """Whether the customer's shard has nothing waiting and nothing in flight."""
    nc = await nats.connect(nats_url)
    try:
        return (await shard_backlogs(nc.jetstream())).get(shard_for(customer_id, SHARD_COUNT), 0) == 0
    finally:
        await nc.close()


async def stop_relay(app: OrderServiceApp) -> None:
    relay = next(t for t in app.running.tasks if "OutboxRelay.run" in t.get_name())
    relay.cancel()
    await asyncio.gather(relay, return_exceptions=True)


async def test_the_sweeper_gives_a_busy_shard_longer_before_republishing_what_may_only_be_queued(
    stub: orders_pb2_grpc.OrderServiceStub, app: OrderServiceApp, db: psycopg.Connection, seeded_database: str
) -> None:
    await stop_relay(app)
    (order,) = await place_many(stub, ["1"], per_customer=1)
    db.execute("UPDATE orders SET created_at = now() - interval '1 minute' WHERE order_id = %s", (order.order_id,))
    shard = shard_for("1", SHARD_COUNT)
    pool = await open_pool(make_settings(seeded_database, "nats://unused"))
    store = SweepStore(pool)

    def window(idle: tuple[int, ...]) -> SweepWindow:
        return SweepWindow((shard,), idle, after=timedelta(seconds=30), busy_after=timedelta(minutes=5))

    try:
        busy = await store.unsent_placed(window(idle=()), limit=10)
        assert busy == []  # one minute old in a busy shard: perhaps only queued
        idle = await store.unsent_placed(window(idle=(shard,)), limit=10)
        assert [o.order_id for o in idle] == [order.order_id]  # in an idle shard: its wake-up is lost
    finally:
        await pool.close()


async def test_a_claim_in_a_paused_shard_is_refused_as_paused_not_as_an_outage(
    stub: orders_pb2_grpc.OrderServiceStub, app: OrderServiceApp, db: psycopg.Connection, seeded_database: str
) -> None:
    await stop_relay(app)
    (order,) = await place_many(stub, ["1"], per_customer=1)
    db.execute("INSERT INTO paused_shards (shard, reason) VALUES (%s, 'test')", (shard_for("1", SHARD_COUNT),))
    pool = await open_pool(make_settings(seeded_database, "nats://unused"))
    try:
        with pytest.raises(ShardPaused, match="is paused"):
            await SubmissionStore(pool).claim_for_submission(order.order_id, order.customer_id)
    finally:
        await pool.close()
    assert statuses(db, [order.order_id]) == {order.order_id: "PLACED"}


async def test_a_claim_takes_the_shards_longest_waiting_orders_each_customers_through_the_newest_taken(
    stub: orders_pb2_grpc.OrderServiceStub, app: OrderServiceApp, db: psycopg.Connection, seeded_database: str
) -> None:
    await stop_relay(app)
    assert {shard_for(c, SHARD_COUNT) for c in ("4", "13", "15", "18")} == {6}  # customers sharing a shard
    placed = {}
    for customer, key in [("4", "a"), ("13", "a"), ("15", "a"), ("4", "b"), ("18", "a")]:  # one after another
        placed[customer + key] = await stub.PlaceOrder(place(customer=customer, key=key, quantity=1), timeout=10)
    pool = await open_pool(make_settings(seeded_database, "nats://unused"))
    try:
        store = SubmissionStore(pool, claim_batch_max=3)
        first = await store.claim_for_submission(placed["15a"].order_id, "15")
        for order in first:
            await store.record_submitted(order, f"V-{order.order_id}")
        second = await store.claim_for_submission(placed["18a"].order_id, "18")
    finally:
        await pool.close()

    # the message's order and the two that waited longest; customer by customer, each in sequence
    assert [o.order_id for o in first] == [placed[k].order_id for k in ("13a", "15a", "4a")]
    assert [o.order_id for o in second] == [placed[k].order_id for k in ("18a", "4b")]


async def test_claims_arriving_together_share_a_statement_and_one_refused_fails_alone(
    stub: orders_pb2_grpc.OrderServiceStub, app: OrderServiceApp, db: psycopg.Connection, seeded_database: str
) -> None:
    await stop_relay(app)
    orders = await place_many(stub, [str(c) for c in range(1, 13)], per_customer=1)
    paused = orders[0]
    db.execute("INSERT INTO paused_shards (shard, reason) VALUES (%s, 'test')", (shard_for(paused.customer_id, 16),))
    others = [o for o in orders if shard_for(o.customer_id, 16) != shard_for(paused.customer_id, 16)]
    first_of_each_shard = list({shard_for(o.customer_id, 16): o for o in reversed(others)}.values())
    pool = await open_pool(make_settings(seeded_database, "nats://unused"))
    store = SubmissionStore(pool, group_max=32, group_flushers=1)
    try:
        results = await asyncio.gather(
            *(store.claim_for_submission(o.order_id, o.customer_id) for o in [paused, *first_of_each_shard]),
            return_exceptions=True,
        )
    finally:
        await pool.close()

    assert isinstance(results[0], ShardPaused)
    claims = [[c.order_id for c in claimed] for claimed in results[1:]]  # type: ignore[union-attr]
    assert all(o.order_id in claim for o, claim in zip(first_of_each_shard, claims, strict=True))
    # each claim also took its shard's other waiting orders, and no order went to two claims
    assert sorted(i for claim in claims for i in claim) == sorted(o.order_id for o in others)
    claimed = db.execute("SELECT count(*) FROM orders WHERE claimed_at IS NOT NULL").fetchone()
    assert claimed == (len(others),)
