"""What the record says about orders on their way to settlement: placed-to-settled latency (the order's terminal
event's occurred_at minus its created_at), settlements per second, and the orders not yet ended.

An order ends with one terminal event: `filled` (CallbackService booked its last fill and released what was left),
`canceled` or `rejected` (by the exchange, or by OrderService at placement, in the placement transaction). Both
times are now() of their transactions, i.e. when each began. Windows are wall-clock times (benchmarks.submissions).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import psycopg

from benchmarks.stats import percentile
from benchmarks.submissions import Window

OPEN_STATUSES = ("PLACED", "SUBMITTED", "PARTIALLY_FILLED")  # not yet ended: the settlement backlog
TERMINAL_EVENTS = ("filled", "canceled", "rejected")

# The targets. An offered rate is kept up when every PlaceOrder call in the window answered PLACED, the orders ended
# in the window reached KEPT_UP of those offered, and the backlog grew by at most BACKLOG_GROWTH of them. The floor:
# FLOOR_PER_SECOND kept up for SUSTAINED_SECONDS, with a p99 placed-to-settled within P99_LIMIT_MS at LATENCY_RATE;
# the goal: GOAL_PER_SECOND kept up as long.
KEPT_UP = 0.95
BACKLOG_GROWTH = 0.02
P99_LIMIT_MS = 250.0
LATENCY_RATE = 300.0
FLOOR_PER_SECOND = 400.0
GOAL_PER_SECOND = 600.0
SUSTAINED_SECONDS = 60.0

_PLACED_TO_SETTLED = """
SELECT o.status, extract(epoch FROM e.occurred_at - o.created_at) * 1000
  FROM orders o JOIN order_events e ON e.order_id = o.order_id AND e.event_type IN ('filled', 'canceled', 'rejected')
 WHERE o.created_at >= to_timestamp(%(opens)s) AND o.created_at < to_timestamp(%(closes)s)
"""
_PLACED_BY_STATUS = """
SELECT status, count(*) FROM orders
 WHERE created_at >= to_timestamp(%(opens)s) AND created_at < to_timestamp(%(closes)s)
 GROUP BY status ORDER BY status
"""
_ENDED_PER_SECOND = """
SELECT floor(extract(epoch FROM occurred_at) - %(opens)s)::int AS second, event_type, count(*)
  FROM order_events
 WHERE event_type IN ('filled', 'canceled', 'rejected')
   AND occurred_at >= to_timestamp(%(opens)s) AND occurred_at < to_timestamp(%(closes)s)
 GROUP BY 1, 2
"""
_BREAKS = "SELECT kind, count(*) FROM breaks GROUP BY kind ORDER BY kind"


@dataclass
class SettlementLatency:
    """Placed-to-settled latency (ms) of the orders placed in a window, over those that have ended."""

    placed_by_status: dict[str, int]  # every order created in the window, by its status now
    ended: int  # of those, orders with a terminal event
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float

    @property
    def placed(self) -> int:
        return sum(self.placed_by_status.values())

    @property
    def not_filled(self) -> dict[str, int]:
        """Orders of the window that did not end FILLED (still open, rejected, canceled), by status."""
        return {status: n for status, n in self.placed_by_status.items() if status != "FILLED"}

    def as_json(self) -> dict[str, Any]:
        return {
            "placed_by_status": self.placed_by_status,
            "placed": self.placed,
            "ended": self.ended,
            "p50_ms": self.p50_ms,
            "p90_ms": self.p90_ms,
            "p99_ms": self.p99_ms,
            "max_ms": self.max_ms,
        }


@dataclass
class Ended:
    """The terminal events recorded inside a window, whenever their orders were placed."""

    by_event: dict[str, int]  # filled, canceled, rejected
    per_second: list[int]  # all kinds, in each whole second of the window

    @property
    def total(self) -> int:
        return sum(self.by_event.values())

    def as_json(self) -> dict[str, Any]:
        return {"by_event": self.by_event, "total": self.total, "per_second": self.per_second}


def settlement_latency(database_url: str, window: Window) -> SettlementLatency:
    """Placed-to-settled latency of the orders created in the window (ask once they have all ended)."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        rows = conn.execute(_PLACED_TO_SETTLED, window.params()).fetchall()
        by_status = {str(s): int(n) for s, n in conn.execute(_PLACED_BY_STATUS, window.params()).fetchall()}
    latencies = [float(ms) for _, ms in rows]
    return SettlementLatency(
        placed_by_status=by_status,
        ended=len(latencies),
        p50_ms=percentile(latencies, 0.50),
        p90_ms=percentile(latencies, 0.90),
        p99_ms=percentile(latencies, 0.99),
        max_ms=max(latencies, default=math.nan),
    )


def ended_between(database_url: str, window: Window) -> Ended:
    """Terminal events inside the window, by kind and per whole second (a partial last second is left out)."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        rows = conn.execute(_ENDED_PER_SECOND, window.params()).fetchall()
    by_event = {event: 0 for event in TERMINAL_EVENTS}
    per_second = [0] * max(1, int(window.seconds))
    for second, event, n in rows:
        by_event[str(event)] += int(n)
        if 0 <= int(second) < len(per_second):
            per_second[int(second)] += int(n)
    return Ended(by_event, per_second)


def breaks_by_kind(database_url: str) -> dict[str, int]:
    """Reports settlement kept as breaks (impossible: never applied), by kind."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        return {str(kind): int(n) for kind, n in conn.execute(_BREAKS).fetchall()}
