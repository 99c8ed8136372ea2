"""Settlement end to end, on the mesh of `make run` with the exchange simulator in chaos mode: 30% of its reports
delayed (so reordered), 30% sent twice, and 30% of orders filled before their acknowledgement returns.

Whatever the exchange sends, every order ends, reconciliation is clean, and every customer's cash and shares
equal a recomputation from the exchange's drop copy alone, to the cent.
"""

from __future__ import annotations

import asyncio
import random
from collections import defaultdict
from collections.abc import Iterator
from decimal import Decimal

import grpc
import psycopg
import pytest

from brokerage.domain.money import parse_decimal
from brokerage.proto import common_pb2, orders_pb2, orders_pb2_grpc
from brokerage.storage.seed import DEFAULT_FUNDING
from devtools.mesh import read_drop_copy
from devtools.stack import NatsServer, PostgresCluster
from tests.e2e.mesh import Mesh, place_all, reconcile, running_mesh, wait_all_settled
from tests.identity import customer_channel

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]

CUSTOMERS = 200
BUYS_PER_CUSTOMER = 15
SELLS_PER_CUSTOMER = 10
SYMBOLS = ("AAPL", "MSFT", "GOOGL", "AMZN", "NVDA", "JPM")
FILL = {common_pb2.EXEC_TYPE_PARTIAL_FILL, common_pb2.EXEC_TYPE_FILL}
Raced = tuple[orders_pb2.Order, orders_pb2.Order | None]  # an order as placed, and as its cancel left it


@pytest.fixture(scope="module")
def chaotic_mesh(
    postgres_cluster: PostgresCluster,
    migrated_template: str,
    nats_server: NatsServer,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Mesh]:
    with running_mesh(
        postgres_cluster,
        migrated_template,
        nats_server,
        tmp_path_factory.mktemp("chaos"),
        CUSTOMERS,
        EXCHANGE_CHAOS_RATE="0.3",
        EXCHANGE_CHAOS_MAX_DELAY_MS="300",
        EXCHANGE_PARTIAL_FILL_PROBABILITY="0.3",
        EXCHANGE_FILL_DELAY_MS="400",  # fills 200-600 ms after arrival: a cancel can race them at any load
        EXCHANGE_SEED="11",
    ) as mesh:
        yield mesh


def test_5000_orders_under_chaos_end_reconcile_clean_and_match_the_drop_copy_to_the_cent(chaotic_mesh: Mesh) -> None:
    mesh, rng = chaotic_mesh, random.Random(5)
    target = mesh.plan.order_service.target

    buys = [
        _request(c, f"buy-{i}", rng.choice(SYMBOLS), common_pb2.SIDE_BUY, rng.randint(1, 10))
        for i in range(BUYS_PER_CUSTOMER)
        for c in range(1, CUSTOMERS + 1)
    ]
    bought = asyncio.run(place_all(target, buys))
    wait_all_settled(mesh.database_url, bought, timeout=300)
    sells = asyncio.run(_sells_of_what_was_bought(target, rng))
    sold = asyncio.run(place_all(target, sells))
    wait_all_settled(mesh.database_url, sold, timeout=300)

    assert len(bought) + len(sold) == CUSTOMERS * (BUYS_PER_CUSTOMER + SELLS_PER_CUSTOMER) == 5000
    reconciled = reconcile(mesh)
    assert reconciled.returncode == 0, reconciled.stdout + reconciled.stderr
    cash, shares = _recomputed_from_drop_copy(mesh.plan.exchange.target)
    assert _accounts(mesh.database_url) == {c: (cash[c], Decimal(0)) for c in map(str, range(1, CUSTOMERS + 1))}
    assert _holdings(mesh.database_url) == {k: v for k, v in shares.items() if v}
    _assert_chaos_happened(mesh)


def test_cancels_racing_fills_at_the_exchange_end_every_order_and_keep_the_books(chaotic_mesh: Mesh) -> None:
    """Each order is canceled a random moment after it was placed, spread across its fill's arrival: a cancel
    early enough wins at the exchange (CANCELED), one that reaches the exchange just after the fill loses it
    (FILLED, although we had shown the cancel as requested). Neither outcome depends on the machine's speed."""
    mesh, rng = chaotic_mesh, random.Random(9)
    target = mesh.plan.order_service.target
    requests = [
        _request(c, f"race-{i}", rng.choice(SYMBOLS), common_pb2.SIDE_BUY, rng.randint(1, 5))
        for i in range(3)
        for c in range(1, CUSTOMERS + 1)
    ]
    cancel_after = [rng.uniform(0, 1.2) for _ in requests]

    async def place_and_cancel() -> list[Raced]:
        async with customer_channel(target) as channel:
            stub = orders_pb2_grpc.OrderServiceStub(channel)
            slots = asyncio.Semaphore(48)

            async def race(request: orders_pb2.PlaceOrderRequest, delay: float) -> Raced:
                async with slots:
                    placed = await stub.PlaceOrder(request, timeout=10, wait_for_ready=True)
                    await asyncio.sleep(delay)
                    cancel = orders_pb2.CancelOrderRequest(customer_id=placed.customer_id, order_id=placed.order_id)
                    try:
                        return placed, await stub.CancelOrder(cancel, timeout=10)
                    except grpc.aio.AioRpcError as error:  # already filled: nothing left to cancel
                        assert error.code() == grpc.StatusCode.FAILED_PRECONDITION, error
                        return placed, None

            return await asyncio.gather(*map(race, requests, cancel_after))

    raced = asyncio.run(place_and_cancel())
    placed = [p for p, _ in raced]
    wait_all_settled(mesh.database_url, placed, timeout=120)

    ended = _statuses(mesh.database_url, [o.order_id for o in placed])
    assert set(ended.values()) <= {"FILLED", "CANCELED"}
    asked = {answer.order_id for _, answer in raced if answer is not None and answer.cancel_requested}
    assert {ended[o] for o in asked} == {"FILLED", "CANCELED"}, "some cancels won at the exchange, some fills did"
    reconciled = reconcile(mesh)
    assert reconciled.returncode == 0, reconciled.stdout + reconciled.stderr


def _request(customer: int, key: str, symbol: str, side: int, quantity: int) -> orders_pb2.PlaceOrderRequest:
    return orders_pb2.PlaceOrderRequest(
        customer_id=str(customer),
        client_order_id=key,
        symbol=symbol,
        side=side,
        quantity=quantity,  # type: ignore[arg-type]
    )


async def _sells_of_what_was_bought(target: str, rng: random.Random) -> list[orders_pb2.PlaceOrderRequest]:
    """Each customer sells parts of what it holds: never more than it has, so every sell is PLACED."""
    async with customer_channel(target) as channel:
        stub = orders_pb2_grpc.OrderServiceStub(channel)
        sells = []
        for customer in range(1, CUSTOMERS + 1):
            held = await stub.ListPositions(orders_pb2.ListPositionsRequest(customer_id=str(customer)), timeout=10)
            left = {p.symbol: p.quantity for p in held.positions}
            for i in range(SELLS_PER_CUSTOMER):
                symbol = max(left, key=lambda s: (left[s], s))
                quantity = max(1, left[symbol] // (SELLS_PER_CUSTOMER - i + 1)) if left[symbol] else 0
                assert quantity, f"customer {customer} has nothing left to sell"
                left[symbol] -= quantity
                sells.append(_request(customer, f"sell-{i}", symbol, common_pb2.SIDE_SELL, quantity))
        return sells


def _recomputed_from_drop_copy(exchange: str) -> tuple[dict[str, Decimal], dict[tuple[str, str], int]]:
    """Each customer's cash and shares from the exchange's fills alone: the funding, less what buys cost, plus what
    sells brought (each exec_id once: the drop copy lists each report once, however often it was delivered)."""
    cash = {customer: DEFAULT_FUNDING for customer in map(str, range(1, CUSTOMERS + 1))}
    shares: dict[tuple[str, str], int] = defaultdict(int)
    for entry in read_drop_copy(exchange):
        fill = entry.report
        if fill.exec_type not in FILL:
            continue
        sign = 1 if fill.side == common_pb2.SIDE_BUY else -1
        cash[entry.customer_id] -= sign * fill.last_quantity * parse_decimal(fill.last_price)
        shares[(entry.customer_id, fill.symbol)] += sign * fill.last_quantity
    return cash, dict(shares)


def _accounts(database_url: str) -> dict[str, tuple[Decimal, Decimal]]:
    with psycopg.connect(database_url) as conn:
        return {c: (a, r) for c, a, r in conn.execute("SELECT customer_id, available, reserved FROM balances")}


def _holdings(database_url: str) -> dict[tuple[str, str], int]:
    with psycopg.connect(database_url) as conn:
        rows = conn.execute("SELECT customer_id, symbol, quantity FROM positions WHERE quantity <> 0")
        return {(c, s): q for c, s, q in rows}


def _statuses(database_url: str, order_ids: list[str]) -> dict[str, str]:
    with psycopg.connect(database_url) as conn:
        return dict(conn.execute("SELECT order_id, status FROM orders WHERE order_id = ANY(%s)", (order_ids,)))


def _assert_chaos_happened(mesh: Mesh) -> None:
    """The reports really came twice and out of order: settlement saw duplicates, and fills before SUBMITTED."""
    with psycopg.connect(mesh.database_url) as conn:
        fills_first = conn.execute(
            """SELECT count(*) FROM orders o WHERE NOT EXISTS
                 (SELECT 1 FROM order_events e WHERE e.order_id = o.order_id AND e.event_type = 'submitted')
                AND o.filled_quantity > 0"""
        ).fetchone()
    callback_logs = mesh.processes["callback-service"].logs()
    duplicates = sum(1 for line in callback_logs if line.get("outcome") == "duplicate")
    assert duplicates > 100 and fills_first is not None and fills_first[0] > 0, (duplicates, fills_first)
