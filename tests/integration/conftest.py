"""An in-process OrderService on a free port, against a fresh database and an emptied NATS."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from decimal import Decimal
from typing import TypeVar

import grpc
import psycopg
import pytest
from pydantic import SecretStr

from brokerage.proto import callback_pb2_grpc, orders_pb2_grpc
from brokerage.rpc.process import ServiceApp
from brokerage.rpc.server import stop_gracefully
from brokerage.settings import Settings
from brokerage.storage.queries import query
from brokerage.storage.seed import seed
from callback_service.main import CallbackApp
from callback_service.main import start as start_callback
from execution_service.main import ExecutionApp
from execution_service.main import start as start_execution
from order_service.main import OrderServiceApp, start
from tests.identity import customer_channel, identity_settings
from tests.integration.fake_exchange import FakeExchange, serve_fake_exchange

CUSTOMERS = 20
SHARD_COUNT = 16  # the default, as every test service is configured


@pytest.fixture
def seeded_database(database_url: str) -> str:
    """Instruments, fresh quotes, customers "1".."20" funded with 100000.00 each, and the shard count recorded
    (as the first service to start records it), so orders can be stored before any service runs."""
    seed(database_url, CUSTOMERS)
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(query("record_shard_count"), {"shard_count": SHARD_COUNT})
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
        **identity_settings(),
    }
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


@pytest.fixture
async def app(settings: Settings) -> AsyncIterator[OrderServiceApp]:
    async with running_app(settings) as running:
        yield running


App = TypeVar("App", bound=ServiceApp)
AnySettings = TypeVar("AnySettings")


@asynccontextmanager
async def running_service(
    start_app: Callable[[AnySettings], Awaitable[App]], settings: AnySettings
) -> AsyncIterator[App]:
    """Starts a service app in-process with its background work; stops it gracefully on exit."""
    app = await start_app(settings)
    app.running.tasks.extend(asyncio.create_task(c, name=c.__qualname__) for c in app.background())
    try:
        yield app
    finally:
        await stop_gracefully(app.running, readiness_delay=0, grace=1)
        await app.close()


def running_app(settings: Settings) -> AbstractAsyncContextManager[OrderServiceApp]:
    """An OrderService app, as running_service starts it."""
    return running_service(start, settings)


@pytest.fixture
async def stub(app: OrderServiceApp) -> AsyncIterator[orders_pb2_grpc.OrderServiceStub]:
    """A client signing each call as the customer its request names."""
    async with customer_channel(f"127.0.0.1:{app.running.port}") as channel:
        yield orders_pb2_grpc.OrderServiceStub(channel)


# Short timings, so takeovers, retries and sweeps happen within a test's patience.
EXECUTION_TIMINGS: dict[str, object] = {
    "exchange_deadline_seconds": 0.5,
    "consumer_ack_wait_seconds": 1,
    "fetch_timeout_seconds": 0.25,
    "retry_initial_seconds": 0.02,
    "retry_max_seconds": 0.2,
    "submit_retry_initial_seconds": 0.05,
    "submit_retry_max_seconds": 0.3,
    "expiry_grace_seconds": 1,
    "breaker_window_seconds": 5,
    "breaker_cooldown_seconds": 0.5,
    "sweep_interval_seconds": 0.2,
    "republish_after_seconds": 1.5,
    "republish_busy_after_seconds": 5,
    "status_query_after_seconds": 1.5,
    "quote_refresh_seconds": 0.2,
    "shard_refresh_seconds": 0.1,
    "readiness_interval_seconds": 0.2,
}


@pytest.fixture
async def fake_exchange() -> AsyncIterator[FakeExchange]:
    exchange = FakeExchange()
    running = await serve_fake_exchange(exchange)
    try:
        yield exchange
    finally:
        await running.server.stop(0)


@pytest.fixture
def execution_settings(seeded_database: str, fresh_nats: str, fake_exchange: FakeExchange) -> Settings:
    return make_settings(seeded_database, fresh_nats, exchange_target=fake_exchange.target, **EXECUTION_TIMINGS)


@pytest.fixture
async def execution(execution_settings: Settings) -> AsyncIterator[ExecutionApp]:
    """One worker of a cluster owning every shard, in-process, against the fake exchange."""
    async with running_service(start_execution, execution_settings) as running:
        yield running


CALLBACK_TOKEN = "test-callback-secret"


@pytest.fixture
async def callback(settings: Settings) -> AsyncIterator[CallbackApp]:
    """CallbackService in-process, expecting CALLBACK_TOKEN from the exchange."""
    with_token = settings.model_copy(update={"callback_token": SecretStr(CALLBACK_TOKEN)})
    async with running_service(start_callback, with_token) as app:
        yield app


@pytest.fixture
async def reporter(callback: CallbackApp) -> AsyncIterator[callback_pb2_grpc.CallbackServiceStub]:
    """CallbackService as the exchange calls it (the secret is the caller's to send)."""
    async with grpc.aio.insecure_channel(f"127.0.0.1:{callback.running.port}") as channel:
        yield callback_pb2_grpc.CallbackServiceStub(channel)


@pytest.fixture
def db(seeded_database: str) -> Iterator[psycopg.Connection]:
    """A plain autocommit connection for the test's own reads and set-up writes."""
    with psycopg.connect(seeded_database, autocommit=True) as conn:
        yield conn


def snapshot(conn: psycopg.Connection) -> dict[str, object]:
    """Everything placement may change, to prove that a refused request changed nothing (the relay may still take
    earlier messages out of the outbox meanwhile: what counts is how many were ever written)."""
    tables = ["orders", "balances", "positions", "transfers", "order_events"]
    state: dict[str, object] = {t: conn.execute(f"SELECT * FROM {t} ORDER BY 1").fetchall() for t in tables}
    state["outbox"] = outbox_written(conn)
    return state


def outbox_written(conn: psycopg.Connection) -> int:
    """How many messages were ever written to the outbox: the relay removes them once JetStream has them."""
    row = conn.execute("SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM outbox_message_id_seq").fetchone()
    assert row is not None
    return int(row[0])


def transfers_of(conn: psycopg.Connection, order_id: str) -> list[tuple[str, str, str, str, Decimal]]:
    """The order's transfers in booking order, each as (kind, asset, from account, to account, amount)."""
    rows = conn.execute(
        "SELECT kind, asset, debit_account, credit_account, amount FROM transfers WHERE order_id = %s"
        " ORDER BY transfer_id",
        (order_id,),
    )
    return [tuple(row) for row in rows.fetchall()]  # type: ignore[misc]


def available(conn: psycopg.Connection, customer_id: str) -> tuple[Decimal, Decimal]:
    row = conn.execute("SELECT available, reserved FROM balances WHERE customer_id = %s", (customer_id,)).fetchone()
    assert row is not None
    return row[0], row[1]
