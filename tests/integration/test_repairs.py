"""Repairs without hand edits (the operations service and brokerctl): each break resolved by the rule of its kind
against the venue's drop copy, each order redriven through what the venue says, every repair an audit row and
balanced transfers, and the books clean again afterwards. In-process services against real PostgreSQL, the fake
exchange playing the venue and its drop copy."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

import grpc
import psycopg
import pytest

from brokerage.proto import (
    callback_pb2,
    callback_pb2_grpc,
    common_pb2,
    exchange_pb2,
    operations_pb2,
    operations_pb2_grpc,
    orders_pb2_grpc,
)
from brokerage.settings import Settings
from operations_service.main import OperationsApp
from operations_service.main import start as start_operations
from tests.identity import TEST_IDENTITY, as_operator
from tests.integration.conftest import running_service, transfers_of
from tests.integration.fake_exchange import FakeExchange
from tests.integration.test_place_order import place
from tests.integration.test_reconcile import findings
from tests.integration.test_settlement import FILL, NEW, PARTIAL, at_exchange, report, send

pytestmark = pytest.mark.integration

AS_OPERATOR = as_operator("ada")
ADA = f"ada ({TEST_IDENTITY.operators.issuer})"  # as the audit rows name her: her token's subject and issuer
ACCEPT, WRITE_OFF = operations_pb2.BREAK_RESOLUTION_ACCEPT_VENUE, operations_pb2.BREAK_RESOLUTION_WRITE_OFF


@pytest.fixture
async def operations(settings: Settings, fake_exchange: FakeExchange) -> AsyncIterator[OperationsApp]:
    configured = settings.model_copy(update={"exchange_target": fake_exchange.target})
    async with running_service(start_operations, configured) as app:
        yield app


@pytest.fixture
async def operator(operations: OperationsApp) -> AsyncIterator[operations_pb2_grpc.OperationsServiceStub]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{operations.running.port}") as channel:
        yield operations_pb2_grpc.OperationsServiceStub(channel)


def on_the_drop_copy(exchange: FakeExchange, *reports: callback_pb2.ExecutionReport) -> None:
    exchange.drop_copy += [exchange_pb2.DropCopyEntry(report=r, customer_id="1", arrival_sequence=1) for r in reports]


async def resolve(
    operator: operations_pb2_grpc.OperationsServiceStub, break_id: int, resolution: int, note: str = "checked"
) -> operations_pb2.ResolveBreakResponse:
    request = operations_pb2.ResolveBreakRequest(break_id=break_id, resolution=resolution, note=note)
    return await operator.ResolveBreak(request, metadata=AS_OPERATOR, timeout=10)


async def open_breaks(operator: operations_pb2_grpc.OperationsServiceStub) -> list[operations_pb2.Break]:
    return list((await operator.ListBreaks(operations_pb2.ListBreaksRequest(), metadata=AS_OPERATOR)).breaks)


async def test_a_malformed_fill_is_listed_and_accepting_the_venue_books_its_drop_copy_and_cleans_the_books(
    stub: orders_pb2_grpc.OrderServiceStub,
    reporter: callback_pb2_grpc.CallbackServiceStub,
    operator: operations_pb2_grpc.OperationsServiceStub,
    fake_exchange: FakeExchange,
    db: psycopg.Connection,
    seeded_database: str,
) -> None:
    order = await at_exchange(stub, db, quantity=2)
    fill = report(order, FILL, last=2, price="230.00", cumulative=2)
    malformed = callback_pb2.ExecutionReport()
    malformed.CopyFrom(fill)
    malformed.last_price = "230,00"
    await send(reporter, malformed)  # acknowledged: the venue sends it no more, and the real fill is in its drop copy
    on_the_drop_copy(fake_exchange, report(order, NEW), fill)

    [listed] = await open_breaks(operator)
    assert (listed.kind, listed.exec_id, listed.order_id) == ("malformed", fill.exec_id, order.order_id)
    assert "no break is open" in await findings(seeded_database, fake_exchange)

    answer = await resolve(operator, listed.break_id, ACCEPT, "the drop copy has the fill")
    again = await resolve(operator, listed.break_id, ACCEPT, "asked twice")

    assert "booked the drop copy's execution" in answer.outcome and "booked to the customer" in answer.outcome
    assert again.outcome.startswith(f"already resolved: accepted_venue, by {ADA}")
    assert db.execute("SELECT status FROM orders WHERE order_id = %s", (order.order_id,)).fetchone() == ("FILLED",)
    repairs = db.execute("SELECT action, break_id, operator, note FROM repairs").fetchall()
    assert repairs == [("accepted_venue", listed.break_id, ADA, "the drop copy has the fill")]
    assert await findings(seeded_database, fake_exchange) == {}


async def test_a_break_is_written_off_only_when_the_drop_copy_lacks_it_and_accepted_only_when_it_has_it(
    stub: orders_pb2_grpc.OrderServiceStub,
    reporter: callback_pb2_grpc.CallbackServiceStub,
    operator: operations_pb2_grpc.OperationsServiceStub,
    fake_exchange: FakeExchange,
    db: psycopg.Connection,
) -> None:
    order = await at_exchange(stub, db, quantity=2)
    made_up = report(order, FILL, last=2, price="x", cumulative=2)
    await send(reporter, made_up)
    [listed] = await open_breaks(operator)

    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await resolve(operator, listed.break_id, ACCEPT)
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION and "write it off" in refused.value.details()

    written_off = await resolve(operator, listed.break_id, WRITE_OFF, "the venue has no such fill")
    assert getattr(written_off, "break").resolution == "written_off"

    made = report(order, FILL, last=2, price="230.00", cumulative=2)
    made.last_price = "?"
    await send(reporter, made)
    on_the_drop_copy(fake_exchange, report(order, FILL, last=2, price="230.00", cumulative=2, exec_id=made.exec_id))
    [second] = await open_breaks(operator)
    with pytest.raises(grpc.aio.AioRpcError) as kept:
        await resolve(operator, second.break_id, WRITE_OFF)
    assert kept.value.code() == grpc.StatusCode.FAILED_PRECONDITION and "accept it" in kept.value.details()


async def test_writing_off_a_fill_booked_to_the_error_account_reverses_it_and_clearing_nets_to_nothing(
    stub: orders_pb2_grpc.OrderServiceStub,
    reporter: callback_pb2_grpc.CallbackServiceStub,
    operator: operations_pb2_grpc.OperationsServiceStub,
    fake_exchange: FakeExchange,
    db: psycopg.Connection,
    seeded_database: str,
) -> None:
    order = await at_exchange(stub, db, quantity=3)
    fill = report(order, FILL, last=3, price="230.00", cumulative=3)
    overfill = report(order, PARTIAL, last=2, price="230.00", cumulative=5)  # after it ended: to the error account
    await send(reporter, report(order, NEW), fill, overfill)
    on_the_drop_copy(fake_exchange, report(order, NEW), fill)  # the venue made no such fill
    [listed] = await open_breaks(operator)
    assert (listed.kind, listed.booked_to_error_account) == ("fill_after_end", True)

    answer = await resolve(operator, listed.break_id, WRITE_OFF, "not in the drop copy")

    assert answer.outcome == "reverse what was booked to the error account"
    reversed_ = db.execute(
        "SELECT asset, debit_account, credit_account, amount FROM transfers WHERE kind = 'repair' ORDER BY transfer_id"
    ).fetchall()
    assert reversed_ == [("USD", "clearing", "error", Decimal("460.00")), ("AAPL", "error", "clearing", Decimal(2))]
    assert await findings(seeded_database, fake_exchange) == {}


async def test_a_parked_order_is_not_resolved_by_hand_but_redriven_and_sent_again_when_the_venue_never_had_it(
    stub: orders_pb2_grpc.OrderServiceStub,
    operator: operations_pb2_grpc.OperationsServiceStub,
    db: psycopg.Connection,
) -> None:
    order = await stub.PlaceOrder(place(key="p", quantity=1), timeout=5)
    db.execute("UPDATE orders SET claimed_at = now() WHERE order_id = %s", (order.order_id,))  # a worker took it
    db.execute("SELECT record_submit_failure(%s, 'INTERNAL: no', true, NULL, true)", (order.order_id,))
    [parked] = await open_breaks(operator)
    assert parked.kind == "parked"

    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await resolve(operator, parked.break_id, WRITE_OFF)
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION and "redrive" in refused.value.details()

    request = operations_pb2.RedriveOrderRequest(order_id=order.order_id, note="the venue is fixed")
    redriven = await operator.RedriveOrder(request, metadata=AS_OPERATOR, timeout=10)

    assert redriven.outcome == "the exchange never received it: sent again"
    row = db.execute(
        "SELECT parked_at IS NULL, retry_at <= now(), held_by FROM orders WHERE order_id = %s", (order.order_id,)
    ).fetchone()
    assert row == (True, True, order.order_id)  # its retry due: the sweeper's wake-up lifts the hold and sends it
    assert db.execute("SELECT resolution, resolved_by FROM breaks").fetchone() == ("redriven", ADA)
    assert await open_breaks(operator) == []


async def test_an_order_at_the_venue_that_the_venue_never_received_is_canceled_through_its_tombstone(
    stub: orders_pb2_grpc.OrderServiceStub,
    operator: operations_pb2_grpc.OperationsServiceStub,
    fake_exchange: FakeExchange,
    db: psycopg.Connection,
    seeded_database: str,
) -> None:
    order = await at_exchange(stub, db, key="lost", quantity=2)  # SUBMITTED here, unknown to the fake venue

    request = operations_pb2.RedriveOrderRequest(order_id=order.order_id, note="lost at the venue")
    redriven = await operator.RedriveOrder(request, metadata=AS_OPERATOR, timeout=10)

    assert redriven.status == common_pb2.ORDER_STATUS_CANCELED and "tombstone" in redriven.outcome
    assert fake_exchange.tombstones == [order.order_id]
    kinds = [kind for kind, *_ in transfers_of(db, order.order_id)]
    assert kinds == ["reserve", "release"]
    assert await findings(seeded_database) == {}


async def test_calls_without_the_secret_a_note_or_a_known_break_are_refused(
    operator: operations_pb2_grpc.OperationsServiceStub,
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as forged:
        await operator.ListBreaks(operations_pb2.ListBreaksRequest(), metadata=(("authorization", "Bearer no"),))
    with pytest.raises(grpc.aio.AioRpcError) as no_note:
        await resolve(operator, 1, ACCEPT, note=" ")
    with pytest.raises(grpc.aio.AioRpcError) as unknown:
        await resolve(operator, 999, ACCEPT)
    with pytest.raises(grpc.aio.AioRpcError) as no_resolution:
        await resolve(operator, 1, operations_pb2.BREAK_RESOLUTION_UNSPECIFIED)

    assert forged.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert no_note.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert unknown.value.code() == grpc.StatusCode.NOT_FOUND
    assert no_resolution.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_breaks_are_listed_page_by_page_oldest_first(
    operator: operations_pb2_grpc.OperationsServiceStub, db: psycopg.Connection
) -> None:
    for n in range(5):
        db.execute(
            "INSERT INTO breaks (break_key, exec_id, kind, detail) VALUES (%s, %s, 'malformed', 'unreadable')",
            (f"malformed:E{n}", f"E{n}"),
        )
    db.commit()
    request = operations_pb2.ListBreaksRequest(page_size=2)
    pages = []
    while True:
        page = await operator.ListBreaks(request, metadata=AS_OPERATOR, timeout=10)
        pages.append([b.exec_id for b in page.breaks])
        if not page.next_page_token:
            break
        request.page_token = page.next_page_token
    with pytest.raises(grpc.aio.AioRpcError) as forged:
        bad = operations_pb2.ListBreaksRequest(page_token="x'--")
        await operator.ListBreaks(bad, metadata=AS_OPERATOR, timeout=10)

    assert pages == [["E0", "E1"], ["E2", "E3"], ["E4"]]
    assert forged.value.code() == grpc.StatusCode.INVALID_ARGUMENT


@dataclass(frozen=True)
class Ran:
    returncode: int
    stdout: str
    stderr: str


async def brokerctl(operations: OperationsApp, tmp_path: Path, *args: str) -> Ran:
    """The console script, run beside the in-process service (whose event loop must go on answering meanwhile)."""
    (tmp_path / "token").write_text(TEST_IDENTITY.operator_token("ada"))
    process = await asyncio.create_subprocess_exec(
        str(Path(sys.executable).parent / "brokerctl"),
        *("--target", f"127.0.0.1:{operations.running.port}", "--token-file", str(tmp_path / "token"), *args),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode is not None
    return Ran(process.returncode, out.decode(), err.decode())


async def test_brokerctl_lists_resolves_and_reconciles(
    stub: orders_pb2_grpc.OrderServiceStub,
    reporter: callback_pb2_grpc.CallbackServiceStub,
    operations: OperationsApp,
    fake_exchange: FakeExchange,
    db: psycopg.Connection,
    tmp_path: Path,
) -> None:
    order = await at_exchange(stub, db, quantity=1)
    broken = report(order, FILL, last=1, price="?", cumulative=1)
    await send(reporter, broken)
    on_the_drop_copy(fake_exchange, report(order, NEW))  # the venue made no such fill

    listed = await brokerctl(operations, tmp_path, "breaks", "list")
    dirty = await brokerctl(operations, tmp_path, "reconcile")
    resolved = await brokerctl(
        operations,
        tmp_path,
        "breaks",
        "resolve",
        "--kind",
        "malformed",
        "--all",
        "--write-off",
        "--note",
        "no such fill at the venue",
    )
    clean = await brokerctl(operations, tmp_path, "reconcile")
    refused = await brokerctl(operations, tmp_path, "breaks", "resolve", "999", "--accept-venue", "--note", "x")

    assert listed.returncode == 0 and f"execution {broken.exec_id} of order {order.order_id} [open]" in listed.stdout
    assert dirty.returncode == 1 and "FAIL  no break is open" in dirty.stdout
    assert resolved.returncode == 0 and "break 1: nothing was booked: written off" in resolved.stdout
    assert clean.returncode == 0 and clean.stdout.splitlines()[-1] == "Clean.", clean.stdout + clean.stderr
    assert refused.returncode == 2 and "NOT_FOUND" in refused.stderr
