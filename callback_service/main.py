"""Wires and serves CallbackService: `python -m callback_service`. Settings come from BROKER_* variables;
BROKER_CALLBACK_TOKEN, the secret the exchange presents, is required."""

from __future__ import annotations

from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any

from psycopg_pool import AsyncConnectionPool

from brokerage.messaging.connection import JetStreamLink, NatsAccess
from brokerage.messaging.doorbell import Doorbell
from brokerage.rpc.auth import RequireBearerToken
from brokerage.rpc.limits import limits_for
from brokerage.rpc.process import run_service
from brokerage.rpc.server import RunningServer, Service, create_server
from brokerage.rpc.tls import server_tls
from brokerage.settings import Settings, load_settings
from brokerage.storage.pool import open_pool, ping
from brokerage.storage.settlements import SettlementStore
from brokerage.wire import REPORT_BATCH_MAX_BYTES
from callback_service.servicer import SERVICE_NAME, CallbackServicer, add_to_server


@dataclass
class CallbackApp:
    settings: Settings
    pool: AsyncConnectionPool
    link: JetStreamLink
    running: RunningServer

    def background(self) -> list[Coroutine[Any, Any, None]]:
        """Readiness follows PostgreSQL alone: without NATS, watchers only hear of settlements at their next poll."""
        return [
            self.link.stay_connected(),
            self.running.health.follow([self.ping_database], interval=self.settings.readiness_interval_seconds),
        ]

    async def ping_database(self) -> None:
        await ping(self.pool)

    async def close(self) -> None:
        await self.link.close()
        await self.pool.close()


async def start(settings: Settings) -> CallbackApp:
    """Opens the dependencies and starts serving; the caller runs `background()` and closes the app."""
    token = settings.callback_token.get_secret_value()
    if not token:
        raise ValueError("BROKER_CALLBACK_TOKEN is required: without it anyone could report executions")
    tokens = [token, settings.callback_token_previous.get_secret_value()]  # the second during a rotation
    pool = await open_pool(settings)
    link = JetStreamLink(NatsAccess.of(settings), "callback-service")
    store = SettlementStore(pool, batch_max=settings.settlement_batch_max, flushers=settings.settlement_flushers)
    service = Service(SERVICE_NAME, CallbackServicer(store, Doorbell(link)), add_to_server)
    running = await create_server(
        f"{settings.grpc_host}:{settings.grpc_port}",
        [service],
        [RequireBearerToken(tokens, [SERVICE_NAME])],
        limits_for(settings, max_receive_bytes=REPORT_BATCH_MAX_BYTES),
        reflection=settings.grpc_reflection,
        tls=server_tls(settings),
    )
    return CallbackApp(settings, pool, link, running)


def main() -> None:
    run_service("callback service", start, load_settings())
