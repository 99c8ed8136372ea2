"""What the record says about orders on their way to the exchange: placed-to-submitted latency (the `submitted`
order event's occurred_at minus the order's created_at), submissions per second, and the backlog still PLACED.

The backlog is the orders in some statuses: by default those still PLACED (not yet at the exchange).

Windows are wall-clock times (seconds since the epoch): PostgreSQL and the benchmark share the machine's clock.
"""

from __future__ import annotations

import math
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg import sql

from benchmarks.stats import percentile

_PLACED_TO_SUBMITTED = """
SELECT o.shard, extract(epoch FROM e.occurred_at - o.created_at) * 1000
  FROM orders o JOIN order_events e ON e.order_id = o.order_id AND e.event_type = 'submitted'
 WHERE o.created_at >= to_timestamp(%(opens)s) AND o.created_at < to_timestamp(%(closes)s)
"""
_PLACED_BY_STATUS = """
SELECT status, count(*) FROM orders
 WHERE created_at >= to_timestamp(%(opens)s) AND created_at < to_timestamp(%(closes)s)
 GROUP BY status ORDER BY status
"""
_SUBMITTED_BETWEEN = """
SELECT count(*) FROM order_events
 WHERE event_type = 'submitted' AND occurred_at >= to_timestamp(%(opens)s) AND occurred_at < to_timestamp(%(closes)s)
"""
_BACKLOG = "SELECT count(*) FROM orders WHERE status IN ({statuses})"
_BACKLOG_AND_TOTAL = "SELECT count(*) FILTER (WHERE status IN ({statuses})), count(*) FROM orders"
_BY_STATUS = "SELECT status, count(*) FROM orders GROUP BY status ORDER BY status"
DRAIN_POLL_SECONDS = 0.2
QUIET_SECONDS = 2.0  # no order created for this long: OrderService has nothing left to place
PLACED_ONLY = ("PLACED",)  # the backlog on the way to the exchange; settlement's is every status not yet terminal


@dataclass(frozen=True)
class Window:
    """[opens, closes) in wall-clock seconds."""

    opens: float
    closes: float

    @property
    def seconds(self) -> float:
        return self.closes - self.opens

    def params(self) -> dict[str, float]:
        return {"opens": self.opens, "closes": self.closes}


@dataclass
class SubmissionLatency:
    """Placed-to-submitted latency (ms) of the orders placed in a window: overall, and per shard."""

    placed_by_status: dict[str, int]  # every order created in the window, by its status now
    submitted: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    per_shard: dict[int, dict[str, float]] = field(default_factory=dict)  # count, p50_ms, p99_ms

    @property
    def placed(self) -> int:
        return sum(self.placed_by_status.values())

    @property
    def not_submitted(self) -> dict[str, int]:
        """Orders of the window that are not SUBMITTED (still PLACED, rejected, ...), by status."""
        return {status: n for status, n in self.placed_by_status.items() if status != "SUBMITTED"}

    @property
    def slowest_shard_p99_ms(self) -> float:
        return max((s["p99_ms"] for s in self.per_shard.values()), default=math.nan)

    @property
    def fastest_shard_p99_ms(self) -> float:
        return min((s["p99_ms"] for s in self.per_shard.values()), default=math.nan)

    def as_json(self) -> dict[str, Any]:
        return {
            "placed_by_status": self.placed_by_status,
            "placed": self.placed,
            "submitted": self.submitted,
            "p50_ms": self.p50_ms,
            "p90_ms": self.p90_ms,
            "p99_ms": self.p99_ms,
            "max_ms": self.max_ms,
            "per_shard": {str(k): v for k, v in sorted(self.per_shard.items())},
        }


def submission_latency(database_url: str, window: Window) -> SubmissionLatency:
    """Placed-to-submitted latency of the orders created in the window (ask once they have all left PLACED)."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        rows = conn.execute(_PLACED_TO_SUBMITTED, window.params()).fetchall()
        by_status = {str(s): int(n) for s, n in conn.execute(_PLACED_BY_STATUS, window.params()).fetchall()}
    latencies = [float(ms) for _, ms in rows]
    by_shard: dict[int, list[float]] = defaultdict(list)
    for shard, ms in rows:
        by_shard[int(shard)].append(float(ms))
    return SubmissionLatency(
        placed_by_status=by_status,
        submitted=len(latencies),
        p50_ms=percentile(latencies, 0.50),
        p90_ms=percentile(latencies, 0.90),
        p99_ms=percentile(latencies, 0.99),
        max_ms=max(latencies, default=math.nan),
        per_shard={
            shard: {"count": len(values), "p50_ms": percentile(values, 0.50), "p99_ms": percentile(values, 0.99)}
            for shard, values in by_shard.items()
        },
    )


def submitted_between(database_url: str, window: Window) -> int:
    """How many orders were recorded SUBMITTED inside the window, whenever they were placed."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        row = conn.execute(_SUBMITTED_BETWEEN, window.params()).fetchone()
    return int(row[0]) if row else 0


def backlog(database_url: str, statuses: Sequence[str] = PLACED_ONLY) -> int:
    """Orders in these statuses: by default still PLACED, not yet acknowledged by the exchange."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        row = conn.execute(_with_statuses(_BACKLOG, statuses)).fetchone()
    return int(row[0]) if row else 0


def _with_statuses(query: str, statuses: Sequence[str]) -> sql.Composed:
    """The query with its status list as literals, so PostgreSQL can use the partial indexes of open orders."""
    return sql.SQL(query).format(statuses=sql.SQL(", ").join(map(sql.Literal, statuses)))


def orders_by_status(database_url: str) -> dict[str, int]:
    with psycopg.connect(database_url, autocommit=True) as conn:
        return {str(s): int(n) for s, n in conn.execute(_BY_STATUS).fetchall()}


def watch_backlog(
    database_url: str, until: float, every: float = 0.5, statuses: Sequence[str] = PLACED_ONLY
) -> list[int]:
    """The backlog every `every` seconds until `until` (time.monotonic())."""
    seen = []
    query = _with_statuses(_BACKLOG, statuses)
    with psycopg.connect(database_url, autocommit=True) as conn:
        while time.monotonic() < until:
            row = conn.execute(query).fetchone()
            seen.append(int(row[0]) if row else 0)
            time.sleep(max(0.0, min(every, until - time.monotonic())))
    return seen


def wait_for_drain(
    database_url: str, since: float, timeout: float, statuses: Sequence[str] = PLACED_ONLY
) -> float | None:
    """Seconds from `since` (time.monotonic()) until no order is in `statuses` (by default PLACED) and none has been
    created for QUIET_SECONDS (OrderService may still be placing the orders of callers that gave up), polled every
    DRAIN_POLL_SECONDS; None if that has not happened `timeout` seconds after `since`."""
    deadline = since + timeout
    with psycopg.connect(database_url, autocommit=True) as conn:
        created, changed_at = -1, since
        empty_at: float | None = None
        while True:
            now = time.monotonic()
            placed, total = _backlog_and_total(conn, statuses)
            if total != created:
                created, changed_at = total, now
            empty_at = None if placed else now if empty_at is None else empty_at
            if empty_at is not None and now - changed_at >= QUIET_SECONDS:
                return max(empty_at, changed_at) - since
            if now > deadline:
                return None
            time.sleep(DRAIN_POLL_SECONDS)


def orders_created(database_url: str) -> int:
    """Every order in the record, whatever its status."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        return _backlog_and_total(conn)[1]


def _backlog_and_total(conn: psycopg.Connection[Any], statuses: Sequence[str] = PLACED_ONLY) -> tuple[int, int]:
    row = conn.execute(_with_statuses(_BACKLOG_AND_TOTAL, statuses)).fetchone()
    return (int(row[0]), int(row[1])) if row else (0, 0)
