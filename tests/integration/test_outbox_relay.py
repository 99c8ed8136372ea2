"""Publishing without dual writes (DESIGN.md rule 4): the outbox relay against a real JetStream."""

from __future__ import annotations

import asyncio
from typing import Any

import nats
import psycopg
import pytest

from brokerage.messaging import relay as relay_module
from brokerage.messaging.messages import decode_order_placed
from brokerage.messaging.streams import ORDERS_STREAM, ShardCountMismatch, ensure_orders_stream
from brokerage.proto import common_pb2, orders_pb2_grpc
from brokerage.settings import Settings
from devtools.stack import NatsServer
from order_service.main import OrderServiceApp, start
from tests.identity import customer_channel
from tests.integration.conftest import make_settings, running_app
from tests.integration.test_place_order import place

pytestmark = pytest.mark.integration


async def stream_messages(nats_url: str) -> list[tuple[str, str]]:
    """(Nats-Msg-Id, subject) of every message in ORDERS, in stream order."""
    return [(message_id, subject) for message_id, subject, _ in await stream_contents(nats_url)]


async def stream_contents(nats_url: str) -> list[tuple[str, str, bytes]]:
    """(Nats-Msg-Id, subject, payload) of every message in ORDERS, in stream order."""
    nc = await nats.connect(nats_url)
    try:
        js = nc.jetstream()
        state = (await js.stream_info(ORDERS_STREAM)).state
        messages = []
        for seq in range(state.first_seq, state.last_seq + 1) if state.messages else ():
            msg = await js.get_msg(ORDERS_STREAM, seq)
            messages.append(((msg.headers or {})["Nats-Msg-Id"], msg.subject, msg.data or b""))
        return messages
    finally:
        await nc.close()


async def wait_until_published(db: psycopg.Connection, timeout: float = 30) -> None:
    async with asyncio.timeout(timeout):
        while db.execute("SELECT count(*) FROM outbox").fetchone() != (0,):
            await asyncio.sleep(0.1)


async def test_each_placed_order_is_published_on_its_shard_with_its_id(
    app: OrderServiceApp, stub: orders_pb2_grpc.OrderServiceStub, db: psycopg.Connection, settings: Settings
) -> None:
    orders = [await stub.PlaceOrder(place(customer=str(c), key="k"), timeout=5) for c in range(1, 11)]
    rejected = await stub.PlaceOrder(place(key="big", symbol="TSLA", quantity=1000), timeout=5)
    await wait_until_published(db)

    contents = await stream_contents(settings.nats_url)

    assert sorted((m, subject) for m, subject, _ in contents) == sorted(
        (o.order_id, f"orders.{shard(o.customer_id)}") for o in orders
    )
    assert rejected.order_id not in {m for m, _, _ in contents}
    [payload] = [data for m, _, data in contents if m == orders[0].order_id]
    message = decode_order_placed(payload)
    assert (message.order_id, message.customer_id, message.quantity) == (orders[0].order_id, "1", 10)
    assert db.execute("SELECT count(*) FROM outbox").fetchone() == (0,)  # each left the outbox once published


async def test_orders_keep_being_placed_while_nats_is_down_and_go_out_once_when_it_returns(
    app: OrderServiceApp,
    stub: orders_pb2_grpc.OrderServiceStub,
    db: psycopg.Connection,
    settings: Settings,
    nats_server: NatsServer,
) -> None:
    before = [await stub.PlaceOrder(place(customer=str(c), key="before"), timeout=5) for c in range(1, 11)]
    await wait_until_published(db)

    nats_server.kill()
    try:
        during = await asyncio.gather(
            *(
                stub.PlaceOrder(place(customer=str(c), key=f"during-{i}"), timeout=5)
                for i in range(3)
                for c in range(1, 21)
            )
        )
        assert all(o.status == common_pb2.ORDER_STATUS_PLACED for o in during)
        await asyncio.sleep(1)  # the relay meets a dead NATS and backs off
        assert db.execute("SELECT count(*) FROM outbox").fetchone() == (60,)
    finally:
        nats_server.restart()
    after = [await stub.PlaceOrder(place(customer=str(c), key="after"), timeout=5) for c in range(1, 11)]
    await wait_until_published(db)

    ids = [message_id for message_id, _ in await stream_messages(settings.nats_url)]
    expected = [o.order_id for o in (*before, *during, *after)]
    assert sorted(ids) == sorted(expected)  # every order, none twice


async def test_two_relays_publish_every_message_exactly_once(settings: Settings, db: psycopg.Connection) -> None:
    published_before = relay_module.ORDERS_OUTBOX.published._value.get()
    async with running_app(settings) as first, running_app(settings) as second:
        channels = [customer_channel(f"127.0.0.1:{a.running.port}") for a in (first, second)]
        stubs = [orders_pb2_grpc.OrderServiceStub(c) for c in channels]
        orders = await asyncio.gather(
            *(
                stubs[i % 2].PlaceOrder(place(customer=str(i % 20 + 1), key=f"k-{i}", quantity=1), timeout=10)
                for i in range(200)
            )
        )
        await wait_until_published(db)
        for channel in channels:
            await channel.close()

    ids = [message_id for message_id, _ in await stream_messages(settings.nats_url)]
    assert sorted(ids) == sorted(o.order_id for o in orders)
    assert relay_module.ORDERS_OUTBOX.published._value.get() - published_before == 200  # no row published twice


async def test_a_process_configured_for_another_shard_count_refuses_to_start(
    app: OrderServiceApp, settings: Settings
) -> None:
    other = settings.model_copy(update={"shard_count": 8})

    with pytest.raises(ShardCountMismatch, match="records 16 shards"):
        await start(other)


async def test_a_stream_made_for_another_shard_count_is_refused(seeded_database: str, fresh_nats: str) -> None:
    nc = await nats.connect(fresh_nats)
    try:
        js = nc.jetstream()
        await ensure_orders_stream(js, make_settings(seeded_database, fresh_nats))
        await ensure_orders_stream(js, make_settings(seeded_database, fresh_nats))  # idempotent
        with pytest.raises(ShardCountMismatch, match="stream ORDERS records 16 shards"):
            await ensure_orders_stream(js, make_settings(seeded_database, fresh_nats, shard_count=32))
    finally:
        await nc.close()


def shard(customer_id: str) -> int:
    from brokerage.domain.sharding import shard_for

    return shard_for(customer_id, 16)


async def test_a_relay_that_dies_between_the_ack_and_its_commit_publishes_nothing_twice(
    app: OrderServiceApp,
    stub: orders_pb2_grpc.OrderServiceStub,
    db: psycopg.Connection,
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    publish_all = relay_module.publish_all
    crashes = 0

    async def crash_once_after_the_ack(js: Any, messages: Any, timeout: float) -> None:
        nonlocal crashes
        await publish_all(js, messages, timeout)
        if crashes == 0:
            crashes += 1
            raise ConnectionError("relay lost its database connection after JetStream acknowledged")

    monkeypatch.setattr(relay_module, "publish_all", crash_once_after_the_ack)
    orders = [await stub.PlaceOrder(place(customer=str(c), key="k"), timeout=5) for c in range(1, 6)]
    await wait_until_published(db)

    assert crashes == 1
    ids = [message_id for message_id, _ in await stream_messages(settings.nats_url)]
    assert sorted(ids) == sorted(o.order_id for o in orders)  # the republished batch was deduplicated


async def test_the_service_starts_and_takes_orders_while_nats_has_never_been_reachable(
    seeded_database: str, db: psycopg.Connection
) -> None:
    from devtools.stack import free_port

    settings = make_settings(seeded_database, f"nats://127.0.0.1:{free_port()}")  # nothing listens there
    async with running_app(settings) as app, customer_channel(f"127.0.0.1:{app.running.port}") as channel:
        order = await orders_pb2_grpc.OrderServiceStub(channel).PlaceOrder(place(), timeout=5)

    assert order.status == common_pb2.ORDER_STATUS_PLACED
    assert db.execute("SELECT count(*) FROM outbox").fetchone() == (1,)  # waits for NATS


async def test_processes_starting_together_on_a_fresh_database_agree_on_the_shard_count(database_url: str) -> None:
    from brokerage.storage.pool import open_pool
    from brokerage.storage.shard_config import check_shard_count

    first = await psycopg.AsyncConnection.connect(database_url)  # another process, mid-way through recording it
    await first.execute("INSERT INTO shard_config (shard_count) VALUES (16)")
    pool = await open_pool(make_settings(database_url, "nats://unused"))
    try:
        second = asyncio.create_task(check_shard_count(pool, 16))
        await asyncio.sleep(0.3)
        assert not second.done()  # waiting for the first to commit
        await first.commit()
        await asyncio.wait_for(second, timeout=5)
    finally:
        await first.close()
        await pool.close()
