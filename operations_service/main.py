"""Wires and serves the operations service: `python -m operations_service`. Settings come from BROKER_* variables;
BROKER_OPERATOR_TOKEN, the secret operators present, is required."""

from __future__ import annotations

from collections.abc import Coroutine
from dataclasses import dataclass
from datetime import date, timedelta
from functools import partial
from typing import Any

from psycopg_pool import AsyncConnectionPool

from brokerage.exchange_client import ExchangeClient
from brokerage.proto import operations_pb2_grpc
from brokerage.reconcile import CheckResult, reconcile
from brokerage.rpc.identity import IdentityBoundary, Kind, verifier_for
from brokerage.rpc.limits import limits_for
from brokerage.rpc.process import run_service
from brokerage.rpc.server import RunningServer, Service, create_server
from brokerage.rpc.tls import client_tls, server_tls
from brokerage.settings import Settings, load_settings
from brokerage.storage.pool import open_pool, ping
from brokerage.storage.repairs import RepairStore
from brokerage.storage.settlements import SettlementStore
from operations_service.desk import RepairDesk
from operations_service.servicer import POLICY, SERVICE_NAME, OperationsServicer

STUCK_AFTER = timedelta(minutes=5)


@dataclass
class OperationsApp:
    settings: Settings
    pool: AsyncConnectionPool
    exchange: ExchangeClient
    running: RunningServer

    def background(self) -> list[Coroutine[Any, Any, None]]:
        """Readiness follows PostgreSQL."""
        return [self.running.health.follow([self.ping_database], interval=self.settings.readiness_interval_seconds)]

    async def ping_database(self) -> None:
        await ping(self.pool)

    async def close(self) -> None:
        await self.exchange.close()
        await self.pool.close()


async def start(settings: Settings) -> OperationsApp:
    """Opens the dependencies and starts serving; the caller runs `background()` and closes the app."""
    verifier = verifier_for(settings, Kind.OPERATOR)
    await verifier.load()
    pool = await open_pool(settings)
    exchange = ExchangeClient.connect(
        settings.exchange_target,
        settings.exchange_deadline_seconds,
        client_tls(settings, settings.exchange_tls_ca_file),
    )
    desk = RepairDesk(RepairStore(pool), SettlementStore(pool, batch_max=64, flushers=1), exchange)
    servicer = OperationsServicer(desk, partial(_reconcile, settings, exchange))
    service = Service(SERVICE_NAME, servicer, operations_pb2_grpc.add_OperationsServiceServicer_to_server)
    running = await create_server(
        f"{settings.grpc_host}:{settings.grpc_port}",
        [service],
        [IdentityBoundary(verifier, POLICY)],
        limits_for(settings),
        reflection=settings.grpc_reflection,
        tls=server_tls(settings),
    )
    return OperationsApp(settings, pool, exchange, running)


async def _reconcile(settings: Settings, exchange: ExchangeClient, day: date) -> list[CheckResult]:
    return await reconcile(settings.dsn, exchange, day, STUCK_AFTER)


def main() -> None:
    run_service("operations service", start, load_settings())
