"""An in-process OrderService on a free port, against a fresh database and an emptied NATS."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from decimal import Decimal

import grpc
import psycopg
import pytest

from brokerage.proto import orders_pb2_grpc
from brokerage.settings import Settings
from brokerage.storage.seed import seed
from order_service.main import OrderServiceApp, start

CUSTOMERS = 20


@pytest.fixture
def seeded_database(database_url: str) -> str:
    """Instruments, fresh quotes, and customers "1".."20" funded with 100000.00 each."""
    seed(database_url, CUSTOMERS)
    return database_url


@pytest.fixture
def settings(seeded_database: str, fresh_nats: str) -> Settings:
    return make_settings(seeded_database, fresh_nats)


def make_settings(database_url: str, nats_url: str, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "database_url": database_url,
        "nats_url": nats_url,
        "grpc_port": 0,
        "quote_max_age_seconds": 3600,
        "reference_refresh_seconds": 0.1,
        "relay_poll_seconds": 0.2,
        "publish_timeout_seconds": 2,
        "shutdown_readiness_delay_seconds": 0,
        "shutdown_grace_seconds": 1,
        "database_pool_max": 8,
    }
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


@pytest.fixture
async def app(settings: Settings) -> AsyncIterator[OrderServiceApp]:
    async with running_app(settings) as running:
        yield running


class running_app:
    """Starts an OrderService app with its background work; stops it gracefully on exit."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings

    async def __aenter__(self) -> OrderServiceApp:
        self.app = await start(self._settings)
        self.app.running.tasks.extend(asyncio.create_task(c) for c in self.app.background())
        return self.app

    async def __aexit__(self, *exc: object) -> None:
        from brokerage.rpc.server import stop_gracefully

        await stop_gracefully(self.app.running, readiness_delay=0, grace=1)
        await self.app.close()


@pytest.fixture
async def stub(app: OrderServiceApp) -> AsyncIterator[orders_pb2_grpc.OrderServiceStub]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.running.port}") as channel:
        yield orders_pb2_grpc.OrderServiceStub(channel)


@pytest.fixture
def db(seeded_database: str) -> Iterator[psycopg.Connection]:
    """A plain autocommit connection for the test's own reads and set-up writes."""
    with psycopg.connect(seeded_database, autocommit=True) as conn:
        yield conn


def snapshot(conn: psycopg.Connection) -> dict[str, object]:
    """Everything placement may change, to prove that a refused request changed nothing (the relay may
    still mark earlier messages published meanwhile)."""
    tables = ["orders", "balances", "positions", "ledger_entries", "order_events"]
    state = {t: conn.execute(f"SELECT * FROM {t} ORDER BY 1").fetchall() for t in tables}
    state["outbox"] = conn.execute("SELECT message_id, dedupe_id, subject FROM outbox ORDER BY 1").fetchall()
    return state


def available(conn: psycopg.Connection, customer_id: str) -> tuple[Decimal, Decimal]:
    row = conn.execute("SELECT available, reserved FROM balances WHERE customer_id = %s", (customer_id,)).fetchone()
    assert row is not None
    return row[0], row[1]
