"""The life of a service process, the same for every service: logs and metrics up, the app started, served
beside its background work until SIGTERM or SIGINT, then stopped gracefully and closed."""

from __future__ import annotations

import asyncio
import gc
import sys
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, NoReturn, Protocol, TypeVar

from brokerage.rpc.server import RunningServer, serve_until_signalled
from brokerage.telemetry import configure_logging, get_logger, serve_metrics

log = get_logger(__name__)


class ProcessSettings(Protocol):
    @property
    def log_level(self) -> str: ...
    @property
    def metrics_port(self) -> int: ...
    @property
    def shutdown_readiness_delay_seconds(self) -> float: ...
    @property
    def shutdown_grace_seconds(self) -> float: ...


class ServiceApp(Protocol):
    @property
    def running(self) -> RunningServer: ...
    def background(self) -> list[Coroutine[Any, Any, None]]: ...
    async def close(self) -> None: ...


S = TypeVar("S", bound=ProcessSettings)

# Objects a service allocates almost all die by reference counting; the cyclic collector, run every 700 net
# allocations by default, mostly walked the start-up heap (modules, descriptors, the gRPC and NATS clients), and
# under load promoted the objects of requests in flight until full collections ran every few seconds. Measured in
# the settlement benchmark at 300 orders/s (CPU time inside the collector): OrderService spent a tenth of its CPU
# there, in full collections of about 80 ms each that stalled every call in flight; the exchange simulator a
# twentieth. With the start-up heap frozen and the higher threshold, a fiftieth and a hundredth, at the same memory.
GC_THRESHOLDS = (20_000, 10, 10)


def run_service(name: str, start: Callable[[S], Awaitable[ServiceApp]], settings: S) -> NoReturn:
    """Runs the service to its end and exits with its status: 0 after a signal, 1 if it failed."""
    configure_logging(settings.log_level)
    serve_metrics(settings.metrics_port)
    sys.exit(asyncio.run(_serve(name, start, settings)))


async def _serve(name: str, start: Callable[[S], Awaitable[ServiceApp]], settings: S) -> int:
    try:
        app = await start(settings)
    except Exception as error:
        log.critical(f"{name} failed to start", error=repr(error))
        return 1
    _settle_heap()
    try:
        return await serve_until_signalled(
            app.running,
            app.background(),
            readiness_delay=settings.shutdown_readiness_delay_seconds,
            grace=settings.shutdown_grace_seconds,
        )
    finally:
        await app.close()


def _settle_heap() -> None:
    """Keeps what start-up built out of the cyclic collector's walks, and runs the collector less often."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)
