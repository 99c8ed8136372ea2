"""Bounds on what one server holds for its callers, so no client (careless or hostile) can take it from the others.

A request above the server's message size, a call past the server's unary or stream bound, a stream past the small
bound for unauthenticated streams (health Watch, reflection) or past a per-key bound (a customer's WatchOrders) is
refused with RESOURCE_EXHAUSTED and counted in `requests_limited_total{limit}`, apart from errors: a limit doing its
job is no failure to page anyone about. Connections are kept alive within bounds (pings no more often than the
server allows) and recycled at a maximum age, so a scaled-out Deployment rebalances behind an L4 load balancer.
"""

from __future__ import annotations

from collections import Counter as Tally
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

from prometheus_client import Counter

from brokerage.domain.errors import LimitReached
from brokerage.settings import Settings

LIMITED = Counter(
    "requests_limited_total", "Requests refused at a limit (RESOURCE_EXHAUSTED), apart from errors.", ["limit"]
)
CLIENT_FACING_MAX_RECEIVE_BYTES = 64 * 1024
# Streams a caller may open before it has proven anything: grpc.health.v1.Health/Watch and reflection.
UNAUTHENTICATED_STREAMS = frozenset(
    {
        "/grpc.health.v1.Health/Watch",
        "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
        "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
    }
)


@dataclass(frozen=True)
class ServerLimits:
    max_receive_bytes: int = CLIENT_FACING_MAX_RECEIVE_BYTES
    max_unary_calls: int = 2_000  # in progress at once
    max_streams: int = 2_000  # open at once
    max_unauthenticated_streams: int = 32
    max_connection_age_seconds: float = 600.0
    max_connection_age_grace_seconds: float = 30.0
    min_ping_interval_seconds: float = 10.0  # a client pinging more often is told too_many_pings and dropped

    def channel_options(self) -> Sequence[tuple[str, int]]:
        return [
            # gRPC's own bound only keeps what cannot be answered out of memory; the call boundary refuses (and
            # counts) requests past max_receive_bytes.
            ("grpc.max_receive_message_length", max(4 * self.max_receive_bytes, 1 << 20)),
            ("grpc.max_connection_age_ms", round(self.max_connection_age_seconds * 1000)),
            ("grpc.max_connection_age_grace_ms", round(self.max_connection_age_grace_seconds * 1000)),
            ("grpc.http2.min_ping_interval_without_data_ms", round(self.min_ping_interval_seconds * 1000)),
            ("grpc.http2.max_ping_strikes", 2),
            ("grpc.keepalive_permit_without_calls", 1),  # a client may keep an idle connection alive, within bounds
        ]

    def places(self) -> Places:
        return Places(
            {
                "unary_calls": self.max_unary_calls,
                "streams": self.max_streams,
                "unauthenticated_streams": self.max_unauthenticated_streams,
            }
        )


class Places:
    """Counted places per key, each key with its bound (one for all keys, or one per key); a place is taken at once
    or refused, never waited for (a waiting call would hold its connection and memory all the same). The limit's
    name is the one given, else the key."""

    def __init__(self, bounds: int | Mapping[str, int], limit: str = "", what: str = "") -> None:
        self._bounds = bounds
        self._limit = limit
        self._what = what
        self._held: Tally[str] = Tally()

    @contextmanager
    def holding(self, key: str) -> Iterator[None]:
        bound = self._bounds if isinstance(self._bounds, int) else self._bounds[key]
        if self._held[key] >= bound:
            what = self._what or key.replace("_", " ")
            raise LimitReached(self._limit or key, f"at most {bound:,} {what} at once")
        self._held[key] += 1
        try:
            yield
        finally:
            self._held[key] -= 1
            if not self._held[key]:
                del self._held[key]

    def held(self, key: str) -> int:
        return self._held[key]


DEFAULT_LIMITS = ServerLimits()


def limits_for(settings: Settings, max_receive_bytes: int = CLIENT_FACING_MAX_RECEIVE_BYTES) -> ServerLimits:
    """A service's bounds from its settings; max_receive_bytes above the client-facing 64 KiB only for an internal
    stream whose largest legal batch needs it."""
    return ServerLimits(
        max_receive_bytes=max_receive_bytes,
        max_unary_calls=settings.grpc_max_unary_calls,
        max_streams=settings.grpc_max_streams,
        max_unauthenticated_streams=settings.grpc_max_unauthenticated_streams,
        max_connection_age_seconds=settings.grpc_max_connection_age_seconds,
    )
