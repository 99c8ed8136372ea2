"""Settlement (DESIGN.md rules 1, 6, 7): CallbackService in-process against real PostgreSQL, fed execution
reports as the exchange sends them, at least once, late and out of order. Orders are placed through an
in-process OrderService and marked as at the exchange the way a worker records them."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from decimal import Decimal
from itertools import count

import grpc
import psycopg
import pytest

from brokerage.domain.orders import ALLOWED_TRANSITIONS
from brokerage.proto import callback_pb2, callback_pb2_grpc, common_pb2, orders_pb2, orders_pb2_grpc
from brokerage.wire import reports_batch, timestamp
from tests.integration.conftest import CALLBACK_TOKEN, available, snapshot, transfers_of
from tests.integration.test_place_order import place

pytestmark = pytest.mark.integration

AUTH = (("authorization", f"Bearer {CALLBACK_TOKEN}"),)
NEW, PARTIAL, FILL, CANCELED, REJECTED = (
    common_pb2.EXEC_TYPE_NEW,
    common_pb2.EXEC_TYPE_PARTIAL_FILL,
    common_pb2.EXEC_TYPE_FILL,
    common_pb2.EXEC_TYPE_CANCELED,
    common_pb2.EXEC_TYPE_REJECTED,
)
_exec_ids = count(1)


def report(
    order: orders_pb2.Order, exec_type: int, *, last: int = 0, price: str = "", cumulative: int = 0, exec_id: str = ""
) -> callback_pb2.ExecutionReport:
    return callback_pb2.ExecutionReport(
        exec_id=exec_id or f"E{next(_exec_ids)}",
        order_id=order.order_id,
        venue_order_id="V-" + order.order_id,
        exec_type=exec_type,  # type: ignore[arg-type]
        last_quantity=last,
        last_price=price,
        cumulative_quantity=cumulative,
        reason="canceled at the customer's request" if exec_type == CANCELED else "",
        transact_time=timestamp(datetime.now(UTC)),
        symbol=order.symbol,
        side=order.side,
        order_quantity=order.quantity,
    )


async def send(stub: callback_pb2_grpc.CallbackServiceStub, *reports: callback_pb2.ExecutionReport) -> list[bool]:
    """Delivers the reports one after another; returns each one's `duplicate` flag."""
    return [(await stub.ReportExecution(r, metadata=AUTH, timeout=5)).duplicate for r in reports]


async def at_exchange(
    stub: orders_pb2_grpc.OrderServiceStub, db: psycopg.Connection, **fields: object
) -> orders_pb2.Order:
    """A buy (or sell) placed and recorded SUBMITTED, as a worker leaves it once the exchange acknowledged it."""
    order = await stub.PlaceOrder(place(**fields), timeout=5)  # type: ignore[arg-type]
    assert order.status == common_pb2.ORDER_STATUS_PLACED, order.status_reason
    db.execute("UPDATE orders SET claimed_at = now() WHERE order_id = %s", (order.order_id,))
    db.execute("SELECT record_submitted(%s, %s)", (order.order_id, "V-" + order.order_id))
    return order


def customers_books(db: psycopg.Connection) -> dict[str, object]:
    """Everything of the customers' that settlement may change: their orders, cash, shares, events and transfers."""
    return {
        **{t: db.execute(f"SELECT * FROM {t} ORDER BY 1").fetchall() for t in ("orders", "balances", "positions")},
        "order_events": db.execute("SELECT * FROM order_events ORDER BY 1, 2").fetchall(),
        "transfers": db.execute("SELECT * FROM transfers WHERE customer_id IS NOT NULL ORDER BY 1").fetchall(),
    }


def error_account(db: psycopg.Connection) -> list[tuple[object, ...]]:
    """The transfers into and out of the firm's error account, in booking order: (key, asset, from, to, amount)."""
    rows = db.execute(
        "SELECT transfer_key, asset, debit_account, credit_account, amount FROM transfers"
        " WHERE 'error' IN (debit_account, credit_account) ORDER BY transfer_id"
    )
    return [tuple(row) for row in rows.fetchall()]


def order_row(db: psycopg.Connection, order_id: str) -> tuple[object, ...]:
    row = db.execute(
        "SELECT status, filled_quantity, average_fill_price, reserved_cash, reserved_shares FROM orders "
        "WHERE order_id = %s",
        (order_id,),
    ).fetchone()
    assert row is not None
    return tuple(row)


def holdings(db: psycopg.Connection, customer: str = "1") -> dict[str, tuple[int, int, Decimal]]:
    rows = db.execute(
        "SELECT symbol, quantity, reserved, average_cost FROM positions WHERE customer_id = %s", (customer,)
    )
    return {symbol: (quantity, reserved, cost) for symbol, quantity, reserved, cost in rows.fetchall()}


async def test_a_buy_filled_in_parts_moves_its_real_cost_out_of_the_reservation_and_returns_the_rest(
    stub: orders_pb2_grpc.OrderServiceStub, reporter: callback_pb2_grpc.CallbackServiceStub, db: psycopg.Connection
) -> None:
    before = available(db, "1")
    order = await at_exchange(stub, db, quantity=10)  # protection 238.88: 2388.80 reserved

    await send(
        reporter,
        report(order, NEW),
        report(order, PARTIAL, last=4, price="230.00", cumulative=4),
        report(order, FILL, last=6, price="231.00", cumulative=10),
    )

    cost = Decimal("4") * Decimal("230.00") + Decimal("6") * Decimal("231.00")
    assert order_row(db, order.order_id) == ("FILLED", 10, Decimal("230.6000"), 0, 0)
    assert available(db, "1") == (before[0] - cost, Decimal(0))
    assert holdings(db) == {"AAPL": (10, 0, Decimal("230.6000"))}
    events = db.execute(
        "SELECT event_type, filled_quantity FROM order_events WHERE order_id = %s ORDER BY sequence", (order.order_id,)
    ).fetchall()
    assert events == [("placed", 0), ("submitted", 0), ("partially_filled", 4), ("filled", 10)]


async def test_the_exchanges_new_for_an_order_recorded_submitted_is_acknowledged_and_writes_nothing(
    stub: orders_pb2_grpc.OrderServiceStub, reporter: callback_pb2_grpc.CallbackServiceStub, db: psycopg.Connection
) -> None:
    order = await at_exchange(stub, db)
    version = "SELECT xmin::text, updated_at FROM orders WHERE order_id = %s"
    before = db.execute(version, (order.order_id,)).fetchone()
    balances_version = db.execute("SELECT xmin::text FROM balances WHERE customer_id = '1'").fetchone()
    new = report(order, NEW)

    # Nothing of it is news, once or twice: no executions row keeps it, no lock is taken, nothing is rewritten.
    assert await send(reporter, new, new) == [False, False]

    assert db.execute(version, (order.order_id,)).fetchone() == before
    assert db.execute("SELECT xmin::text FROM balances WHERE customer_id = '1'").fetchone() == balances_version
    assert db.execute("SELECT count(*) FROM executions WHERE order_id = %s", (order.order_id,)).fetchone() == (0,)


async def test_the_exchanges_new_before_the_worker_recorded_it_submits_the_order_once(
    stub: orders_pb2_grpc.OrderServiceStub, reporter: callback_pb2_grpc.CallbackServiceStub, db: psycopg.Connection
) -> None:
    order = await stub.PlaceOrder(place(), timeout=5)
    db.execute("UPDATE orders SET claimed_at = now() WHERE order_id = %s", (order.order_id,))  # the worker's claim
    new = report(order, NEW)

    # The first is booked; its twin then finds the order SUBMITTED at this venue id: nothing more to do.
    assert await send(reporter, new, new) == [False, False]

    assert order_row(db, order.order_id)[0] == "SUBMITTED"
    booked = db.execute("SELECT exec_type FROM executions WHERE order_id = %s", (order.order_id,)).fetchall()
    assert booked == [("NEW",)]
    events = db.execute("SELECT event_type FROM order_events WHERE order_id = %s ORDER BY sequence", (order.order_id,))
    assert events.fetchall() == [("placed",), ("submitted",)]


async def test_a_sell_releases_its_shares_and_credits_the_proceeds(
    stub: orders_pb2_grpc.OrderServiceStub, reporter: callback_pb2_grpc.CallbackServiceStub, db: psycopg.Connection
) -> None:
    db.execute("INSERT INTO positions (customer_id, symbol, quantity, cost_basis) VALUES ('1', 'MSFT', 8, 3200)")
    cash = available(db, "1")[0]
    order = await at_exchange(stub, db, symbol="MSFT", side=common_pb2.SIDE_SELL, quantity=5)

    await send(reporter, report(order, FILL, last=5, price="420.10", cumulative=5))

    assert available(db, "1") == (cash + Decimal("2100.50"), Decimal(0))
    assert holdings(db) == {"MSFT": (3, 0, Decimal("400.0000"))}
    assert order_row(db, order.order_id) == ("FILLED", 5, Decimal("420.1000"), 0, 0)


async def test_a_forged_report_is_refused_and_changes_nothing(
    stub: orders_pb2_grpc.OrderServiceStub, reporter: callback_pb2_grpc.CallbackServiceStub, db: psycopg.Connection
) -> None:
    order = await at_exchange(stub, db, quantity=2)
    before = snapshot(db)
    forged = report(order, FILL, last=2, price="1.00", cumulative=2)

    for metadata in ((), (("authorization", "Bearer guess"),), (("authorization", CALLBACK_TOKEN),)):
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await reporter.ReportExecution(forged, metadata=metadata, timeout=5)
        assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED

    assert snapshot(db) == before
    assert db.execute("SELECT count(*) FROM executions").fetchone() == (0,)


async def test_a_duplicate_is_applied_once_also_when_both_copies_arrive_at_once(
    stub: orders_pb2_grpc.OrderServiceStub, reporter: callback_pb2_grpc.CallbackServiceStub, db: psycopg.Connection
) -> None:
    order = await at_exchange(stub, db, quantity=3)
    fill = report(order, FILL, last=3, price="229.00", cumulative=3)
    cash = available(db, "1")

    together = await asyncio.gather(*(reporter.ReportExecution(fill, metadata=AUTH, timeout=5) for _ in range(8)))
    later = await send(reporter, fill)

    assert sorted(r.duplicate for r in together) == [False] + [True] * 7 and later == [True]
    assert order_row(db, order.order_id)[:2] == ("FILLED", 3)
    reserved = Decimal(order.reserved_amount)
    assert available(db, "1") == (cash[0] + reserved - Decimal("687.00"), cash[1] - reserved)
    assert db.execute("SELECT count(*) FROM executions WHERE exec_id = %s", (fill.exec_id,)).fetchone() == (1,)
    assert holdings(db) == {"AAPL": (3, 0, Decimal("229.0000"))}


async def test_a_cancel_reported_before_the_partial_fill_it_counts_waits_for_that_fill(
    stub: orders_pb2_grpc.OrderServiceStub, reporter: callback_pb2_grpc.CallbackServiceStub, db: psycopg.Connection
) -> None:
    order = await at_exchange(stub, db, quantity=10)

    await send(reporter, report(order, CANCELED, cumulative=4))
    assert order_row(db, order.order_id)[0] == "SUBMITTED"  # 4 filled, per the exchange, and none booked yet
    assert Decimal(order.reserved_amount) == available(db, "1")[1]  # so the whole reservation is still held

    await send(reporter, report(order, PARTIAL, last=4, price="230.00", cumulative=4))

    assert order_row(db, order.order_id) == ("CANCELED", 4, Decimal("230.0000"), 0, 0)
    assert available(db, "1")[1] == 0
    assert holdings(db) == {"AAPL": (4, 0, Decimal("230.0000"))}


async def test_partial_fills_then_the_cancel_of_the_rest_returns_what_was_not_used(
    stub: orders_pb2_grpc.OrderServiceStub, reporter: callback_pb2_grpc.CallbackServiceStub, db: psycopg.Connection
) -> None:
    cash = available(db, "1")[0]
    order = await at_exchange(stub, db, quantity=10)

    await send(
        reporter,
        report(order, PARTIAL, last=2, price="230.00", cumulative=2),
        report(order, PARTIAL, last=3, price="232.00", cumulative=5),
        report(order, CANCELED, cumulative=5),
    )

    assert order_row(db, order.order_id) == ("CANCELED", 5, Decimal("231.2000"), 0, 0)
    assert available(db, "1") == (cash - Decimal("1156.00"), Decimal(0))
    reserved = Decimal(order.reserved_amount)
    assert transfers_of(db, order.order_id) == [
        ("reserve", "USD", "available", "reserved", reserved),
        ("fill", "USD", "reserved", "clearing", Decimal("460.00")),
        ("fill", "AAPL", "clearing", "available", Decimal(2)),
        ("fill", "USD", "reserved", "clearing", Decimal("696.00")),
        ("fill", "AAPL", "clearing", "available", Decimal(3)),
        ("release", "USD", "reserved", "available", reserved - Decimal("1156.00")),
    ]


async def test_a_fill_after_the_customer_asked_to_cancel_is_a_real_trade_and_is_booked(
    stub: orders_pb2_grpc.OrderServiceStub, reporter: callback_pb2_grpc.CallbackServiceStub, db: psycopg.Connection
) -> None:
    order = await at_exchange(stub, db, quantity=6)
    requested = await stub.CancelOrder(orders_pb2.CancelOrderRequest(customer_id="1", order_id=order.order_id))
    assert requested.cancel_requested

    await send(reporter, report(order, FILL, last=6, price="228.00", cumulative=6))  # the fill won the race

    after = await stub.GetOrder(orders_pb2.GetOrderRequest(customer_id="1", order_id=order.order_id))
    assert (after.status, after.filled_quantity, after.cancel_requested) == (common_pb2.ORDER_STATUS_FILLED, 6, False)
    assert holdings(db) == {"AAPL": (6, 0, Decimal("228.0000"))}


async def test_a_fill_reported_after_the_cancel_report_that_counts_it_is_booked(
    stub: orders_pb2_grpc.OrderServiceStub, reporter: callback_pb2_grpc.CallbackServiceStub, db: psycopg.Connection
) -> None:
    order = await at_exchange(stub, db, quantity=6)

    await send(
        reporter,
        report(order, PARTIAL, last=1, price="230.00", cumulative=1),
        report(order, CANCELED, cumulative=3),  # reordered: the fill of 2 that it counts comes after it
        report(order, PARTIAL, last=2, price="231.00", cumulative=3),
    )

    assert order_row(db, order.order_id)[:2] == ("CANCELED", 3)
    assert holdings(db) == {"AAPL": (3, 0, Decimal("230.6667"))}


async def test_fills_before_the_acknowledgement_are_booked_and_the_ack_does_not_move_the_order_back(
    stub: orders_pb2_grpc.OrderServiceStub, reporter: callback_pb2_grpc.CallbackServiceStub, db: psycopg.Connection
) -> None:
    order = await stub.PlaceOrder(place(quantity=4), timeout=5)
    db.execute("UPDATE orders SET claimed_at = now() WHERE order_id = %s", (order.order_id,))

    await send(reporter, report(order, PARTIAL, last=1, price="230.00", cumulative=1), report(order, NEW))
    db.execute("SELECT record_submitted(%s, 'V')", (order.order_id,))  # the worker hears the ack only now

    assert order_row(db, order.order_id)[:2] == ("PARTIALLY_FILLED", 1)


async def test_a_report_for_an_unknown_order_is_acknowledged_and_kept_as_a_break(
    stub: orders_pb2_grpc.OrderServiceStub, reporter: callback_pb2_grpc.CallbackServiceStub, db: psycopg.Connection
) -> None:
    order = await at_exchange(stub, db, quantity=1)
    stranger = report(order, FILL, last=1, price="230.00", cumulative=1)
    stranger.order_id = "not-ours"
    before = customers_books(db)

    assert await send(reporter, stranger, stranger) == [False, True]

    assert customers_books(db) == before
    assert db.execute("SELECT kind, order_id FROM breaks").fetchall() == [("unknown_order", "not-ours")]
    # A real fill all the same, as far as we can tell: the venue's cash and shares moved, to the error account.
    assert error_account(db) == [
        (stranger.exec_id + ":cash", "USD", "error", "clearing", Decimal("230.00")),
        (stranger.exec_id + ":shares", "AAPL", "clearing", "error", Decimal(1)),
    ]


async def test_an_overfill_is_acknowledged_kept_as_a_break_and_booked_to_the_error_account(
    stub: orders_pb2_grpc.OrderServiceStub, reporter: callback_pb2_grpc.CallbackServiceStub, db: psycopg.Connection
) -> None:
    order = await at_exchange(stub, db, quantity=5)
    await send(reporter, report(order, PARTIAL, last=4, price="230.00", cumulative=4))
    before = customers_books(db)
    overfill = report(order, PARTIAL, last=2, price="230.00", cumulative=6)  # 6 of 5
    beyond = report(order, PARTIAL, last=1, price="999.00", cumulative=5)  # above the protection price

    await send(reporter, overfill, beyond)

    assert customers_books(db) == before  # the customer pays for no more than ordered, never above protection
    kinds = db.execute("SELECT kind FROM breaks ORDER BY break_id").fetchall()
    assert kinds == [("overfill",), ("beyond_protection",)]
    assert error_account(db) == [
        (overfill.exec_id + ":cash", "USD", "error", "clearing", Decimal("460.00")),
        (overfill.exec_id + ":shares", "AAPL", "clearing", "error", Decimal(2)),
        (beyond.exec_id + ":cash", "USD", "error", "clearing", Decimal("999.00")),
        (beyond.exec_id + ":shares", "AAPL", "clearing", "error", Decimal(1)),
    ]


async def test_a_fill_for_another_symbol_side_or_quantity_than_the_order_is_a_break_and_the_error_accounts(
    stub: orders_pb2_grpc.OrderServiceStub, reporter: callback_pb2_grpc.CallbackServiceStub, db: psycopg.Connection
) -> None:
    order = await at_exchange(stub, db, quantity=5)  # a buy of 5 AAPL
    before = customers_books(db)
    wrong = [report(order, PARTIAL, last=1, price="230.00", cumulative=1) for _ in range(3)]
    wrong[0].symbol = "MSFT"
    wrong[1].side = common_pb2.SIDE_SELL
    wrong[2].order_quantity = 50

    assert await send(reporter, *wrong) == [False] * 3  # answered OK, so the exchange does not send them forever

    assert customers_books(db) == before
    assert [(asset, debit, credit) for _, asset, debit, credit, _ in error_account(db)] == [
        ("USD", "error", "clearing"),  # the venue says it bought 1 MSFT for us: the error account holds it
        ("MSFT", "clearing", "error"),
        ("USD", "clearing", "error"),  # ... and sold 1 AAPL we never sent it to sell
        ("AAPL", "error", "clearing"),
        ("USD", "error", "clearing"),
        ("AAPL", "clearing", "error"),
    ]
    breaks = db.execute("SELECT kind, detail FROM breaks ORDER BY break_id").fetchall()
    assert [kind for kind, _ in breaks] == ["mismatch"] * 3
    assert "the report is for BUY 5 MSFT, the order is BUY 5 AAPL" in breaks[0][1]

    await send(reporter, report(order, FILL, last=5, price="230.00", cumulative=5))  # the order itself carries on
    assert order_row(db, order.order_id)[:2] == ("FILLED", 5)


async def test_a_fill_price_the_books_cannot_hold_exactly_is_malformed_kept_whole_and_moves_no_money(
    stub: orders_pb2_grpc.OrderServiceStub, reporter: callback_pb2_grpc.CallbackServiceStub, db: psycopg.Connection
) -> None:
    order = await at_exchange(stub, db, quantity=5)
    before = snapshot(db)
    fifth_decimal = report(order, PARTIAL, last=3, price="230.00005", cumulative=3)  # money keeps four
    to_nothing = report(order, PARTIAL, last=1, price="0.00004", cumulative=1)  # would round to nothing

    await send(reporter, fifth_decimal, to_nothing)  # answered OK, so the exchange does not send them forever

    assert snapshot(db) == before
    kept = db.execute("SELECT kind, exec_id, report_bytes FROM breaks ORDER BY break_id").fetchall()
    assert kept == [
        ("malformed", fifth_decimal.exec_id, fifth_decimal.SerializeToString()),
        ("malformed", to_nothing.exec_id, to_nothing.SerializeToString()),
    ]


async def test_a_rejection_by_the_exchange_releases_the_reservation(
    stub: orders_pb2_grpc.OrderServiceStub, reporter: callback_pb2_grpc.CallbackServiceStub, db: psycopg.Connection
) -> None:
    before = available(db, "1")
    order = await at_exchange(stub, db, quantity=2)
    rejected = report(order, REJECTED)
    rejected.reason = "trading in AAPL is halted"

    await send(reporter, rejected)

    assert order_row(db, order.order_id)[0] == "REJECTED"
    assert available(db, "1") == before
    reason = db.execute("SELECT status_reason FROM orders WHERE order_id = %s", (order.order_id,)).fetchone()
    assert reason == ("trading in AAPL is halted",)


async def test_a_malformed_report_is_acknowledged_kept_as_a_break_and_changes_nothing(
    stub: orders_pb2_grpc.OrderServiceStub, reporter: callback_pb2_grpc.CallbackServiceStub, db: psycopg.Connection
) -> None:
    order = await at_exchange(stub, db, quantity=2)
    before = snapshot(db)
    no_price = report(order, FILL, last=2, cumulative=2)
    no_id = report(order, NEW, exec_id="")
    no_id.exec_id = ""
    bad = [no_price, no_id, report(order, common_pb2.EXEC_TYPE_UNSPECIFIED)]

    answers = [await reporter.ReportExecution(r, metadata=AUTH, timeout=5) for r in bad]

    assert [a.outcome for a in answers] == [callback_pb2.REPORT_OUTCOME_BREAK] * 3
    assert snapshot(db) == before
    assert db.execute("SELECT kind, count(*) FROM breaks GROUP BY kind").fetchall() == [("malformed", 3)]


def test_the_databases_status_moves_are_the_domains(db: psycopg.Connection) -> None:
    in_sql = set(db.execute("SELECT from_status, to_status FROM order_transitions").fetchall())
    in_python = {(a.value, b.value) for a, targets in ALLOWED_TRANSITIONS.items() for b in targets}
    assert in_sql == in_python


async def test_a_stream_of_reports_is_booked_once_each_and_each_is_acknowledged(
    stub: orders_pb2_grpc.OrderServiceStub, reporter: callback_pb2_grpc.CallbackServiceStub, db: psycopg.Connection
) -> None:
    first = await at_exchange(stub, db, key="a", quantity=3)
    second = await at_exchange(stub, db, key="b", quantity=2)
    reports = [
        report(first, NEW),
        report(first, PARTIAL, last=1, price="230.00", cumulative=1),
        report(second, FILL, last=2, price="229.00", cumulative=2),
        report(first, FILL, last=2, price="231.00", cumulative=3),
    ]
    batches = [reports[:2], reports[2:], [reports[1]]]  # the last sends a report again on the same stream

    async def sent() -> AsyncIterator[callback_pb2.ExecutionReportBatch]:
        for batch_id, batch in enumerate(batches, start=1):
            yield reports_batch(batch, batch_id)

    answered = [batch async for batch in reporter.StreamExecutions(sent(), metadata=AUTH, timeout=10)]
    acks = [ack for batch in answered for ack in batch.acks]

    # Each batch acknowledged whole, under its name, its reports in their order.
    assert sorted((batch.batch_id, [a.exec_id for a in batch.acks]) for batch in answered) == [
        (i, [r.exec_id for r in batch]) for i, batch in enumerate(batches, start=1)
    ]

    assert sorted((a.exec_id, a.duplicate) for a in acks) == sorted(
        [(r.exec_id, False) for r in reports] + [(reports[1].exec_id, True)]
    )
    assert [order_row(db, o.order_id)[:2] for o in (first, second)] == [("FILLED", 3), ("FILLED", 2)]
    # Every report but the NEW, which told nothing the worker had not recorded.
    assert db.execute("SELECT count(*) FROM executions").fetchone() == (len(reports) - 1,)


async def test_a_forged_stream_is_refused_and_changes_nothing(
    stub: orders_pb2_grpc.OrderServiceStub, reporter: callback_pb2_grpc.CallbackServiceStub, db: psycopg.Connection
) -> None:
    order = await at_exchange(stub, db, quantity=2)
    before = snapshot(db)

    with pytest.raises(grpc.aio.AioRpcError) as refused:
        forged = report(order, FILL, last=2, price="1.00", cumulative=2)
        batch = reports_batch([forged])
        _ = [a async for a in reporter.StreamExecutions(iter_once(batch), metadata=(("authorization", "Bearer x"),))]
    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert snapshot(db) == before


async def iter_once(batch: callback_pb2.ExecutionReportBatch) -> AsyncIterator[callback_pb2.ExecutionReportBatch]:
    yield batch
