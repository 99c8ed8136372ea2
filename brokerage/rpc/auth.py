"""Who may call: a service that only one peer may reach (CallbackService: the exchange) takes a bearer secret
in the `authorization` metadata: the current one, or during a rotation the one it replaces. Anything else is
UNAUTHENTICATED before the servicer runs, so it changes nothing. Health and reflection stay open for probes and
grpcurl."""

from __future__ import annotations

import hmac
from collections.abc import AsyncIterator, Awaitable, Callable, Collection
from typing import Any

import grpc
from grpc import aio

from brokerage.telemetry import get_logger

log = get_logger(__name__)


class RequireBearerToken(aio.ServerInterceptor):
    def __init__(self, tokens: Collection[str], services: Collection[str]) -> None:
        if not any(tokens):
            raise ValueError("a bearer token is required")
        self._expected = [f"Bearer {token}".encode() for token in tokens if token]
        self._services = frozenset(services)

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        method: str = details.method  # type: ignore[attr-defined]
        service = method.lstrip("/").partition("/")[0]
        handler = await continuation(details)
        if handler is None or service not in self._services or self._authorized(details):
            return handler
        log.warning("unauthenticated call refused", rpc=method)
        if handler.stream_stream:
            return grpc.stream_stream_rpc_method_handler(_refuse_stream)
        return grpc.unary_unary_rpc_method_handler(_refuse)

    def _authorized(self, details: grpc.HandlerCallDetails) -> bool:
        metadata = dict(details.invocation_metadata or ())  # type: ignore[attr-defined]
        presented = metadata.get("authorization", "")
        presented = presented.encode() if isinstance(presented, str) else presented
        # Constant time, and every token compared: no guessing by timing.
        return sum(hmac.compare_digest(presented, expected) for expected in self._expected) > 0


async def _refuse(request: Any, context: aio.ServicerContext) -> None:
    await context.abort(grpc.StatusCode.UNAUTHENTICATED, "a valid bearer token is required")


async def _refuse_stream(requests: AsyncIterator[Any], context: aio.ServicerContext) -> AsyncIterator[Any]:
    await context.abort(grpc.StatusCode.UNAUTHENTICATED, "a valid bearer token is required")
    yield  # never reached: a generator, as a streaming handler is
