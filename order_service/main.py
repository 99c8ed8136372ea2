"""Wires and serves OrderService: `python -m order_service`. Settings come from BROKER_* variables."""

from __future__ import annotations

from collections.abc import Coroutine
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from psycopg_pool import AsyncConnectionPool

from brokerage.domain.placement import PlacementPolicy
from brokerage.messaging.connection import JetStreamLink, NatsAccess
from brokerage.messaging.doorbell import Doorbell
from brokerage.messaging.relay import OutboxRelay
from brokerage.messaging.streams import ensure_orders_stream
from brokerage.proto import orders_pb2_grpc
from brokerage.rpc.identity import IdentityBoundary, Kind, verifier_for
from brokerage.rpc.limits import limits_for
from brokerage.rpc.process import run_service
from brokerage.rpc.server import RunningServer, Service, create_server
from brokerage.rpc.tls import server_tls
from brokerage.settings import Settings, load_settings
from brokerage.storage.orders import OrderStore
from brokerage.storage.outbox import Outbox
from brokerage.storage.pool import open_pool, ping
from brokerage.storage.reference import ReferenceData
from brokerage.storage.shard_config import check_shard_count
from brokerage.telemetry import get_logger
from order_service.desk import OrderDesk
from order_service.servicer import POLICY, SERVICE_NAME, OrderServicer
from order_service.watch import OrderWatch

log = get_logger(__name__)


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
        await ping(self.pool)

    async def close(self) -> None:
        await self.link.close()
        await self.pool.close()


async def start(settings: Settings) -> OrderServiceApp:
    """Opens the dependencies and starts serving; the caller runs `background()` and closes the app."""
    verifier = verifier_for(settings, Kind.CUSTOMER)
    await verifier.load()
    pool = await open_pool(settings)
    await check_shard_count(pool, settings.shard_count)
    reference = ReferenceData(pool, settings.reference_refresh_seconds)
    await reference.refresh()
    link = JetStreamLink(
        NatsAccess.of(settings), "order-service", on_connected=lambda js: ensure_orders_stream(js, settings)
    )
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
        clock=settings.market_hours.clock(),
    )
    store = OrderStore(
        pool, placement_batch=settings.placement_batch_max, placement_flushers=settings.placement_flushers
    )
    doorbell = Doorbell(link)
    desk = OrderDesk(store, reference, policy, settings.shard_count, doorbell, on_placed=relay.wake)
    watch = OrderWatch(store, doorbell, settings.watch_poll_seconds, settings.watches_per_customer)
    service = Service(
        SERVICE_NAME, OrderServicer(desk, store, watch), orders_pb2_grpc.add_OrderServiceServicer_to_server
    )
    running = await create_server(
        f"{settings.grpc_host}:{settings.grpc_port}",
        [service],
        [IdentityBoundary(verifier, POLICY)],
        limits_for(settings),
        reflection=settings.grpc_reflection,
        tls=server_tls(settings),
    )
    return OrderServiceApp(settings, pool, link, relay, reference, running)


def main() -> None:
    run_service("order service", start, load_settings())
