"""grpc.health.v1 with two meanings: "" (liveness) is the process alone; "readiness" and each served
service name follow the dependencies, so a database failover makes pods unready, not restarted."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence

from grpc_health.v1 import health_pb2
from grpc_health.v1.health import aio as health_aio
from prometheus_client import Gauge

from brokerage.background import stop_requested
from brokerage.telemetry import get_logger

log = get_logger(__name__)

LIVENESS = ""
READINESS = "readiness"
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
READY = Gauge("service_ready", "1 while every dependency answers, else 0")

DependencyCheck = Callable[[], Awaitable[object]]


class Health:
    def __init__(self, service_names: Sequence[str]) -> None:
        self.servicer = health_aio.HealthServicer()
        self._readiness_names = (READINESS, *service_names)
        self._ready: bool | None = None

    async def start(self) -> None:
        await self.servicer.set(LIVENESS, SERVING)
        await self._set_ready(False)

    async def follow(self, checks: Sequence[DependencyCheck], *, interval: float = 2.0, timeout: float = 1.0) -> None:
        """Sets readiness from the dependency checks every interval, until cancelled."""
        while not stop_requested():
            await self._set_ready(await _all_pass(checks, timeout))
            await asyncio.sleep(interval)

    async def shut_down(self) -> None:
        """Everything NOT_SERVING, and no later change: load balancers stop sending new calls."""
        await self.servicer.enter_graceful_shutdown()

    async def _set_ready(self, ready: bool) -> None:
        if ready == self._ready:
            return
        if self._ready is not None:  # a loss of readiness is worth a warning; its return (as at every start) is not
            (log.info if ready else log.warning)("readiness changed", ready=ready)
        self._ready = ready
        READY.set(1 if ready else 0)
        for name in self._readiness_names:
            await self.servicer.set(name, SERVING if ready else NOT_SERVING)


async def _all_pass(checks: Sequence[DependencyCheck], timeout: float) -> bool:
    try:
        async with asyncio.timeout(timeout):
            await asyncio.gather(*(check() for check in checks))
    except Exception as error:
        log.debug("dependency check failed", error=repr(error))
        return False
    return True
