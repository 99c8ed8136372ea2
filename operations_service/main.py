"""Wires and serves the operations service: `python -m operations_service`, broker.v1.OperationsService (repairs,
reconciliation) and broker.v1.RiskService (halts, account statuses, limits). Settings come from BROKER_* variables;
the operators' issuer (BROKER_OPERATOR_ISSUER, _AUDIENCE, _JWKS) is required."""

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
from brokerage.rpc.identity import IdentityBoundary, Kind, Policy, verifier_for
from brokerage.rpc.process import run_service
from brokerage.rpc.server import RunningServer, Service, create_service_server
from brokerage.rpc.tls import client_tls
from brokerage.settings import Settings, load_settings
from brokerage.storage.pool import open_pool, ping
from brokerage.storage.repairs import RepairStore
from brokerage.storage.risk import RiskStore
from brokerage.storage.settlements import SettlementStore
from operations_service.desk import RepairDesk
from operations_service.risk import RULES as RISK_RULES
from operations_service.risk import SERVICE_NAME as RISK_SERVICE
from operations_service.risk import FirmThreshold, RiskServicer
from operations_service.servicer import POLICY as REPAIR_POLICY
from operations_service.servicer import SERVICE_NAME, OperationsServicer

STUCK_AFTER = timedelta(minutes=5)
POLICY = Policy({**REPAIR_POLICY.rules, **RISK_RULES})


@dataclass
class OperationsApp:
    settings: Settings
    pool: AsyncConnectionPool
    exchange: ExchangeClient
    threshold: FirmThreshold
    running: RunningServer

    def background(self) -> list[Coroutine[Any, Any, None]]:
        """Readiness follows PostgreSQL; the firm's daily notional threshold is watched."""
        return [
            self.running.health.follow([self.ping_database], interval=self.settings.readiness_interval_seconds),
            self.threshold.watch(),
        ]

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
    risk = RiskStore(pool)
    services = [
        Service(SERVICE_NAME, servicer, operations_pb2_grpc.add_OperationsServiceServicer_to_server),
        Service(RISK_SERVICE, RiskServicer(risk), operations_pb2_grpc.add_RiskServiceServicer_to_server),
    ]
    running = await create_service_server(settings, services, [IdentityBoundary(verifier, POLICY)])
    threshold = FirmThreshold(risk, settings.firm_daily_buy_notional_threshold, settings.firm_threshold_check_seconds)
    return OperationsApp(settings, pool, exchange, threshold, running)


async def _reconcile(settings: Settings, exchange: ExchangeClient, day: date) -> list[CheckResult]:
    return await reconcile(settings.dsn, exchange, day, STUCK_AFTER)


def main() -> None:
    run_service("operations service", start, load_settings())
