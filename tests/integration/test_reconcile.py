"""Reconciliation (rule 8): clean after real settlement, and each check catching what it is for."""

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
from brokerage.proto import callback_pb2_grpc, exchange_pb2, orders_pb2_grpc
from brokerage.reconcile import DROP_COPY_CHECK, reconcile
from tests.integration.fake_exchange import FakeExchange
from tests.integration.test_settlement import FILL, NEW, PARTIAL, at_exchange, report, send

pytestmark = pytest.mark.integration

TODAY = datetime.now(ZoneInfo("America/New_York")).date()


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
    """Two orders filled through CallbackService; returns their fills as the exchange's drop copy lists them."""
    first = await at_exchange(stub, db, key="a", quantity=3)
    second = await at_exchange(stub, db, key="b", customer="2", quantity=2)
    reports = [
        report(first, NEW),
        report(first, PARTIAL, last=1, price="230.00", cumulative=1),
        report(first, FILL, last=2, price="231.00", cumulative=3),
        report(second, FILL, last=2, price="229.50", cumulative=2),
    ]
    await send(reporter, *reports)
    return [exchange_pb2.DropCopyEntry(report=r, customer_id="x", arrival_sequence=1) for r in reports]


async def test_a_settled_day_is_clean_and_matches_the_drop_copy(
    stub: orders_pb2_grpc.OrderServiceStub,
    reporter: callback_pb2_grpc.CallbackServiceStub,
    db: psycopg.Connection,
    fake_exchange: FakeExchange,
    seeded_database: str,
) -> None:
    fake_exchange.drop_copy = await settled_orders(stub, reporter, db)

    assert await findings(seeded_database, fake_exchange) == {}


@pytest.mark.parametrize(
    ("tampering", "check"),
    [
        ("UPDATE balances SET available = available + 0.01 WHERE customer_id = '1'", "balances equal the ledger"),
        (
            "UPDATE balances SET reserved = reserved + 5, available = available - 5 WHERE customer_id = '2'",
            "reserved cash equals the open orders' reservations",
        ),
        ("UPDATE positions SET quantity = quantity + 1 WHERE customer_id = '1'", "positions equal the fills"),
        (
            "UPDATE orders SET filled_quantity = 2 WHERE customer_id = '1'",
            "each order's filled quantity equals its executions",
        ),
        (
            "UPDATE ledger_entries SET reserved_delta = reserved_delta - 1 WHERE kind = 'fill' AND asset = 'USD' "
            "AND customer_id = '2'",
            "each fill moved exactly its money and shares",
        ),
        (
            "UPDATE orders SET status = 'SUBMITTED', updated_at = now() - interval '1 hour' WHERE customer_id = '2'",
            "no order is stuck",
        ),
        (
            "INSERT INTO breaks (exec_id, order_id, kind, detail, report) VALUES ('X', 'Y', 'overfill', 'd', '{}')",
            "no break is open",
        ),
    ],
)
async def test_each_check_catches_what_it_is_for(
    tampering: str,
    check: str,
    stub: orders_pb2_grpc.OrderServiceStub,
    reporter: callback_pb2_grpc.CallbackServiceStub,
    db: psycopg.Connection,
    seeded_database: str,
) -> None:
    await settled_orders(stub, reporter, db)
    db.execute(tampering)

    found = await findings(seeded_database)

    assert check in found, found


async def test_fills_missing_on_either_side_or_booked_differently_are_named(
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
    fake_exchange.drop_copy = [drop_copy[1], drop_copy[2], drop_copy[3], unbooked]  # and no fill 0: NEW only

    found = await findings(seeded_database, fake_exchange)

    assert {f.subject: f.detail.split(";")[1].strip() for f in found[DROP_COPY_CHECK]} == {
        f"execution {drop_copy[2].report.exec_id}": f"the exchange filled order {drop_copy[2].report.order_id} "
        "BUY 2 at 231.01",
        "execution never-reported": "we have not booked it",
    }


def test_the_command_exits_0_when_clean_1_on_a_discrepancy_and_2_when_it_cannot_run(seeded_database: str) -> None:
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
    assert broken.returncode == 1 and "FAIL  balances equal the ledger" in broken.stdout
    assert "customer 3: available 99999.00, reserved 0.00; the ledger says 100000.00 and 0.00" in broken.stdout
    assert unreachable.returncode == 2 and "could not run" in unreachable.stderr
