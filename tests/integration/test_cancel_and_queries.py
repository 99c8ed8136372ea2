"""CancelOrder (DESIGN.md rule 6), GetOrder, ListOrders, GetAccount and ListPositions."""

from __future__ import annotations

from decimal import Decimal

import grpc
import psycopg
import pytest

from brokerage.proto import common_pb2, orders_pb2, orders_pb2_grpc
from tests.integration.conftest import available, outbox_written, snapshot, transfers_of
from tests.integration.test_place_order import place

pytestmark = pytest.mark.integration

CANCELED = common_pb2.ORDER_STATUS_CANCELED


def cancel(order_id: str, customer: str = "1") -> orders_pb2.CancelOrderRequest:
    return orders_pb2.CancelOrderRequest(customer_id=customer, order_id=order_id)


async def test_canceling_an_unclaimed_order_releases_its_cash(
    stub: orders_pb2_grpc.OrderServiceStub, db: psycopg.Connection
) -> None:
    order = await stub.PlaceOrder(place(), timeout=5)

    canceled = await stub.CancelOrder(cancel(order.order_id), timeout=5)

    assert canceled.status == CANCELED and canceled.reserved_amount == "0.00"
    assert available(db, "1") == (Decimal("100000.00"), Decimal("0"))
    assert transfers_of(db, order.order_id) == [
        ("reserve", "USD", "available", "reserved", Decimal("2388.80")),
        ("release", "USD", "reserved", "available", Decimal("2388.80")),
    ]
    events = db.execute("SELECT event_type FROM order_events WHERE order_id = %s ORDER BY sequence", (order.order_id,))
    assert [e for (e,) in events] == ["placed", "canceled"]


async def test_a_retried_cancel_returns_the_canceled_order_and_releases_once(
    stub: orders_pb2_grpc.OrderServiceStub, db: psycopg.Connection
) -> None:
    order = await stub.PlaceOrder(place(), timeout=5)
    first = await stub.CancelOrder(cancel(order.order_id), timeout=5)

    again = await stub.CancelOrder(cancel(order.order_id), timeout=5)

    assert again == first
    assert available(db, "1") == (Decimal("100000.00"), Decimal("0"))


async def test_canceling_a_sell_releases_its_shares(
    stub: orders_pb2_grpc.OrderServiceStub, db: psycopg.Connection
) -> None:
    db.execute("INSERT INTO positions (customer_id, symbol, quantity, cost_basis) VALUES ('1', 'MSFT', 5, 2000)")
    order = await stub.PlaceOrder(place(symbol="MSFT", side=common_pb2.SIDE_SELL, quantity=5), timeout=5)

    await stub.CancelOrder(cancel(order.order_id), timeout=5)

    assert db.execute("SELECT quantity, reserved FROM positions").fetchall() == [(5, 0)]


async def test_canceling_a_claimed_order_asks_the_exchange_and_keeps_its_reservation_until_it_answers(
    stub: orders_pb2_grpc.OrderServiceStub, db: psycopg.Connection
) -> None:
    order = await stub.PlaceOrder(place(), timeout=5)
    db.execute("UPDATE orders SET claimed_at = now() WHERE order_id = %s", (order.order_id,))
    held = available(db, "1")
    written = outbox_written(db)

    requested = await stub.CancelOrder(cancel(order.order_id), timeout=5)
    again = await stub.CancelOrder(cancel(order.order_id), timeout=5)

    assert (requested.status, requested.cancel_requested) == (common_pb2.ORDER_STATUS_PLACED, True)
    assert (again.status, again.cancel_requested) == (common_pb2.ORDER_STATUS_PLACED, True)
    assert requested.reserved_amount == order.reserved_amount and available(db, "1") == held
    assert outbox_written(db) == written + 1  # one message, however often it is asked
    events = db.execute(
        "SELECT event_type, cancel_requested FROM order_events WHERE order_id = %s ORDER BY sequence", (order.order_id,)
    ).fetchall()
    assert events == [("placed", False), ("cancel_requested", True)]


async def test_a_rejected_order_cannot_be_canceled(stub: orders_pb2_grpc.OrderServiceStub) -> None:
    order = await stub.PlaceOrder(place(symbol="TSLA", quantity=1000), timeout=5)

    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.CancelOrder(cancel(order.order_id), timeout=5)

    assert raised.value.code() == grpc.StatusCode.FAILED_PRECONDITION


async def test_another_customers_order_is_not_found(
    stub: orders_pb2_grpc.OrderServiceStub, db: psycopg.Connection
) -> None:
    order = await stub.PlaceOrder(place(customer="1"), timeout=5)
    before = snapshot(db)

    for call in (
        stub.CancelOrder(cancel(order.order_id, customer="2"), timeout=5),
        stub.GetOrder(orders_pb2.GetOrderRequest(customer_id="2", order_id=order.order_id), timeout=5),
        stub.CancelOrder(cancel("no-such-order"), timeout=5),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await call
        assert raised.value.code() == grpc.StatusCode.NOT_FOUND
    assert snapshot(db) == before


async def test_list_orders_pages_newest_first_with_filters(stub: orders_pb2_grpc.OrderServiceStub) -> None:
    placed = [await stub.PlaceOrder(place(key=f"k-{i}", quantity=1), timeout=5) for i in range(5)]
    rejected = await stub.PlaceOrder(place(key="big", symbol="TSLA", quantity=1000), timeout=5)

    seen: list[str] = []
    token = ""
    while True:
        page = await stub.ListOrders(
            orders_pb2.ListOrdersRequest(customer_id="1", page_size=2, page_token=token), timeout=5
        )
        seen += [o.order_id for o in page.orders]
        token = page.next_page_token
        if not token:
            break
    assert seen == [rejected.order_id, *reversed([o.order_id for o in placed])]

    only_rejected = await stub.ListOrders(
        orders_pb2.ListOrdersRequest(customer_id="1", status=common_pb2.ORDER_STATUS_REJECTED), timeout=5
    )
    assert [o.order_id for o in only_rejected.orders] == [rejected.order_id]
    sells = await stub.ListOrders(orders_pb2.ListOrdersRequest(customer_id="1", side=common_pb2.SIDE_SELL), timeout=5)
    assert list(sells.orders) == []


@pytest.mark.parametrize(
    "request_",
    [
        orders_pb2.ListOrdersRequest(customer_id="1", page_token="garbage!"),
        orders_pb2.ListOrdersRequest(customer_id="1", page_size=-1),
        orders_pb2.ListOrdersRequest(customer_id="1", status=99),  # type: ignore[arg-type]
    ],
)
async def test_list_orders_refuses_malformed_requests(
    stub: orders_pb2_grpc.OrderServiceStub, request_: orders_pb2.ListOrdersRequest
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.ListOrders(request_, timeout=5)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_unknown_customers_are_not_found(stub: orders_pb2_grpc.OrderServiceStub) -> None:
    calls = [
        stub.GetAccount(orders_pb2.GetAccountRequest(customer_id="nobody"), timeout=5),
        stub.ListPositions(orders_pb2.ListPositionsRequest(customer_id="nobody"), timeout=5),
        stub.ListOrders(orders_pb2.ListOrdersRequest(customer_id="nobody"), timeout=5),
    ]
    for call in calls:
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await call
        assert raised.value.code() == grpc.StatusCode.NOT_FOUND
