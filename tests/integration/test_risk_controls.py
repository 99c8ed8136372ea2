"""The pre-trade risk controls in the placement transaction and the claim (DESIGN.md "Risk controls"): each refusal a
stored REJECTED order with its code, in the documented order; the rate limit answered RESOURCE_EXHAUSTED with a retry
delay and nothing stored; the levers' audit append-only. The levers are called here as their SQL functions; the
RiskService tests call them over gRPC."""

from __future__ import annotations

import asyncio
import re
from decimal import Decimal

import grpc
import psycopg
import pytest
from google.rpc import error_details_pb2, status_pb2
from prometheus_client import REGISTRY

from brokerage.domain.risk import RejectCode
from brokerage.proto import common_pb2, orders_pb2, orders_pb2_grpc
from brokerage.settings import Settings
from brokerage.storage.pool import open_pool
from brokerage.storage.risk import RiskStore
from execution_service.main import start as start_execution
from operations_service.risk import FirmThreshold
from order_service.main import OrderServiceApp
from tests.integration.conftest import available, make_settings, running_service, snapshot
from tests.integration.fake_exchange import FakeExchange
from tests.integration.test_execution import all_submitted, eventually, place_many, statuses

pytestmark = pytest.mark.integration

BUY, SELL = common_pb2.SIDE_BUY, common_pb2.SIDE_SELL
PLACED, REJECTED = common_pb2.ORDER_STATUS_PLACED, common_pb2.ORDER_STATUS_REJECTED
OPERATOR = ("https://ops.example", "alice", "spiffe://brokerage/brokerctl")


def place(customer: str = "1", key: str = "k-1", symbol: str = "AAPL", side: int = BUY, quantity: int = 10):
    return orders_pb2.PlaceOrderRequest(
        customer_id=customer, client_order_id=key, symbol=symbol, side=side, quantity=quantity
    )


def code(name: RejectCode) -> int:
    return orders_pb2.RejectCode.Value(f"REJECT_CODE_{name.value}")


def halt(db: psycopg.Connection, scope: str, symbol: str | None = None, customer: str | None = None) -> int:
    row = db.execute(
        "SELECT (h.o_halt).halt_id FROM set_trading_halt(%s, %s, %s, 'test', false, %s, %s, %s) h",
        (scope, symbol, customer, *OPERATOR),
    ).fetchone()
    assert row is not None and row[0] is not None
    return int(row[0])


def clear(db: psycopg.Connection, halt_id: int) -> None:
    db.execute("SELECT clear_trading_halt(%s, 'test over', %s, %s, %s)", (halt_id, *OPERATOR))


def status(db: psycopg.Connection, customer: str, value: str) -> None:
    db.execute("SELECT set_account_status(%s, %s, 'test', %s, %s, %s)", (customer, value, *OPERATOR))


def limits(db: psycopg.Connection, customer: str = "1", **values: object) -> None:
    db.execute(
        "SELECT set_limits(%s, %s, %s, %s, %s, 'test', %s, %s, %s)",
        (
            customer,
            values.get("notional"),
            values.get("quantity"),
            values.get("daily"),
            values.get("per_minute"),
            *OPERATOR,
        ),
    )


def hold_shares(db: psycopg.Connection, customer: str, symbol: str, quantity: int) -> None:
    db.execute(
        "INSERT INTO positions (customer_id, symbol, quantity, cost_basis) VALUES (%s, %s, %s, 0)",
        (customer, symbol, quantity),
    )


async def test_the_kill_switch_rejects_every_new_order_until_it_is_cleared(
    stub: orders_pb2_grpc.OrderServiceStub, db: psycopg.Connection
) -> None:
    halt_id = halt(db, "FIRM")

    halted = await stub.PlaceOrder(place(key="a"), timeout=5)
    other = await stub.PlaceOrder(place(customer="2", key="a", symbol="MSFT"), timeout=5)
    clear(db, halt_id)
    after = await stub.PlaceOrder(place(key="b"), timeout=5)

    assert (halted.status, halted.reject_code, halted.status_reason) == (
        REJECTED,
        code(RejectCode.TRADING_HALTED),
        "trading is halted",
    )
    assert other.reject_code == code(RejectCode.TRADING_HALTED)
    assert after.status == PLACED and after.reject_code == orders_pb2.REJECT_CODE_UNSPECIFIED
    assert db.execute("SELECT count(*) FROM outbox WHERE dedupe_id = %s", (halted.order_id,)).fetchone() == (0,)


async def test_a_symbol_or_customer_halt_rejects_its_scope_only(
    stub: orders_pb2_grpc.OrderServiceStub, db: psycopg.Connection
) -> None:
    halt(db, "SYMBOL", symbol="GOOGL")
    halt(db, "CUSTOMER", customer="2")

    googl = await stub.PlaceOrder(place(key="a", symbol="GOOGL"), timeout=5)
    aapl = await stub.PlaceOrder(place(key="b", symbol="AAPL"), timeout=5)
    halted_customer = await stub.PlaceOrder(place(customer="2", key="a"), timeout=5)

    assert googl.reject_code == code(RejectCode.TRADING_HALTED) and googl.status_reason == "trading in GOOGL is halted"
    assert aapl.status == PLACED
    assert halted_customer.reject_code == code(RejectCode.TRADING_HALTED)
    assert halted_customer.status_reason == "trading is halted for this account"


async def test_one_halt_in_force_per_target(db: psycopg.Connection) -> None:
    first = halt(db, "SYMBOL", symbol="GOOGL")
    again = db.execute(
        "SELECT (h.o_halt).halt_id, h.o_set"
        " FROM set_trading_halt('SYMBOL', 'GOOGL', NULL, 'again', true, %s, %s, %s) h",
        OPERATOR,
    ).fetchone()

    assert again == (first, False)
    assert db.execute("SELECT count(*) FROM risk_events WHERE action = 'halt_set'").fetchone() == (1,)


async def test_a_closing_only_account_sells_and_a_blocked_one_does_nothing(
    stub: orders_pb2_grpc.OrderServiceStub, db: psycopg.Connection
) -> None:
    hold_shares(db, "1", "AAPL", 5)
    hold_shares(db, "2", "AAPL", 5)
    status(db, "1", "CLOSING_ONLY")
    status(db, "2", "BLOCKED")

    sell = await stub.PlaceOrder(place(key="s", side=SELL, quantity=5), timeout=5)
    buy = await stub.PlaceOrder(place(key="b"), timeout=5)
    blocked = [
        await stub.PlaceOrder(place(customer="2", key=k, side=s, quantity=5), timeout=5)
        for k, s in [("s", SELL), ("b", BUY)]
    ]

    assert sell.status == PLACED
    assert buy.reject_code == code(RejectCode.ACCOUNT_CLOSING_ONLY)
    assert [o.reject_code for o in blocked] == [code(RejectCode.ACCOUNT_BLOCKED)] * 2
    assert available(db, "2") == (Decimal("100000.00"), Decimal("0"))


async def test_order_quantity_and_notional_limits(
    stub: orders_pb2_grpc.OrderServiceStub, db: psycopg.Connection
) -> None:
    limits(db, quantity=100, notional="2000.00")
    hold_shares(db, "1", "AAPL", 10)

    too_many = await stub.PlaceOrder(place(key="q", quantity=101), timeout=5)
    # 9 x 238.88 (the protection price) = 2149.92 > 2000
    too_much = await stub.PlaceOrder(place(key="n", quantity=9), timeout=5)
    fits = await stub.PlaceOrder(place(key="f", quantity=8), timeout=5)
    # a sell's notional at the reference price: 9 x 227.50 = 2047.50 > 2000
    sell = await stub.PlaceOrder(place(key="s", side=SELL, quantity=9), timeout=5)

    assert too_many.reject_code == code(RejectCode.QUANTITY_LIMIT)
    assert too_much.reject_code == code(RejectCode.NOTIONAL_LIMIT)
    assert too_much.status_reason == "order notional 2149.92 is above the limit of 2000.00"
    assert fits.status == PLACED
    assert sell.reject_code == code(RejectCode.NOTIONAL_LIMIT)
    other = await stub.PlaceOrder(place(customer="2", key="q", quantity=101), timeout=5)
    assert other.status == PLACED  # the limits were customer 1's; customer 2 has the firm's


async def test_the_daily_buy_notional_is_the_credit_threshold_of_the_new_york_day(
    stub: orders_pb2_grpc.OrderServiceStub, db: psycopg.Connection
) -> None:
    limits(db, daily="5000.00")  # 2 buys of 10 at 238.88 = 4777.60; a third would be 7166.40

    first = await stub.PlaceOrder(place(key="a"), timeout=5)
    canceled = await stub.CancelOrder(
        orders_pb2.CancelOrderRequest(customer_id="1", order_id=first.order_id), timeout=5
    )
    second = await stub.PlaceOrder(place(key="b"), timeout=5)
    third = await stub.PlaceOrder(place(key="c"), timeout=5)
    db.execute("UPDATE balances SET buy_notional_day = buy_notional_day - 1 WHERE customer_id = '1'")
    next_day = await stub.PlaceOrder(place(key="d"), timeout=5)

    assert canceled.status == common_pb2.ORDER_STATUS_CANCELED and second.status == PLACED  # gross: a cancel counts
    assert third.reject_code == code(RejectCode.DAILY_NOTIONAL_LIMIT)
    assert next_day.status == PLACED


async def test_orders_of_one_customer_in_one_batch_count_each_other(
    stub: orders_pb2_grpc.OrderServiceStub, db: psycopg.Connection
) -> None:
    limits(db, daily="5000.00")

    orders = await asyncio.gather(*(stub.PlaceOrder(place(key=f"k{i}"), timeout=5) for i in range(4)))

    assert sorted(o.status for o in orders) == [PLACED, PLACED, REJECTED, REJECTED]
    assert db.execute("SELECT buy_notional FROM balances WHERE customer_id = '1'").fetchone() == (Decimal("4777.60"),)


@pytest.mark.parametrize(
    ("setup", "expected"),
    [
        ({"halt": True, "status": "BLOCKED", "quantity": 1}, RejectCode.TRADING_HALTED),
        ({"status": "BLOCKED", "quantity": 1}, RejectCode.ACCOUNT_BLOCKED),
        ({"status": "CLOSING_ONLY", "quantity": 1}, RejectCode.ACCOUNT_CLOSING_ONLY),
        ({"quantity": 1, "notional": "1.00"}, RejectCode.QUANTITY_LIMIT),
        ({"stale": True, "notional": "1.00"}, RejectCode.STALE_QUOTE),
        ({"notional": "1.00", "daily": "1.00"}, RejectCode.NOTIONAL_LIMIT),
        ({"daily": "1.00", "poor": True}, RejectCode.DAILY_NOTIONAL_LIMIT),
    ],
)
async def test_the_first_failing_check_names_the_refusal(
    stub: orders_pb2_grpc.OrderServiceStub, db: psycopg.Connection, setup: dict[str, object], expected: RejectCode
) -> None:
    if setup.get("halt"):
        halt(db, "FIRM")
    if "status" in setup:
        status(db, "1", str(setup["status"]))
    if setup.get("stale"):
        db.execute("UPDATE quotes SET quoted_at = now() - interval '2 hours' WHERE symbol = 'AAPL'")
        await asyncio.sleep(0.3)  # the reference snapshot refreshes every 0.1 s in tests
    if setup.get("poor"):
        db.execute("UPDATE balances SET available = 0 WHERE customer_id = '1'")
    limits(db, **{k: setup[k] for k in ("quantity", "notional", "daily") if k in setup})

    order = await stub.PlaceOrder(place(quantity=2), timeout=5)

    assert order.status == REJECTED and order.reject_code == code(expected), order


async def test_past_the_rate_limit_nothing_is_stored_and_a_retry_after_the_delay_succeeds(
    stub: orders_pb2_grpc.OrderServiceStub, db: psycopg.Connection
) -> None:
    limits(db, per_minute=20)

    results = await asyncio.gather(
        *(stub.PlaceOrder(place(key=f"k{i}", quantity=1), timeout=5) for i in range(30)), return_exceptions=True
    )

    placed = [r for r in results if isinstance(r, orders_pb2.Order)]
    limited = [r for r in results if isinstance(r, grpc.aio.AioRpcError)]
    assert (len(placed), len(limited)) == (20, 10)
    assert {e.code() for e in limited} == {grpc.StatusCode.RESOURCE_EXHAUSTED}
    delays = [_retry_delay(e) for e in limited]
    assert all(0 < d <= 3.0 for d in delays), delays  # one order each 60/20 s
    assert db.execute("SELECT count(*) FROM orders WHERE customer_id = '1'").fetchone() == (20,)
    before = snapshot(db)
    again = await stub.PlaceOrder(place(key=placed[0].client_order_id, quantity=1), timeout=5)
    assert again == placed[0] and snapshot(db) == before  # a retry of a stored order is not limited

    limited_key = next(f"k{i}" for i, r in enumerate(results) if isinstance(r, grpc.aio.AioRpcError))
    await asyncio.sleep(min(delays) + 0.05)
    retried = await stub.PlaceOrder(place(key=limited_key, quantity=1), timeout=5)
    assert retried.status == PLACED and retried.sequence == 21


def _retry_delay(error: grpc.aio.AioRpcError) -> float:
    for key, value in error.trailing_metadata() or ():
        if key == "grpc-status-details-bin":
            for detail in status_pb2.Status.FromString(value).details:
                info = error_details_pb2.RetryInfo()
                if detail.Unpack(info):
                    return info.retry_delay.ToTimedelta().total_seconds()
    raise AssertionError("no google.rpc.RetryInfo in the error details")


def test_the_audit_names_the_operator_and_refuses_change(db: psycopg.Connection) -> None:
    halt_id = halt(db, "SYMBOL", symbol="GOOGL")
    clear(db, halt_id)
    status(db, "3", "CLOSING_ONLY")
    limits(db, "3", quantity=5)

    events = db.execute(
        "SELECT action, customer_id, symbol, operator_issuer, operator, operator_peer"
        " FROM risk_events ORDER BY event_id"
    ).fetchall()
    assert [e[:3] for e in events] == [
        ("halt_set", None, "GOOGL"),
        ("halt_cleared", None, "GOOGL"),
        ("account_status_set", "3", None),
        ("limits_set", "3", None),
    ]
    assert {e[3:] for e in events} == {OPERATOR}
    for statement in ("UPDATE risk_events SET reason = 'x'", "DELETE FROM risk_events", "TRUNCATE risk_events"):
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            db.execute(statement)


def test_a_halt_rejects_waiting_orders_at_the_claim_and_asks_the_venue_to_cancel_one_that_may_have_left(
    db: psycopg.Connection,
) -> None:
    ids = [_placed_directly(db, "1", f"w{i}") for i in range(3)]
    db.execute("UPDATE orders SET claimed_at = now() - interval '1 minute', claims = 1 WHERE order_id = %s", (ids[1],))
    halt(db, "CUSTOMER", customer="1")

    claimed = db.execute("SELECT (c.claimed).order_id FROM claim_for_submissions(ARRAY[%s], ARRAY[10]) c", (ids[0],))

    assert claimed.fetchall() == []
    rows = db.execute(
        "SELECT order_id, coalesce(reject_code, status), cancel_requested_at IS NOT NULL, cancel_reason FROM orders"
    ).fetchall()
    # never claimed: rejected; the one that may be at the venue: its cancel asked of the venue (rule 9), held meanwhile
    assert {r[0]: r[1:] for r in rows} == {
        ids[0]: ("TRADING_HALTED", False, None),
        ids[1]: ("PLACED", True, "canceled: trading halted"),
        ids[2]: ("TRADING_HALTED", False, None),
    }
    assert available(db, "1")[1] == Decimal("238.88")


def test_a_halt_landing_between_claim_and_send_rejects_a_first_claim_and_asks_the_venue_about_a_second(
    db: psycopg.Connection,
) -> None:
    first, second = (_placed_directly(db, "1", key) for key in ("a", "b"))
    db.execute("SELECT * FROM claim_for_submissions(ARRAY[%s], ARRAY[10])", (first,))
    db.execute("UPDATE orders SET claims = 2 WHERE order_id = %s", (second,))
    halt(db, "SYMBOL", symbol="AAPL")

    kept = dict(db.execute("SELECT * FROM withhold_halted_claims(ARRAY[%s, %s])", (first, second)).fetchall())

    assert kept == {first: "rejected", second: "cancel_requested"}
    assert available(db, "1") == (Decimal("100000.00") - Decimal("238.88"), Decimal("238.88"))


def _placed_directly(db: psycopg.Connection, customer: str, key: str) -> str:
    row = db.execute(
        "SELECT (p.placed).order_id FROM place_orders_v3(ARRAY[%s], ARRAY[%s], ARRAY[%s], ARRAY['AAPL'], ARRAY['BUY'],"
        " ARRAY[1]::bigint[], ARRAY[238.88], ARRAY[227.50], ARRAY[NULL], ARRAY[NULL], ARRAY['orders.1'],"
        " ARRAY[''::bytea], ARRAY[NULL]::timestamptz[]) p",
        (f"o-{key}", customer, key),
    ).fetchone()
    assert row is not None
    return str(row[0])


async def test_orders_waiting_when_a_halt_lands_never_reach_the_venue_and_after_the_clear_new_ones_do(
    app: OrderServiceApp,
    stub: orders_pb2_grpc.OrderServiceStub,
    execution_settings: Settings,
    fake_exchange: FakeExchange,
    db: psycopg.Connection,
) -> None:
    waiting = await place_many(stub, ["1", "2"], per_customer=2)  # no worker runs yet: they wait
    halt_id = halt(db, "FIRM")

    async with running_service(start_execution, execution_settings):
        ids = [o.order_id for o in waiting]
        await eventually(lambda: set(statuses(db, ids).values()) == {"REJECTED"}, "the waiting orders rejected")
        assert fake_exchange.arrivals() == []
        assert available(db, "1") == (Decimal("100000.00"), Decimal("0"))
        engaged = lambda: REGISTRY.get_sample_value("trading_kill_switch_engaged") == 1  # noqa: E731
        await eventually(engaged, "the kill switch shown engaged")

        clear(db, halt_id)
        after = await place_many(stub, ["1"], per_customer=1, prefix="after")
        await eventually(all_submitted(db, [after[0].order_id]), "the order after the clear SUBMITTED")

    assert fake_exchange.arrivals() == [after[0].order_id]
    codes = db.execute("SELECT DISTINCT reject_code FROM orders WHERE order_id = ANY(%s)", (ids,)).fetchall()
    assert codes == [("TRADING_HALTED",)]


async def test_a_halt_that_cancels_open_orders_cancels_waiting_ones_and_asks_the_venue_for_taken_ones(
    app: OrderServiceApp,
    stub: orders_pb2_grpc.OrderServiceStub,
    execution_settings: Settings,
    fake_exchange: FakeExchange,
    db: psycopg.Connection,
) -> None:
    waiting = await place_many(stub, ["1", "2"], per_customer=2)  # no worker runs yet: they wait
    taken = waiting[0].order_id if waiting[0].customer_id == "2" else waiting[-1].order_id
    db.execute("UPDATE orders SET claimed_at = now(), claims = 1 WHERE order_id = %s", (taken,))  # sent? unknown
    db.execute(
        "SELECT set_trading_halt('FIRM', NULL, NULL, 'runaway algo', true, %s, %s, %s)",
        OPERATOR,
    )
    later = await stub.PlaceOrder(place(customer="3", key="later"), timeout=5)

    async with running_service(start_execution, execution_settings):
        ids = [o.order_id for o in waiting]
        await eventually(lambda: set(statuses(db, ids).values()) == {"CANCELED"}, "every open order canceled", 10)
        jobs_done = "SELECT count(*) FROM halt_cancel_jobs WHERE finished_at IS NULL"
        await eventually(lambda: db.execute(jobs_done).fetchone() == (0,), "every shard's job finished")

    assert later.reject_code == code(RejectCode.TRADING_HALTED)  # placed after the halt: never open
    assert fake_exchange.cancels == [taken]  # asked of the venue, which never had it: ended by its tombstone
    assert fake_exchange.arrivals() == []
    reasons = dict(db.execute("SELECT order_id, status_reason FROM orders WHERE order_id = ANY(%s)", (ids,)).fetchall())
    assert {r for i, r in reasons.items() if i != taken} == {"canceled: trading halted"}
    for customer in ("1", "2"):
        assert available(db, customer) == (Decimal("100000.00"), Decimal("0"))
    # the waiting ones canceled by the job, or by a claim that met the halt first; the taken one only by the job
    jobs = db.execute("SELECT count(*), sum(canceled), sum(requested) FROM halt_cancel_jobs").fetchone()
    assert jobs is not None and (jobs[0], jobs[2]) == (16, 1) and jobs[1] <= 3


async def test_the_firms_daily_buy_notional_engages_the_kill_switch_by_itself_once_a_day(
    stub: orders_pb2_grpc.OrderServiceStub, db: psycopg.Connection, seeded_database: str
) -> None:
    pool = await open_pool(make_settings(seeded_database, "nats://unused"))
    try:
        threshold = FirmThreshold(RiskStore(pool), Decimal("5000"), every=1)
        await asyncio.gather(*(stub.PlaceOrder(place(customer=c), timeout=5) for c in ("1", "2")))  # 2 x 2388.80
        below = await threshold.check()
        await stub.PlaceOrder(place(customer="3"), timeout=5)  # 7166.40 in all
        engaged = await threshold.check()
        halted = await stub.PlaceOrder(place(customer="4"), timeout=5)
        assert engaged is not None
        clear(db, engaged)
        again = await threshold.check()
    finally:
        await pool.close()

    assert below is None and again is None  # an operator's clear stands for the day
    assert halted.reject_code == code(RejectCode.TRADING_HALTED)
    event = db.execute("SELECT operator, reason FROM risk_events WHERE action = 'halt_set'").fetchone()
    assert event == (
        "daily-notional-threshold",
        "the firm's buys today came to 7166.40, past the daily threshold of 5000.00",
    )
    assert REGISTRY.get_sample_value("firm_buy_notional_today") == 7166.40


def test_the_databases_reject_codes_are_the_domains(db: psycopg.Connection) -> None:
    row = db.execute(
        "SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE conname = 'orders_reject_code_check'"
    ).fetchone()
    assert row is not None
    assert re.findall(r"'(\w+)'::text", row[0]) == [code.value for code in RejectCode]
