"""Helpers for the loops every service runs beside its server (relay, reference prices, readiness)."""

from __future__ import annotations

import asyncio


def stop_requested() -> bool:
    """Whether the current task was cancelled, even if a library (or Python 3.11's asyncio.timeout meeting its own
    expiry) swallowed the CancelledError on the way. Loops check it so a shutdown always ends them."""
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0
