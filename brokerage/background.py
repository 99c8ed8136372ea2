"""Helpers for the loops every service runs beside its server (relay, workers, deliveries, readiness)."""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass


def stop_requested() -> bool:
    """Whether the current task was cancelled, even if a library (or Python 3.11's asyncio.timeout meeting its own
    expiry) swallowed the CancelledError on the way. Loops check it so a shutdown always ends them."""
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


@dataclass(frozen=True)
class Backoff:
    """Exponential backoff: attempt 1 waits about `initial`, each next one about twice as long, never more than
    `maximum`; each wait is drawn from its upper half ("equal jitter"), so what failed together does not retry
    together."""

    initial: float
    maximum: float

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        ceiling = min(self.maximum, self.initial * 2 ** min(max(attempt - 1, 0), 32))
        return (rng or random).uniform(ceiling / 2, ceiling)
