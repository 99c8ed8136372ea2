"""Builds and runs a grpc.aio server the same way for every service: health, reflection, the call boundary,
metrics, and a graceful stop on SIGTERM (NOT_SERVING, wait for load balancers, drain, stop)."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any

from google.protobuf import descriptor_pool
from grpc import aio
from grpc_health.v1 import health_pb2_grpc
from grpc_reflection.v1alpha import reflection as grpc_reflection

from brokerage.rpc.boundary import CallBoundary
from brokerage.rpc.health import Health
from brokerage.rpc.limits import DEFAULT_LIMITS, ServerLimits
from brokerage.rpc.tls import ServerTls, server_credentials
from brokerage.telemetry import get_logger

log = get_logger(__name__)


@dataclass(frozen=True)
class Service:
    """A servicer and how to register it: `add_to_server` is the generated add_XServicer_to_server."""

    name: str  # the full name, e.g. broker.v1.OrderService
    servicer: object
    add_to_server: Callable[[Any, aio.Server], None]


@dataclass
class RunningServer:
    server: aio.Server
    port: int
    health: Health
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    probe: aio.Server | None = None  # health alone, in plaintext, for kubelet (when the server itself is TLS)
    probe_port: int = 0


async def create_server(
    address: str,
    services: Sequence[Service],
    interceptors: Sequence[aio.ServerInterceptor] = (),
    limits: ServerLimits = DEFAULT_LIMITS,
    reflection: bool = True,
    tls: ServerTls | None = None,
) -> RunningServer:
    """Starts serving on address (port 0 picks a free one): for tests and for main alike. The call boundary
    (metrics, limits, peers, error mapping) is outermost, so it also counts calls the other interceptors refuse.
    With tls, only mutual TLS, admitting the peers its policy names, and health also in plaintext on a probe port."""
    server = aio.server(
        interceptors=[CallBoundary(limits, tls.peers if tls else None), *interceptors],
        options=[("grpc.so_reuseport", 0), *limits.channel_options()],
    )
    health = Health([s.name for s in services])
    for service in services:
        service.add_to_server(service.servicer, server)
    health_pb2_grpc.add_HealthServicer_to_server(health.servicer, server)
    if reflection:  # off where the contract is not to be browsed (brokerage.rpc.protoset serves grpcurl there)
        names = [s.name for s in services]
        grpc_reflection.enable_server_reflection(
            [*names, "grpc.health.v1.Health", grpc_reflection.SERVICE_NAME], server, pool=MethodResolvingPool()
        )
    if tls is None:
        port = server.add_insecure_port(address)
    else:
        port = server.add_secure_port(address, server_credentials(tls.files))
    if port == 0:
        raise OSError(f"cannot listen on {address}")
    running = RunningServer(server=server, port=port, health=health)
    if tls is not None and tls.probe_port:
        running.probe, running.probe_port = await _probe_server(address, tls.probe_port, health)
    await health.start()
    await server.start()
    return running


async def _probe_server(address: str, port: int, health: Health) -> tuple[aio.Server, int]:
    """grpc.health.v1 alone, in plaintext: kubelet's probes present no certificate, and learn nothing else here."""
    probe = aio.server(options=[("grpc.so_reuseport", 0)])
    health_pb2_grpc.add_HealthServicer_to_server(health.servicer, probe)
    host = address.rpartition(":")[0]
    bound = probe.add_insecure_port(f"{host}:{port}")
    if bound == 0:
        raise OSError(f"cannot listen on {host}:{port}")
    await probe.start()
    return probe, bound


class MethodResolvingPool:
    """The default descriptor pool, except that it also finds the file of an rpc method's full name, which
    the upb pool does not: without it `grpcurl describe broker.v1.OrderService.PlaceOrder` fails."""

    def __init__(self) -> None:
        self._pool = descriptor_pool.Default()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._pool, name)

    def FindFileContainingSymbol(self, symbol: str) -> Any:
        try:
            return self._pool.FindFileContainingSymbol(symbol)
        except KeyError:
            service, _, _method = symbol.rpartition(".")
            return self._pool.FindServiceByName(service).file  # KeyError again when it is no method either


async def stop_gracefully(running: RunningServer, *, readiness_delay: float, grace: float) -> None:
    """NOT_SERVING first, then a readiness period so load balancers stop routing here, then drain."""
    await running.health.shut_down()
    if readiness_delay:
        await asyncio.sleep(readiness_delay)
    await running.server.stop(grace)
    if running.probe is not None:
        await running.probe.stop(0)
    for task in running.tasks:
        task.cancel()
    if not running.tasks:
        return
    _done, stuck = await asyncio.wait(running.tasks, timeout=max(grace, 1.0))
    for task in stuck:  # a shutdown must end within its grace; name what would have held it up
        frames = [f"{f.f_code.co_filename}:{f.f_lineno} {f.f_code.co_name}" for f in task.get_stack()]
        log.error("background task ignored cancellation", task=task.get_name(), frames=frames)


async def serve_until_signalled(
    running: RunningServer,
    background: Sequence[Coroutine[Any, Any, None]],
    *,
    readiness_delay: float,
    grace: float,
) -> int:
    """Runs the background work beside the server until SIGTERM or SIGINT, or until background work fails;
    then stops gracefully. Returns the process exit code."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    failed: list[BaseException] = []

    def on_done(task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            failed.append(task.exception())  # type: ignore[arg-type]
            log.error("background task failed; shutting down", task=task.get_name(), error=repr(task.exception()))
            stop.set()

    for coroutine in background:
        task = asyncio.create_task(coroutine, name=getattr(coroutine, "__qualname__", None))
        task.add_done_callback(on_done)
        running.tasks.append(task)
    log.info("serving", port=running.port)
    await stop.wait()
    log.info("shutting down", readiness_delay=readiness_delay, grace=grace)
    await stop_gracefully(running, readiness_delay=readiness_delay, grace=grace)
    log.info("stopped")
    return 1 if failed else 0
