"""What every call crosses on its way in: timing and counting (the metric names dashboards expect), requests checked
before a servicer sees them (brokerage.rpc.requests), domain errors turned into status codes, and unexpected errors
logged and hidden behind INTERNAL."""

from __future__ import annotations

import inspect
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from contextlib import aclosing
from typing import Any

import grpc
from grpc import aio
from prometheus_client import Counter, Histogram

from brokerage.domain.errors import DomainError, LimitReached
from brokerage.rpc.errors import to_status
from brokerage.rpc.limits import LIMITED, UNAUTHENTICATED_STREAMS, Places, ServerLimits
from brokerage.rpc.requests import Malformed, checked
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
    def __init__(self, limits: ServerLimits) -> None:
        self._places = limits.places()
        self._max_bytes = limits.max_receive_bytes
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
        key = (details.method, handler)  # type: ignore[attr-defined]
        wrapped = self._wrapped.get(key)
        if wrapped is None:
            wrapped = self._wrapped[key] = _wrap(handler, details.method, self._places, self._max_bytes)  # type: ignore[attr-defined]
        return wrapped


def _wrap(handler: grpc.RpcMethodHandler, full_method: str, places: Places, max_bytes: int) -> grpc.RpcMethodHandler:
    service, _, method = full_method.lstrip("/").partition("/")
    streams = "unauthenticated_streams" if full_method in UNAUTHENTICATED_STREAMS else "streams"
    if handler.unary_unary:
        return grpc.unary_unary_rpc_method_handler(
            _unary(handler.unary_unary, ("unary", service, method), places),
            request_deserializer=checked(handler.request_deserializer, max_bytes),
            response_serializer=handler.response_serializer,
        )
    if handler.unary_stream:
        return grpc.unary_stream_rpc_method_handler(
            _server_stream(handler.unary_stream, ("server_stream", service, method), places, streams),
            request_deserializer=checked(handler.request_deserializer, max_bytes),
            response_serializer=handler.response_serializer,
        )
    if handler.stream_stream:
        return grpc.stream_stream_rpc_method_handler(
            _server_stream(handler.stream_stream, ("bidi_stream", service, method), places, streams),
            request_deserializer=checked(handler.request_deserializer, max_bytes),
            response_serializer=handler.response_serializer,
        )
    return handler  # client streams: none are served


def _unary(
    behavior: Callable[..., Awaitable[Any]], labels: tuple[str, str, str], places: Places
) -> Callable[..., Awaitable[Any]]:
    meter = _Meter(labels)

    async def call(request: Any, context: aio.ServicerContext) -> Any:
        started = meter.start()
        try:
            with log_context(rpc=labels[2]), places.holding("unary_calls"):
                if isinstance(request, Malformed):
                    raise request.error
                return await behavior(request, context)
        except (aio.AbortError, grpc.RpcError):
            raise
        except Exception as error:
            await _abort(context, error, labels[2])
        finally:
            meter.finish(context, started)

    return call


def _server_stream(
    behavior: Callable[..., AsyncGenerator[Any, None]], labels: tuple[str, str, str], places: Places, kind: str
) -> Callable[..., AsyncIterator[Any]]:
    meter = _Meter(labels)

    async def call(request: Any, context: aio.ServicerContext) -> AsyncIterator[Any]:
        started = meter.start()
        try:
            with log_context(rpc=labels[2]), places.holding(kind):
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
            await _abort(context, error, labels[2])
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
