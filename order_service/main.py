"""Wires and serves OrderService: `python -m order_service`. Settings come from BROKER_* variables."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Coroutine
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from psycopg_pool import AsyncConnectionPool

from brokerage.domain.market_hours import AlwaysOpen, MarketClock, NyseRegularSession
from brokerage.domain.placement import PlacementPolicy
from brokerage.messaging.connection import JetStreamLink
from brokerage.messaging.relay import OutboxRelay
from brokerage.messaging.streams import ensure_orders_stream
from brokerage.proto import orders_pb2_grpc
from brokerage.rpc.server import RunningServer, Service, create_server, serve_until_signalled
from brokerage.settings import MarketHours, Settings, load_settings
from brokerage.storage.orders import OrderStore
from brokerage.storage.outbox import Outbox
from brokerage.storage.pool import open_pool
from brokerage.storage.queries import query
from brokerage.storage.reference import ReferenceData
from brokerage.storage.shard_config import check_shard_count
from brokerage.telemetry import configure_logging, get_logger, serve_metrics
from order_service.desk import OrderDesk
from order_service.servicer import OrderServicer

log = get_logger(__name__)
SERVICE_NAME = "broker.v1.OrderService"


@dataclass
class OrderServiceApp:
    settings: Settings
    pool: AsyncConnectionPool
    link: JetStreamLink
    relay: OutboxRelay
    reference: ReferenceData
    running: RunningServer

    def background(self) -> list[Coroutine[Any, Any, None]]:
        """The work that runs beside the server: the outbox relay, reference prices, readiness."""
        return [
            self.relay.run(),
            self.reference.keep_fresh(),
            self.running.health.follow([self.ping_database], interval=self.settings.readiness_interval_seconds),
        ]

    async def ping_database(self) -> None:
        async with self.pool.connection() as conn:
            await conn.execute(query("ping"))

    async def close(self) -> None:
        await self.link.close()
        await self.pool.close()


def market_clock(settings: Settings) -> MarketClock:
    return NyseRegularSession() if settings.market_hours is MarketHours.NYSE else AlwaysOpen()


async def start(settings: Settings) -> OrderServiceApp:
    """Opens the dependencies and starts serving; the caller runs `background()` and closes the app."""
    pool = await open_pool(settings)
    await check_shard_count(pool, settings.shard_count)
    reference = ReferenceData(pool, settings.reference_refresh_seconds)
    await reference.refresh()
    link = JetStreamLink(settings.nats_url, "order-service", on_connected=lambda js: ensure_orders_stream(js, settings))
    relay = OutboxRelay(
        Outbox(pool),
        link,
        batch_size=settings.relay_batch_size,
        poll_seconds=settings.relay_poll_seconds,
        publish_timeout=settings.publish_timeout_seconds,
    )
    policy = PlacementPolicy(
        price_collar=settings.price_collar,
        max_quantity=settings.max_order_quantity,
        quote_max_age=timedelta(seconds=settings.quote_max_age_seconds),
        clock=market_clock(settings),
    )
    store = OrderStore(
        pool, placement_batch=settings.placement_batch_max, placement_flushers=settings.placement_flushers
    )
    desk = OrderDesk(store, reference, policy, settings.shard_count, on_placed=relay.wake)
    service = Service(SERVICE_NAME, OrderServicer(desk, store), orders_pb2_grpc.add_OrderServiceServicer_to_server)
    running = await create_server(f"{settings.grpc_host}:{settings.grpc_port}", [service])
    return OrderServiceApp(settings, pool, link, relay, reference, running)


async def serve(settings: Settings) -> int:
    try:
        app = await start(settings)
    except Exception as error:
        log.critical("order service failed to start", error=repr(error))
        return 1
    try:
        return await serve_until_signalled(
            app.running,
            app.background(),
            readiness_delay=settings.shutdown_readiness_delay_seconds,
            grace=settings.shutdown_grace_seconds,
        )
    finally:
        await app.close()


def main() -> None:
    settings = load_settings()
    configure_logging(settings.log_level)
    serve_metrics(settings.metrics_port)
    sys.exit(asyncio.run(serve(settings)))
