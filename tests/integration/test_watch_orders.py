"""WatchOrders: a customer's order events replayed after a resume token, then followed as they are committed."""

from __future__ import annotations

import asyncio

import grpc
import psycopg
import pytest

from brokerage.proto import callback_pb2_grpc, common_pb2, orders_pb2, orders_pb2_grpc
from brokerage.settings import Settings
from callback_service.main import CallbackApp
from order_service.main import OrderServiceApp
from tests.identity import customer_channel
from tests.integration.conftest import running_app
from tests.integration.test_place_order import place
from tests.integration.test_settlement import AUTH, FILL, report

pytestmark = pytest.mark.integration


def watch(stub: orders_pb2_grpc.OrderServiceStub, resume_token: str = "", customer: str = "1") -> grpc.aio.Call:
    return stub.WatchOrders(orders_pb2.WatchOrdersRequest(customer_id=customer, resume_token=resume_token))


async def take(stream: grpc.aio.Call, count: int, timeout: float = 10) -> list[orders_pb2.OrderEvent]:
    async with asyncio.timeout(timeout):
        return [await stream.read() for _ in range(count)]


async def test_a_watch_replays_then_follows_and_resumes_after_a_disconnect_missing_nothing_seeing_nothing_twice(
    stub: orders_pb2_grpc.OrderServiceStub, db: psycopg.Connection
) -> None:
    first = [await stub.PlaceOrder(place(key=f"a-{i}", quantity=1), timeout=5) for i in range(3)]
    stream = watch(stub)
    replayed = await take(stream, 3)
    live_order = await stub.PlaceOrder(place(key="live", quantity=1), timeout=5)
    (live,) = await take(stream, 1)
    stream.cancel()  # the client goes away

    meanwhile = await stub.PlaceOrder(place(key="meanwhile", quantity=1), timeout=5)
    await stub.CancelOrder(orders_pb2.CancelOrderRequest(customer_id="1", order_id=meanwhile.order_id), timeout=5)
    resumed = watch(stub, resume_token=live.resume_token)
    after = await take(resumed, 2)
    resumed.cancel()

    assert [e.order.order_id for e in replayed] == [o.order_id for o in first]
    assert {e.event_type for e in replayed} == {"placed"} and live.order.order_id == live_order.order_id
    assert [(e.order.order_id, e.event_type) for e in after] == [
        (meanwhile.order_id, "placed"),
        (meanwhile.order_id, "canceled"),
    ]
    assert after[1].order.status == common_pb2.ORDER_STATUS_CANCELED
    tokens = [e.resume_token for e in (*replayed, live, *after)]
    assert len(set(tokens)) == len(tokens)


async def test_settlements_reach_a_watcher_by_the_doorbell_long_before_its_poll(
    settings: Settings, callback: CallbackApp, db: psycopg.Connection
) -> None:
    slow_poll = settings.model_copy(update={"watch_poll_seconds": 60})
    async with (
        running_app(slow_poll) as app,
        customer_channel(f"127.0.0.1:{app.running.port}") as orders_channel,
        grpc.aio.insecure_channel(f"127.0.0.1:{callback.running.port}") as callback_channel,
    ):
        stub = orders_pb2_grpc.OrderServiceStub(orders_channel)
        reporter = callback_pb2_grpc.CallbackServiceStub(callback_channel)
        await wait_connected(app)
        order = await stub.PlaceOrder(place(quantity=2), timeout=5)
        db.execute("UPDATE orders SET claimed_at = now() WHERE order_id = %s", (order.order_id,))
        stream = watch(stub)
        (placed,) = await take(stream, 1)

        await reporter.ReportExecution(report(order, FILL, last=2, price="230.00", cumulative=2), metadata=AUTH)
        (filled,) = await take(stream, 1, timeout=5)  # a 60 s poll would never make it
        stream.cancel()

    assert (placed.event_type, filled.event_type) == ("placed", "filled")
    assert (filled.order.filled_quantity, filled.order.average_fill_price) == (2, "230.00")


async def test_a_watch_of_an_unknown_customer_or_with_a_forged_resume_token_is_refused(
    stub: orders_pb2_grpc.OrderServiceStub,
) -> None:
    for request, code in (
        (orders_pb2.WatchOrdersRequest(customer_id="nobody"), grpc.StatusCode.NOT_FOUND),
        (orders_pb2.WatchOrdersRequest(customer_id="1", resume_token="bm9wZQ=="), grpc.StatusCode.INVALID_ARGUMENT),
        (orders_pb2.WatchOrdersRequest(), grpc.StatusCode.UNAUTHENTICATED),  # names no customer, so carries no token
    ):
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stub.WatchOrders(request).read()
        assert refused.value.code() == code


async def wait_connected(app: OrderServiceApp) -> None:
    """The doorbell rings only on a connected link; the relay connects it soon after start."""
    async with asyncio.timeout(10):
        while not app.link.connected:
            await asyncio.sleep(0.05)
