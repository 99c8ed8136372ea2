"""PlaceOrder against real PostgreSQL and NATS: DESIGN.md rules 1 to 3 and the error contract."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from decimal import Decimal

import grpc
import psycopg
import pytest
from google.rpc import error_details_pb2

from brokerage.domain.errors import UnknownCustomer
from brokerage.domain.orders import OrderStatus, Side
from brokerage.proto import common_pb2, orders_pb2, orders_pb2_grpc
from brokerage.storage.orders import NewOrder, OrderStore
from brokerage.storage.pool import open_pool
from tests.integration.conftest import available, make_settings, outbox_written, snapshot, transfers_of

pytestmark = pytest.mark.integration

BUY, SELL = common_pb2.SIDE_BUY, common_pb2.SIDE_SELL
PLACED, REJECTED = common_pb2.ORDER_STATUS_PLACED, common_pb2.ORDER_STATUS_REJECTED


def place(customer: str = "1", key: str = "k-1", symbol: str = "AAPL", side: int = BUY, quantity: int = 10):
    return orders_pb2.PlaceOrderRequest(
        customer_id=customer, client_order_id=key, symbol=symbol, side=side, quantity=quantity
    )


async def test_a_buy_is_placed_and_reserves_quantity_times_the_protection_price(
    stub: orders_pb2_grpc.OrderServiceStub, db: psycopg.Connection
) -> None:
    order = await stub.PlaceOrder(place(quantity=10), timeout=5)

    assert order.status == PLACED and order.sequence == 1
    assert order.protection_price == "238.88"  # 227.50 x 1.05, up to the cent
    assert order.reserved_amount == "2388.80"
    account = await stub.GetAccount(orders_pb2.GetAccountRequest(customer_id="1"), timeout=5)
    assert (account.available, account.reserved) == ("97611.20", "2388.80")
    assert transfers_of(db, order.order_id) == [("reserve", "USD", "available", "reserved", Decimal("2388.80"))]


async def test_the_same_request_again_returns_the_same_order_and_reserves_once(
    stub: orders_pb2_grpc.OrderServiceStub, db: psycopg.Connection
) -> None:
    first = await stub.PlaceOrder(place(), timeout=5)
    again = await stub.PlaceOrder(place(), timeout=5)

    assert again == first
    assert available(db, "1") == (Decimal("97611.20"), Decimal("2388.80"))


async def test_twenty_copies_at_once_make_one_order_and_one_reservation(
    stub: orders_pb2_grpc.OrderServiceStub, db: psycopg.Connection
) -> None:
    orders = await asyncio.gather(*(stub.PlaceOrder(place(key="same"), timeout=10) for _ in range(20)))

    assert len({o.order_id for o in orders}) == 1
    assert db.execute("SELECT count(*) FROM orders").fetchone() == (1,)
    assert db.execute("SELECT count(*) FROM transfers WHERE kind = 'reserve'").fetchone() == (1,)
    assert outbox_written(db) == 1
    assert available(db, "1") == (Decimal("97611.20"), Decimal("2388.80"))


async def test_the_same_key_for_another_order_is_already_exists_and_changes_nothing(
    stub: orders_pb2_grpc.OrderServiceStub, db: psycopg.Connection
) -> None:
    await stub.PlaceOrder(place(), timeout=5)
    before = snapshot(db)

    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.PlaceOrder(place(quantity=11), timeout=5)

    assert raised.value.code() == grpc.StatusCode.ALREADY_EXISTS
    assert snapshot(db) == before


async def test_fifty_concurrent_buys_place_exactly_the_affordable_ones(
    stub: orders_pb2_grpc.OrderServiceStub, db: psycopg.Connection
) -> None:
    # 100000.00 buys 41 orders of 10 AAPL at 2388.80 each (97940.80); the 42nd would need more.
    orders = await asyncio.gather(*(stub.PlaceOrder(place(key=f"burst-{i}"), timeout=20) for i in range(50)))

    placed = sorted(o.sequence for o in orders if o.status == PLACED)
    rejected = [o for o in orders if o.status == REJECTED]
    assert len(placed) == 41 and len(rejected) == 9
    assert placed == list(range(1, 42))  # commit order is sequence order: the first 41 won
    assert sorted(o.sequence for o in orders) == list(range(1, 51))  # gap-free
    assert all(o.status_reason.startswith("insufficient buying power: requires 2388.80, available") for o in rejected)
    assert available(db, "1") == (Decimal("2059.20"), Decimal("97940.80"))
    # The reservations were committed in sequence order.
    entry_order = db.execute(
        "SELECT o.sequence FROM transfers t JOIN orders o USING (order_id) WHERE t.kind = 'reserve'"
        " ORDER BY t.transfer_id"
    ).fetchall()
    assert [s for (s,) in entry_order] == placed


async def test_an_order_larger_than_the_cash_is_stored_rejected_with_the_amounts(
    stub: orders_pb2_grpc.OrderServiceStub, db: psycopg.Connection
) -> None:
    order = await stub.PlaceOrder(place(symbol="TSLA", quantity=1000), timeout=5)

    assert order.status == REJECTED
    assert order.status_reason == "insufficient buying power: requires 261190.00, available 100000.00"
    assert available(db, "1") == (Decimal("100000.00"), Decimal("0"))
    assert outbox_written(db) == 0
    fetched = await stub.GetOrder(orders_pb2.GetOrderRequest(customer_id="1", order_id=order.order_id), timeout=5)
    assert fetched == order


async def test_a_sell_reserves_shares_or_is_rejected_for_insufficient_shares(
    stub: orders_pb2_grpc.OrderServiceStub, db: psycopg.Connection
) -> None:
    db.execute("INSERT INTO positions (customer_id, symbol, quantity, cost_basis) VALUES ('1', 'MSFT', 5, 2000)")

    sold = await stub.PlaceOrder(place(key="s-1", symbol="MSFT", side=SELL, quantity=3), timeout=5)
    too_many = await stub.PlaceOrder(place(key="s-2", symbol="MSFT", side=SELL, quantity=3), timeout=5)

    assert sold.status == PLACED and sold.protection_price == "397.29"  # 418.20 x 0.95, down to the cent
    assert too_many.status == REJECTED
    assert too_many.status_reason == "insufficient shares: requires 3, available 2"
    positions = await stub.ListPositions(orders_pb2.ListPositionsRequest(customer_id="1"), timeout=5)
    assert [(p.symbol, p.quantity, p.reserved) for p in positions.positions] == [("MSFT", 5, 3)]


@pytest.mark.parametrize(
    ("request_", "fields"),
    [
        (place(key=""), {"client_order_id"}),
        (place(symbol="NOPE"), {"symbol"}),
        (place(side=common_pb2.SIDE_UNSPECIFIED), {"side"}),
        (place(quantity=0), {"quantity"}),
        (place(quantity=-1), {"quantity"}),
        (place(quantity=1_000_001), {"quantity"}),
        (place(key="", quantity=0), {"client_order_id", "quantity"}),
    ],
)
async def test_malformed_input_is_invalid_argument_with_field_violations_and_stores_nothing(
    stub: orders_pb2_grpc.OrderServiceStub,
    db: psycopg.Connection,
    request_: orders_pb2.PlaceOrderRequest,
    fields: set,
) -> None:
    before = snapshot(db)

    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.PlaceOrder(request_, timeout=5)

    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    details = _bad_request(raised.value)
    assert {v.field for v in details.field_violations} == fields
    assert snapshot(db) == before


async def test_an_unknown_customer_is_not_found_and_stores_nothing(
    stub: orders_pb2_grpc.OrderServiceStub, db: psycopg.Connection
) -> None:
    before = snapshot(db)

    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.PlaceOrder(place(customer="no-such-customer"), timeout=5)

    assert raised.value.code() == grpc.StatusCode.NOT_FOUND
    assert snapshot(db) == before


async def test_a_halted_symbol_is_stored_rejected(
    stub: orders_pb2_grpc.OrderServiceStub, db: psycopg.Connection
) -> None:
    db.execute("SELECT set_trading_halt('SYMBOL', 'GOOGL', NULL, 'restricted', false, 'iss', 'ops', 'test')")

    order = await stub.PlaceOrder(place(symbol="GOOGL"), timeout=5)

    assert order.status == REJECTED and order.status_reason == "trading in GOOGL is halted"
    assert order.reject_code == orders_pb2.REJECT_CODE_TRADING_HALTED
    assert available(db, "1") == (Decimal("100000.00"), Decimal("0"))


async def test_a_stale_quote_is_stored_rejected(stub: orders_pb2_grpc.OrderServiceStub, db: psycopg.Connection) -> None:
    db.execute("UPDATE quotes SET quoted_at = now() - interval '2 hours' WHERE symbol = 'AMZN'")
    db.execute("DELETE FROM quotes WHERE symbol = 'META'")
    await asyncio.sleep(0.3)

    stale = await stub.PlaceOrder(place(key="a", symbol="AMZN"), timeout=5)
    missing = await stub.PlaceOrder(place(key="b", symbol="META"), timeout=5)

    assert stale.status == REJECTED and "stale" in stale.status_reason
    assert stale.reject_code == orders_pb2.REJECT_CODE_STALE_QUOTE
    assert missing.status == REJECTED and missing.status_reason == "no reference price for META"
    assert missing.reject_code == orders_pb2.REJECT_CODE_NO_QUOTE
    assert [stale.sequence, missing.sequence] == [1, 2]  # rejected orders are orders too


def _bad_request(error: grpc.aio.AioRpcError) -> error_details_pb2.BadRequest:
    for key, value in error.trailing_metadata() or ():
        if key == "grpc-status-details-bin":
            from google.rpc import status_pb2

            status = status_pb2.Status.FromString(value)
            for detail in status.details:
                bad_request = error_details_pb2.BadRequest()
                if detail.Unpack(bad_request):
                    return bad_request
    raise AssertionError("no google.rpc.BadRequest in the error details")


def new_order(order_id: str, customer_id: str, symbol: str = "AAPL") -> NewOrder:
    """A buy of 1 share priced as placement would price it, straight for the store."""
    return NewOrder(
        order_id=order_id,
        customer_id=customer_id,
        client_order_id=f"key-{order_id}",
        symbol=symbol,
        side=Side.BUY,
        quantity=1,
        protection_price=Decimal("238.88"),
        reference_price=Decimal("227.50"),
        reject_code=None,
        reject_reason=None,
        subject="orders.0",
        payload=b"",
    )


@pytest.fixture
async def store(seeded_database: str) -> AsyncIterator[OrderStore]:
    """An OrderStore whose single flusher batches every placement submitted in the same moment."""
    pool = await open_pool(make_settings(seeded_database, "nats://unused"))
    try:
        yield OrderStore(pool, placement_batch=64, placement_flushers=1)
    finally:
        await pool.close()


async def test_an_order_the_database_refuses_does_not_fail_the_others_in_its_batch(store: OrderStore) -> None:
    batch = [new_order(f"order-{i}", str(i % 5 + 1)) for i in range(10)]
    batch.insert(5, new_order("order-99", "1", symbol="DELISTED"))  # no such instrument: the database refuses it

    results = await asyncio.gather(*(store.place(n) for n in batch), return_exceptions=True)

    refused = results.pop(5)
    assert isinstance(refused, psycopg.errors.ForeignKeyViolation)
    assert [r.status for r in results] == [OrderStatus.PLACED] * 10  # type: ignore[union-attr]


async def test_an_unknown_customer_in_a_batch_is_refused_alone(store: OrderStore) -> None:
    customers = ("1", "nobody", "2")

    results = await asyncio.gather(*(store.place(new_order(f"o-{c}", c)) for c in customers), return_exceptions=True)

    assert isinstance(results[1], UnknownCustomer)
    assert [r.customer_id for r in (results[0], results[2])] == ["1", "2"]  # type: ignore[union-attr]


def test_placement_never_scans_the_orders_table_even_when_its_statistics_say_it_is_empty(
    db: psycopg.Connection,
) -> None:
    # A fresh deployment analyzes empty tables; a cached sequential-scan plan would then make every placement
    # read every order. The per-transaction statistics show whether any statement scanned the table.
    with db.transaction():
        db.execute("ANALYZE orders")
        for i in range(12):
            db.execute(
                "SELECT * FROM place_orders_v3(ARRAY[%s], ARRAY['1'], ARRAY[%s], ARRAY['AAPL'], ARRAY['BUY'],"
                " ARRAY[1]::bigint[], ARRAY[238.88], ARRAY[227.50], ARRAY[NULL], ARRAY[NULL], ARRAY['orders.1'],"
                " ARRAY[''::bytea], ARRAY[NULL]::timestamptz[])",
                (f"order-{i}", f"key-{i}"),
            )
        scans = db.execute("SELECT seq_scan FROM pg_stat_xact_user_tables WHERE relname = 'orders'").fetchone()
    assert scans == (0,)
