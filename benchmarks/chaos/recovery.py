"""What an isolated fault cost, from what the load and the settlement sampler saw, without I/O.

PlaceOrder's unavailability: from the injection until the answer of the last PlaceOrder attempt that failed
(an RPC error, or a REJECTED for want of a fresh quote) among those sent inside the fault's window; 0 when none
failed. Its error rate: the failed share of the attempts sent meanwhile. Settlement's pause: the longest stretch
inside the window in which the count of booked executions did not grow (the load keeps orders coming, so it
grows every moment settlement works).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from benchmarks.chaos.faults import Injected
from benchmarks.chaos.load import Attempt
from benchmarks.chaos.plan import Action

FAILED = frozenset({"UNAVAILABLE", "DEADLINE_EXCEEDED", "UNPRICED", "INTERNAL", "UNKNOWN", "RESOURCE_EXHAUSTED"})


@dataclass(frozen=True)
class Recovery:
    kind: str
    target: str
    lasted: float  # seconds from injection to healed (the process back, the node back, the standby synchronous)
    place_unavailable: float  # seconds
    place_error_rate: float  # 0..1
    place_attempts: int
    settlement_paused: float  # seconds


def recovery(
    fault: Injected, window_end: float, attempts: Sequence[Attempt], samples: Sequence[tuple[float, int | None]]
) -> Recovery:
    start = fault.injected_at
    places = [a for a in attempts if a.action is not Action.CANCEL and start <= a.sent < window_end]
    failed = [a for a in places if a.outcome in FAILED]
    unavailable = max((a.answered for a in failed), default=start) - start
    during = [a for a in places if a.sent <= start + unavailable] if failed else []
    rate = len([a for a in during if a.outcome in FAILED]) / len(during) if during else 0.0
    return Recovery(
        kind=str(fault.kind),
        target=fault.target,
        lasted=round(fault.healed_at - start, 3),
        place_unavailable=round(unavailable, 3),
        place_error_rate=round(rate, 3),
        place_attempts=len(places),
        settlement_paused=round(longest_pause(samples, start, window_end), 3),
    )


def longest_pause(samples: Sequence[tuple[float, int | None]], start: float, end: float) -> float:
    """The longest time between two growths of the count, within [start, end] (a None sample is no growth)."""
    longest, last_growth, last_count = 0.0, start, None
    for moment, count in samples:
        if moment < start:
            last_count = count if count is not None else last_count
            continue
        if moment > end:
            break
        if count is not None and last_count is not None and count > last_count:
            longest = max(longest, moment - last_growth)
            last_growth = moment
        if count is not None:
            last_count = count
    return max(longest, min(end, samples[-1][0] if samples else end) - last_growth)
