"""Group commits against real PostgreSQL while another transaction holds a customer (migration 0010): the calls of
that customer wait apart, and the others that shared their statement commit at once."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager

import psycopg
import pytest
from psycopg_pool import AsyncConnectionPool

from brokerage.domain.executions import ExecType, Received, SettlementOutcome
from brokerage.domain.orders import Order, OrderStatus
from brokerage.storage.orders import order_from_row
from brokerage.storage.pool import open_pool
from brokerage.storage.queries import fetch_all
from brokerage.storage.settlements import SettlementStore
from brokerage.storage.submissions import SubmissionStore
from tests.factories import execution_report, received
from tests.integration.conftest import make_settings

pytestmark = pytest.mark.integration


@pytest.fixture
async def pool(seeded_database: str) -> AsyncIterator[AsyncConnectionPool]:
    pool = await open_pool(make_settings(seeded_database, "nats://unused"))
    yield pool
    await pool.close()


@contextmanager
def customer_held(database_url: str, customer_id: str) -> Iterator[None]:
    """Another transaction holds the customer's lock (as a worker or a settlement does) until the block ends."""
    with psycopg.connect(database_url) as holder:
        holder.execute("SELECT 1 FROM balances WHERE customer_id = %s FOR UPDATE", (customer_id,))
        yield
        holder.rollback()


async def placed(pool: AsyncConnectionPool, order_id: str, customer_id: str, *, submitted: bool = False) -> Order:
    """A buy of 1 AAPL, claimed by a worker (and with submitted, recorded SUBMITTED as venue order V-<id>)."""
    await fetch_all(
        pool,
        "place_orders",
        {
            "order_id": [order_id],
            "customer_id": [customer_id],
            "client_order_id": [f"k-{order_id}"],
            "symbol": ["AAPL"],
            "side": ["BUY"],
            "quantity": [1],
            "protection_price": ["240.00"],
            "reference_price": [None],
            "reject_code": [None],
            "reject_reason": [None],
            "subject": ["orders.1"],
            "payload": [b""],
            "expires_at": [None],
        },
    )
    async with pool.connection() as conn:
        await conn.execute("UPDATE orders SET claimed_at = now() WHERE order_id = %s", (order_id,))
        if submitted:
            await conn.execute("SELECT record_submitted(%s, %s)", (order_id, f"V-{order_id}"))
    return await stored(pool, order_id)


async def stored(pool: AsyncConnectionPool, order_id: str) -> Order:
    async with pool.connection() as conn:
        cursor = await conn.execute("SELECT * FROM orders WHERE order_id = %s", (order_id,))
        names = [c.name for c in cursor.description or []]
        row = await cursor.fetchone()
    assert row is not None
    return order_from_row(dict(zip(names, row, strict=True)))


async def test_a_record_of_a_busy_customer_waits_apart_and_the_records_of_others_commit_at_once(
    pool: AsyncConnectionPool, seeded_database: str
) -> None:
    busy_order, free_order = await placed(pool, "o1", "1"), await placed(pool, "o2", "2")
    store = SubmissionStore(pool, group_flushers=1)  # one statement in flight: both calls share it

    with customer_held(seeded_database, "1"):
        busy = asyncio.create_task(store.record_submitted(busy_order, "V-o1"))
        free = asyncio.create_task(store.record_submitted(free_order, "V-o2"))
        recorded = await asyncio.wait_for(free, 5)
        await asyncio.sleep(0.2)
        assert not busy.done()

    assert recorded is not None and recorded.status is OrderStatus.SUBMITTED
    waited = await asyncio.wait_for(busy, 5)
    assert waited is not None and waited.status is OrderStatus.SUBMITTED
    assert (await stored(pool, "o1")).status is OrderStatus.SUBMITTED


async def test_a_report_of_a_busy_customer_waits_apart_and_the_reports_of_others_are_booked_at_once(
    pool: AsyncConnectionPool, seeded_database: str
) -> None:
    for order_id, customer_id in (("o1", "1"), ("o2", "2")):
        await placed(pool, order_id, customer_id, submitted=True)
    store = SettlementStore(pool, batch_max=64, flushers=1)  # one lane: the reports share its transaction

    def fill(exec_id: str, order_id: str) -> list[Received]:
        return [received(execution_report(exec_id, order_id, exec_type=ExecType.FILL, order_quantity=1))]

    acknowledgement = execution_report(
        "E0", "o1", exec_type=ExecType.NEW, order_quantity=1, last_quantity=0, last_price=None, cumulative_quantity=0
    )
    with customer_held(seeded_database, "1"):
        # The acknowledgement of an order already SUBMITTED takes no lock: never busy.
        ack = asyncio.create_task(store.apply([received(acknowledgement)]))
        busy = asyncio.create_task(store.apply(fill("E1", "o1")))
        free = asyncio.create_task(store.apply(fill("E2", "o2")))
        [acknowledged], [booked] = await asyncio.wait_for(asyncio.gather(ack, free), 5)
        assert (await stored(pool, "o2")).status is OrderStatus.FILLED
        await asyncio.sleep(0.2)
        assert not busy.done()
        assert (await stored(pool, "o1")).status is OrderStatus.SUBMITTED

    assert (acknowledged.outcome, booked.outcome) == (SettlementOutcome.APPLIED, SettlementOutcome.APPLIED)
    [waited] = await asyncio.wait_for(busy, 5)
    assert waited.outcome is SettlementOutcome.APPLIED
    assert (await stored(pool, "o1")).status is OrderStatus.FILLED
