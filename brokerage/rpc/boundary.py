"""What every call crosses on its way in: timing and counting (the metric names dashboards expect), requests checked
before a servicer sees them (brokerage.rpc.requests), domain errors turned into status codes, and unexpected errors
logged and hidden behind INTERNAL."""

from __future__ import annotations

import inspect
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Iterator
from contextlib import aclosing, contextmanager
from dataclasses import dataclass
from typing import Any

import grpc
from grpc import aio
from prometheus_client import Counter, Histogram

from brokerage.domain.errors import DomainError, LimitReached
from brokerage.rpc.errors import to_status
from brokerage.rpc.limits import LIMITED, UNAUTHENTICATED_STREAMS, Places, ServerLimits
from brokerage.rpc.requests import Malformed, checked
from brokerage.rpc.tls import PeerPolicy
from brokerage.telemetry import get_logger, log_context

log = get_logger(__name__)

LABELS = ("grpc_type", "grpc_service", "grpc_method")
STARTED = Counter("grpc_server_started_total", "RPCs started on the server.", LABELS)
HANDLED = Counter("grpc_server_handled_total", "RPCs completed on the server.", (*LABELS, "grpc_code"))
HANDLING_SECONDS = Histogram(
    "grpc_server_handling_seconds",
    "Time to handle an RPC on the server.",
    LABELS,
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)


class CallBoundary(aio.ServerInterceptor):
    def __init__(self, limits: ServerLimits, peers: PeerPolicy | None = None) -> None:
        self._gate = _Gate(limits.places(), limits.max_receive_bytes, peers)
        # A method's handler wrapped once, not on every call: handlers are equal by value (a refusal built anew
        # for each call included), so this holds one entry per method and kind of handler.
        self._wrapped: dict[tuple[str, grpc.RpcMethodHandler], grpc.RpcMethodHandler] = {}

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(details)
        if handler is None:
            return handler
        method: str = details.method  # type: ignore[attr-defined]
        key = (method, handler)
        wrapped = self._wrapped.get(key)
        if wrapped is None:
            wrapped = self._wrapped[key] = _wrap(handler, _Method(method, self._gate))
        return wrapped


@dataclass(frozen=True)
class _Gate:
    """What a call must pass before its handler runs: a peer the policy admits (under TLS), a place among the
    server's calls of its kind, and a request within the size."""

    places: Places
    max_bytes: int
    peers: PeerPolicy | None


@dataclass(frozen=True)
class _Method:
    full_name: str  # /package.Service/Method
    gate: _Gate

    @property
    def labels(self) -> tuple[str, str]:
        service, _, method = self.full_name.lstrip("/").partition("/")
        return service, method

    @contextmanager
    def admitted(self, context: aio.ServicerContext, kind: str) -> Iterator[None]:
        if self.gate.peers is not None:
            self.gate.peers.admit(self.full_name, context)
        with log_context(rpc=self.labels[1]), self.gate.places.holding(kind):
            yield


def _wrap(handler: grpc.RpcMethodHandler, method: _Method) -> grpc.RpcMethodHandler:
    deserializer = checked(handler.request_deserializer, method.gate.max_bytes)
    streams = "unauthenticated_streams" if method.full_name in UNAUTHENTICATED_STREAMS else "streams"
    if handler.unary_unary:
        return grpc.unary_unary_rpc_method_handler(
            _unary(handler.unary_unary, method),
            request_deserializer=deserializer,
            response_serializer=handler.response_serializer,
        )
    if handler.unary_stream:
        return grpc.unary_stream_rpc_method_handler(
            _server_stream(handler.unary_stream, method, "server_stream", streams),
            request_deserializer=deserializer,
            response_serializer=handler.response_serializer,
        )
    if handler.stream_stream:
        return grpc.stream_stream_rpc_method_handler(
            _server_stream(handler.stream_stream, method, "bidi_stream", streams),
            request_deserializer=deserializer,
            response_serializer=handler.response_serializer,
        )
    return handler  # client streams: none are served


def _unary(behavior: Callable[..., Awaitable[Any]], method: _Method) -> Callable[..., Awaitable[Any]]:
    meter = _Meter(("unary", *method.labels))

    async def call(request: Any, context: aio.ServicerContext) -> Any:
        started = meter.start()
        try:
            with method.admitted(context, "unary_calls"):
                if isinstance(request, Malformed):
                    raise request.error
                return await behavior(request, context)
        except (aio.AbortError, grpc.RpcError):
            raise
        except Exception as error:
            await _abort(context, error, method.labels[1])
        finally:
            meter.finish(context, started)

    return call


def _server_stream(
    behavior: Callable[..., AsyncGenerator[Any, None]], method: _Method, grpc_type: str, kind: str
) -> Callable[..., AsyncIterator[Any]]:
    meter = _Meter((grpc_type, *method.labels))

    async def call(request: Any, context: aio.ServicerContext) -> AsyncIterator[Any]:
        started = meter.start()
        try:
            with method.admitted(context, kind):
                if isinstance(request, Malformed):
                    raise request.error
                responses = behavior(_well_formed(request), context)
                if inspect.isawaitable(responses):  # a handler that writes its answers (grpc's health Watch)
                    await responses
                    return
                async with aclosing(responses):  # closed also when the client goes
                    async for response in responses:
                        yield response
        except (aio.AbortError, grpc.RpcError):
            raise
        except Exception as error:
            await _abort(context, error, method.labels[1])
        finally:
            meter.finish(context, started)

    return call


def _well_formed(requests: Any) -> Any:
    """A stream's requests, ending the call with the first malformed one's error; a unary request as it is."""
    if not hasattr(requests, "__aiter__"):
        return requests

    async def each() -> AsyncIterator[Any]:
        async for request in requests:
            if isinstance(request, Malformed):
                raise request.error
            yield request

    return each()


async def _abort(context: aio.ServicerContext, error: Exception, method: str) -> None:
    """A domain error becomes its status code; anything else is logged and hidden behind INTERNAL."""
    if isinstance(error, LimitReached):
        LIMITED.labels(error.limit).inc()
    if isinstance(error, DomainError):
        await context.abort_with_status(to_status(error))
    log.exception("unhandled error", rpc=method)
    await context.abort(grpc.StatusCode.INTERNAL, "internal error")


class _Meter:
    """One method's metrics, their labelled series looked up once."""

    def __init__(self, labels: tuple[str, str, str]) -> None:
        self._labels = labels
        self._started = STARTED.labels(*labels)
        self._seconds = HANDLING_SECONDS.labels(*labels)

    def start(self) -> float:
        self._started.inc()
        return time.perf_counter()

    def finish(self, context: aio.ServicerContext, started: float) -> None:
        code = context.code() or grpc.StatusCode.OK
        name = code.name if isinstance(code, grpc.StatusCode) else str(code)
        HANDLED.labels(*self._labels, name).inc()
        self._seconds.observe(time.perf_counter() - started)
