"""The post-trade feed (docs/executions-feed.md): every booked fill goes out on the EXECUTIONS stream from a row
written in its booking transaction, Nats-Msg-Id = exec_id, once however often the venue reports it, and once across a
relay that published and died before it could take the row out."""

from __future__ import annotations

import asyncio
import json
from decimal import Decimal

import nats
import psycopg
import pytest

from brokerage.domain.sharding import shard_for
from brokerage.messaging.streams import EXECUTIONS_STREAM
from brokerage.proto import callback_pb2_grpc, orders_pb2_grpc
from brokerage.settings import Settings
from callback_service.main import CallbackApp
from tests.integration.conftest import SHARD_COUNT
from tests.integration.test_execution import eventually
from tests.integration.test_settlement import FILL, NEW, PARTIAL, at_exchange, report, send

pytestmark = pytest.mark.integration


async def feed(settings: Settings, expected: int) -> list[tuple[str, str, dict[str, object]]]:
    """The stream's messages, once it holds `expected`: (Nats-Msg-Id, subject, message) each."""
    client = await nats.connect(settings.nats_url, connect_timeout=5)
    try:
        js = client.jetstream()

        async def holds() -> bool:
            return (await js.stream_info(EXECUTIONS_STREAM)).state.messages >= expected

        await eventually(holds, f"{expected} messages on {EXECUTIONS_STREAM}")
        subscription = await js.pull_subscribe("executions.*", stream=EXECUTIONS_STREAM)
        messages = await subscription.fetch(100, timeout=2)
        return [(m.headers["Nats-Msg-Id"], m.subject, json.loads(m.data)) for m in messages]  # type: ignore[index]
    finally:
        await client.close()


async def test_each_booked_fill_is_on_the_feed_once_with_its_order_and_exact_price(
    stub: orders_pb2_grpc.OrderServiceStub,
    reporter: callback_pb2_grpc.CallbackServiceStub,
    callback: CallbackApp,
    settings: Settings,
    db: psycopg.Connection,
) -> None:
    order = await at_exchange(stub, db, quantity=10)
    partial = report(order, PARTIAL, last=4, price="230.0125", cumulative=4)
    fill = report(order, FILL, last=6, price="231.00", cumulative=10)

    await send(reporter, report(order, NEW), partial, fill, partial, fill)  # the venue reports twice

    messages = await feed(settings, expected=2)
    await asyncio.sleep(0.5)  # nothing more comes
    assert len(await feed(settings, expected=2)) == 2
    assert [(m[0], m[1]) for m in messages] == [
        (partial.exec_id, f"executions.{shard_for('1', SHARD_COUNT)}"),
        (fill.exec_id, f"executions.{shard_for('1', SHARD_COUNT)}"),
    ]
    first = messages[0][2]
    assert {k: first[k] for k in ("order_id", "customer_id", "symbol", "side", "quantity", "price")} == {
        "order_id": order.order_id,
        "customer_id": "1",
        "symbol": "AAPL",
        "side": "BUY",
        "quantity": 4,
        "price": "230.0125",
    }
    assert Decimal(str(messages[1][2]["price"])) == Decimal("231.00")
    assert db.execute("SELECT count(*) FROM execution_feed").fetchone() == (0,)  # relayed, gone


async def test_a_relay_that_published_and_died_before_taking_the_row_out_publishes_it_again_once(
    stub: orders_pb2_grpc.OrderServiceStub,
    reporter: callback_pb2_grpc.CallbackServiceStub,
    callback: CallbackApp,
    settings: Settings,
    db: psycopg.Connection,
) -> None:
    order = await at_exchange(stub, db, quantity=1)
    fill = report(order, FILL, last=1, price="230.00", cumulative=1)
    await send(reporter, fill)
    [(exec_id, subject, message)] = await feed(settings, expected=1)

    # The row as it was before a relay's delete that never committed: the next relay publishes it again.
    db.execute(
        "INSERT INTO execution_feed (exec_id, subject, payload) VALUES (%s, %s, %s)",
        (exec_id, subject, json.dumps(message).encode()),
    )
    callback.feed.wake()
    await eventually(lambda: db.execute("SELECT count(*) FROM execution_feed").fetchone() == (0,), "the copy relayed")

    assert [m[0] for m in await feed(settings, expected=1)] == [fill.exec_id]
