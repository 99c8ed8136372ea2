"""Execution reports booked exactly once (rule 7), in apply_execution_reports(): reports that arrive at the same
moment share one transaction (group commit), taken customer by customer in the database.

The reports are split by order among `flushers` lanes, each with one transaction in flight: an order's reports
(its acknowledgement and its fills come within milliseconds of each other) never sit in two transactions at once,
where the second would wait on the first's locks until it commits and the lanes would run one after the other.
A report whose customer another transaction holds (the worker recording the same order SUBMITTED, say) is left out
of its lane's transaction, which books the others and commits without waiting (migration 0010), and is booked
again by the lane for busy customers, whose transactions wait for the lock.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from functools import partial
from typing import Any

from psycopg_pool import AsyncConnectionPool

from brokerage.domain.executions import ExecutionReport, Settled, SettlementOutcome
from brokerage.storage.batching import MicroBatcher, again_if_busy, isolating_refusals
from brokerage.storage.queries import fetch_all

_BUSY = "busy"  # the outcome of a report left out because another transaction held its customer


class SettlementStore:
    def __init__(self, pool: AsyncConnectionPool, *, batch_max: int, flushers: int) -> None:
        self._pool = pool
        self._lanes = [self._lane_of(batch_max, wait=False) for _ in range(flushers)]
        self._busy_lane = self._lane_of(batch_max, wait=True)

    def _lane_of(self, batch_max: int, *, wait: bool) -> MicroBatcher[ExecutionReport, Settled | None]:
        return MicroBatcher(
            isolating_refusals(partial(self._apply_batch, wait=wait)), max_batch=batch_max, max_in_flight=1
        )

    async def apply(self, reports: Sequence[ExecutionReport]) -> list[Settled]:
        """Books each report once, whatever its order's status, and returns their outcomes in order; a duplicate or
        an impossible report changes no balance (the latter is kept as a break). The reports share transactions
        with each other and with other calls' reports. Raises Unavailable while the database cannot answer."""
        first = (self._lane(report.order_id).enqueue(report) for report in reports)
        return await again_if_busy("apply_execution_reports", reports, first, self._busy_lane)

    def _lane(self, order_id: str) -> MicroBatcher[ExecutionReport, Settled | None]:
        return self._lanes[zlib.crc32(order_id.encode()) % len(self._lanes)]

    async def _apply_batch(
        self, batch: Sequence[ExecutionReport], *, wait: bool
    ) -> list[Settled | BaseException | None]:
        """Each report's outcome, or None for a report whose customer was busy (and which was not applied)."""
        rows = await fetch_all(self._pool, "apply_execution_reports", {**_report_arrays(batch), "wait": wait})
        results: list[Settled | BaseException | None] = [AssertionError("no outcome")] * len(batch)
        for row in rows:
            busy = row["outcome"] == _BUSY
            results[row["ordinal"] - 1] = (
                None if busy else Settled(SettlementOutcome(row["outcome"]), row["customer_id"], row["events_through"])
            )
        return results


def _report_arrays(batch: Sequence[ExecutionReport]) -> dict[str, list[Any]]:
    """The batch as one array per field, the shape apply_execution_reports() takes."""
    return {
        "exec_id": [r.exec_id for r in batch],
        "order_id": [r.order_id for r in batch],
        "venue_order_id": [r.venue_order_id for r in batch],
        "exec_type": [r.exec_type.value for r in batch],
        "last_quantity": [r.last_quantity for r in batch],
        "last_price": [r.last_price for r in batch],
        "cumulative_quantity": [r.cumulative_quantity for r in batch],
        "reason": [r.reason for r in batch],
        "transact_time": [r.transact_time for r in batch],
        "symbol": [r.symbol for r in batch],
        "side": [r.side.value for r in batch],
        "order_quantity": [r.order_quantity for r in batch],
    }
