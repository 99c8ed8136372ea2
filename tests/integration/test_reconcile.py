"""Reconciliation (rule 8): clean after real settlement, and each check catching what it is for, including books
that were edited consistently (a balance with a transfer forged beside it), which single-entry checks let pass."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import psycopg
import pytest

from brokerage.domain.reconciliation import Finding
from brokerage.exchange_client import ExchangeClient
from brokerage.proto import callback_pb2_grpc, common_pb2, exchange_pb2, orders_pb2_grpc
from brokerage.reconcile import ARRIVALS_CHECK, CLEARING_CHECK, OUTCOMES_CHECK, reconcile
from tests.integration.fake_exchange import FakeExchange
from tests.integration.test_settlement import FILL, NEW, PARTIAL, at_exchange, report, send

pytestmark = pytest.mark.integration

TODAY = datetime.now(ZoneInfo("America/New_York")).date()
# Writes that skip the foreign keys (replication role): a forger with the schema owner's rights can, and
# reconciliation must not lean on them.
UNCHECKED = "SET session_replication_role = replica"


async def findings(database_url: str, exchange: FakeExchange | None = None) -> dict[str, list[Finding]]:
    client = ExchangeClient.connect(exchange.target, 5) if exchange else None
    try:
        results = await reconcile(database_url, client, TODAY, timedelta(minutes=5))
    finally:
        if client:
            await client.close()
    return {r.name: r.findings for r in results if r.findings}


async def settled_orders(
    stub: orders_pb2_grpc.OrderServiceStub, reporter: callback_pb2_grpc.CallbackServiceStub, db: psycopg.Connection
) -> list[exchange_pb2.DropCopyEntry]:
    """Two orders of customer 1 and one of customer 2 filled through CallbackService; returns their reports as the
    exchange's drop copy lists them, each order with its arrival sequence."""
    first = await at_exchange(stub, db, key="a", quantity=3)
    second = await at_exchange(stub, db, key="b", customer="2", quantity=2)
    third = await at_exchange(stub, db, key="c", quantity=1)
    reports = [
        (report(first, NEW), first, 1),
        (report(first, PARTIAL, last=1, price="230.00", cumulative=1), first, 1),
        (report(first, FILL, last=2, price="231.00", cumulative=3), first, 1),
        (report(second, FILL, last=2, price="229.50", cumulative=2), second, 2),
        (report(third, FILL, last=1, price="230.10", cumulative=1), third, 3),
    ]
    await send(reporter, *(r for r, _, _ in reports))
    return [
        exchange_pb2.DropCopyEntry(report=r, customer_id=order.customer_id, arrival_sequence=arrived)
        for r, order, arrived in reports
    ]


async def test_a_settled_day_is_clean_and_matches_the_drop_copy(
    stub: orders_pb2_grpc.OrderServiceStub,
    reporter: callback_pb2_grpc.CallbackServiceStub,
    db: psycopg.Connection,
    fake_exchange: FakeExchange,
    seeded_database: str,
) -> None:
    fake_exchange.drop_copy = await settled_orders(stub, reporter, db)

    assert await findings(seeded_database, fake_exchange) == {}


# Each is two or three edits that agree with one another, as a careful forger would make them.
TAMPERING = {
    "money created by a funding transfer without its record": [
        UNCHECKED,
        "INSERT INTO transfers (transfer_key, kind, asset, customer_id, debit_account, credit_account, amount,"
        " funding_id) VALUES ('funding:forged', 'funding', 'USD', '1', 'funding', 'available', 100, 999999)",
        "UPDATE balances SET available = available + 100 WHERE customer_id = '1'",
    ],
    "a balance edited with a matching transfer forged beside it": [
        UNCHECKED,
        "INSERT INTO transfers (transfer_key, kind, asset, customer_id, debit_account, credit_account, amount,"
        " repair_id) VALUES ('repair:forged', 'repair', 'USD', '2', 'funding', 'available', 100, 999999)",
        "UPDATE balances SET available = available + 100 WHERE customer_id = '2'",
    ],
    "a funding record without its transfer": [
        "INSERT INTO fundings (customer_id, amount, reason, funded_by) VALUES ('3', 5, 'x', 'y')",
    ],
    "an order whose reservation does not cover its rest": [
        "ALTER TABLE orders DROP CONSTRAINT orders_reservation_covers_rest",
        "UPDATE orders SET reserved_cash = reserved_cash - 1 WHERE client_order_id = 'open'",
        "UPDATE balances SET available = available + 1, reserved = reserved - 1 WHERE customer_id = '1'",
        "INSERT INTO transfers (transfer_key, kind, asset, customer_id, debit_account, credit_account, amount,"
        " order_id) SELECT order_id || ':release', 'release', 'USD', '1', 'reserved', 'available', 1, order_id"
        " FROM orders WHERE client_order_id = 'open'",
    ],
    "a wrong average cost": ["UPDATE positions SET cost_basis = cost_basis + 1 WHERE customer_id = '1'"],
    "shares edited alone": ["UPDATE positions SET quantity = quantity + 1 WHERE customer_id = '1'"],
    "cash edited alone": ["UPDATE balances SET available = available + 0.01 WHERE customer_id = '1'"],
    "a filled quantity edited alone": ["UPDATE orders SET filled_quantity = 2 WHERE client_order_id = 'a'"],
    "a fill's transfer edited": [  # a cheaper fill, its order releasing the difference
        UNCHECKED,
        "UPDATE transfers SET amount = amount - 1 WHERE kind = 'fill' AND asset = 'USD' AND customer_id = '2'",
        "UPDATE transfers SET amount = amount + 1 WHERE kind = 'release' AND customer_id = '2'",
        "UPDATE balances SET available = available + 1 WHERE customer_id = '2'",
    ],
    "an order stuck at the exchange": [
        "UPDATE orders SET updated_at = now() - interval '1 hour' WHERE client_order_id = 'open'",
    ],
    "an open break": [
        "INSERT INTO breaks (break_key, exec_id, order_id, kind, detail) VALUES ('X', 'X', 'Y', 'overfill', 'd')",
    ],
}
CAUGHT_BY = {
    "money created by a funding transfer without its record": "every transfer has its cause",
    "a balance edited with a matching transfer forged beside it": "every transfer has its cause",
    "a funding record without its transfer": "every funding record has its transfer",
    "an order whose reservation does not cover its rest": (
        "each order's reservation equals its transfers and covers its rest"
    ),
    "a wrong average cost": "each holding and its average cost follow from its fills",
    "shares edited alone": "positions equal their accounts",  # and the holdings check: see below
    "cash edited alone": "balances equal their accounts",
    "a filled quantity edited alone": "each order's fills equal its executions",
    "a fill's transfer edited": "each fill moved exactly its money and shares",
    "an order stuck at the exchange": "no order is stuck",
    "an open break": "no break is open",
}


@pytest.mark.parametrize("case", sorted(TAMPERING))
async def test_each_check_catches_what_it_is_for(
    case: str,
    stub: orders_pb2_grpc.OrderServiceStub,
    reporter: callback_pb2_grpc.CallbackServiceStub,
    db: psycopg.Connection,
    seeded_database: str,
) -> None:
    await settled_orders(stub, reporter, db)
    await at_exchange(stub, db, key="open", quantity=4)  # an order still open at the exchange
    assert await findings(seeded_database) == {}
    with db.transaction():
        for statement in TAMPERING[case]:
            db.execute(statement)

    found = await findings(seeded_database)

    also = {"shares edited alone": {"each holding and its average cost follow from its fills"}}.get(case, set())
    assert set(found) == {CAUGHT_BY[case], *also}, found


async def test_clearing_must_move_exactly_the_exchanges_fills(
    stub: orders_pb2_grpc.OrderServiceStub,
    reporter: callback_pb2_grpc.CallbackServiceStub,
    db: psycopg.Connection,
    fake_exchange: FakeExchange,
    seeded_database: str,
) -> None:
    drop_copy = await settled_orders(stub, reporter, db)
    unbooked = exchange_pb2.DropCopyEntry()
    unbooked.CopyFrom(drop_copy[3])
    unbooked.report.exec_id = "never-reported"
    drop_copy[2].report.last_price = "231.01"
    fake_exchange.drop_copy = [drop_copy[1], drop_copy[2], drop_copy[3], drop_copy[4], unbooked]  # and no NEW
    db.execute(UNCHECKED)
    db.execute(  # an orphan: shares out of clearing with no fill of the venue's behind them
        "INSERT INTO transfers (transfer_key, kind, asset, customer_id, debit_account, credit_account, amount,"
        " order_id, exec_id) VALUES ('orphan:shares', 'fill', 'AAPL', '1', 'clearing', 'available', 5, 'o', 'orphan')"
    )

    found = await findings(seeded_database, fake_exchange)

    details = {f.subject: f.detail for f in found[CLEARING_CHECK]}
    first = drop_copy[2].report
    assert details == {
        f"execution {first.exec_id}": f"clearing moved order {first.order_id} BUY 2 AAPL for 462.00; "
        f"the exchange filled order {first.order_id} BUY 2 AAPL for 462.02",
        "execution never-reported": f"the exchange filled order {unbooked.report.order_id} BUY 2 AAPL for 459.00; "
        "clearing did not move",
        "execution orphan": "clearing moved order o BUY 5 AAPL for 0.00; the exchange's drop copy has no such fill",
    }


async def test_a_cancel_at_the_exchange_of_an_order_we_hold_as_filled_is_named(
    stub: orders_pb2_grpc.OrderServiceStub,
    reporter: callback_pb2_grpc.CallbackServiceStub,
    db: psycopg.Connection,
    fake_exchange: FakeExchange,
    seeded_database: str,
) -> None:
    drop_copy = await settled_orders(stub, reporter, db)
    canceled = exchange_pb2.DropCopyEntry()
    canceled.CopyFrom(drop_copy[4])
    canceled.report.exec_id, canceled.report.exec_type = "cancel-1", common_pb2.EXEC_TYPE_CANCELED
    canceled.report.last_quantity, canceled.report.last_price = 0, ""
    fake_exchange.drop_copy = [*drop_copy[:4], canceled]  # the venue says it canceled what it filled

    found = await findings(seeded_database, fake_exchange)

    order_id = drop_copy[4].report.order_id
    assert [(f.subject, f.detail) for f in found[OUTCOMES_CHECK]] == [
        (f"order {order_id}", "the exchange ended it CANCELED; we hold it FILLED")
    ]


async def test_a_customers_orders_that_reached_the_exchange_out_of_sequence_are_named(
    stub: orders_pb2_grpc.OrderServiceStub,
    reporter: callback_pb2_grpc.CallbackServiceStub,
    db: psycopg.Connection,
    fake_exchange: FakeExchange,
    seeded_database: str,
) -> None:
    drop_copy = await settled_orders(stub, reporter, db)
    for entry in drop_copy:  # customer 1's second order arrived before its first
        entry.arrival_sequence = {1: 3, 3: 1}.get(entry.arrival_sequence, entry.arrival_sequence)
    fake_exchange.drop_copy = drop_copy

    found = await findings(seeded_database, fake_exchange)

    [inversion] = found[ARRIVALS_CHECK]
    assert inversion.subject == "customer 1" and "(sequence 2) arrived 1, before order" in inversion.detail


def test_the_command_exits_0_when_clean_1_naming_each_failed_check_and_2_when_it_cannot_run(
    seeded_database: str,
) -> None:
    def run(database_url: str) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "BROKER_DATABASE_URL": database_url}
        command = [sys.executable, "-m", "brokerage.reconcile", "--without-exchange"]
        return subprocess.run(command, env=env, capture_output=True, text=True, timeout=60, check=False)

    clean = run(seeded_database)
    with psycopg.connect(seeded_database, autocommit=True) as conn:
        conn.execute("UPDATE balances SET available = available - 1 WHERE customer_id = '3'")
    broken = run(seeded_database)
    unreachable = run("postgresql://postgres@127.0.0.1:1/none")

    assert (clean.returncode, clean.stdout.splitlines()[-1]) == (0, "Clean."), clean.stdout + clean.stderr
    assert broken.returncode == 1 and "FAIL  balances equal their accounts" in broken.stdout
    assert "customer 3: available 99999.00, reserved 0.00; its accounts hold 100000.00 and 0.00" in broken.stdout
    assert broken.stdout.splitlines()[-1] == "1 discrepancy, failing: balances equal their accounts (1)."
    assert unreachable.returncode == 2 and "could not run" in unreachable.stderr
