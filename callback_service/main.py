"""Wires and serves CallbackService: `python -m callback_service`, and relays the post-trade feed (every booked fill
onto the EXECUTIONS stream). Settings come from BROKER_* variables; BROKER_CALLBACK_TOKEN, the secret the exchange
presents, is required."""

from __future__ import annotations

from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any

from psycopg_pool import AsyncConnectionPool

from brokerage.messaging.connection import JetStreamLink, NatsAccess
from brokerage.messaging.doorbell import Doorbell
from brokerage.messaging.relay import EXECUTION_FEED, OutboxRelay
from brokerage.messaging.streams import ensure_executions_stream
from brokerage.rpc.auth import RequireBearerToken
from brokerage.rpc.process import run_service
from brokerage.rpc.server import RunningServer, Service, create_service_server
from brokerage.settings import Settings, load_settings
from brokerage.storage.outbox import Outbox
from brokerage.storage.pool import open_pool, ping
from brokerage.storage.settlements import SettlementStore
from brokerage.wire import REPORT_BATCH_MAX_BYTES
from callback_service.servicer import SERVICE_NAME, CallbackServicer, add_to_server


@dataclass
class CallbackApp:
    settings: Settings
    pool: AsyncConnectionPool
    link: JetStreamLink
    feed: OutboxRelay
    running: RunningServer

    def background(self) -> list[Coroutine[Any, Any, None]]:
        """Readiness follows PostgreSQL alone: without NATS, watchers only hear of settlements at their next poll, and
        the feed waits in PostgreSQL."""
        return [
            self.link.stay_connected(),
            self.feed.run(),
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
    link = JetStreamLink(
        NatsAccess.of(settings), "callback-service", on_connected=lambda js: ensure_executions_stream(js, settings)
    )
    feed = OutboxRelay(
        Outbox(pool, take="take_feed_batch"),
        link,
        batch_size=settings.relay_batch_size,
        poll_seconds=settings.relay_poll_seconds,
        publish_timeout=settings.publish_timeout_seconds,
        metrics=EXECUTION_FEED,
    )
    store = SettlementStore(pool, batch_max=settings.settlement_batch_max, flushers=settings.settlement_flushers)
    service = Service(SERVICE_NAME, CallbackServicer(store, Doorbell(link), feed.wake), add_to_server)
    running = await create_service_server(
        settings, [service], [RequireBearerToken(tokens, [SERVICE_NAME])], max_receive_bytes=REPORT_BATCH_MAX_BYTES
    )
    return CallbackApp(settings, pool, link, feed, running)


def main() -> None:
    run_service("callback service", start, load_settings())
