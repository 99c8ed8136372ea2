"""Execution reports booked exactly once (rule 7), in apply_execution_reports(): reports that arrive at the same
moment share one transaction (group commit), taken customer by customer in the database.

The reports are split by order among `flushers` lanes, each with one transaction in flight: an order's reports
(its acknowledgement and its fills come within milliseconds of each other) never sit in two transactions at once,
where the second would wait on the first's locks until it commits and the lanes would run one after the other.
A report whose customer another transaction holds (the worker recording the same order SUBMITTED, say) is left out
of its lane's transaction, which books the others and commits without waiting (migration 0010), and is booked
again by the lane for busy customers, whose transactions wait for the lock.

Each report is booked or kept on its own: a malformed one (it could not be parsed, or failed the form checks) is
kept whole as a break, and so is one the database refuses (a data or constraint error, or a RAISE of our
functions: its transaction is run again without it), so neither can hold back the reports beside it nor come back
for ever. A failure that may pass (the connection lost, a standby, a serialization failure) is no report's fault:
it fails the call, unacknowledged, for the exchange to send again.
"""

from __future__ import annotations

import asyncio
import zlib
from collections.abc import Sequence
from functools import partial
from typing import Any

from psycopg_pool import AsyncConnectionPool

from brokerage.domain.executions import ExecutionReport, MalformedReport, Received, Settled, SettlementOutcome
from brokerage.storage.batching import BUSY_CALLS, MicroBatcher, isolating_refusals
from brokerage.storage.queries import fetch_all, refused

_BUSY = "busy"  # the outcome of a report left out because another transaction held its customer
Lane = MicroBatcher[ExecutionReport, Settled | None]


class SettlementStore:
    def __init__(self, pool: AsyncConnectionPool, *, batch_max: int, flushers: int) -> None:
        self._pool = pool
        self._lanes = [self._lane_of(batch_max, wait=False) for _ in range(flushers)]
        self._busy_lane = self._lane_of(batch_max, wait=True)

    def _lane_of(self, batch_max: int, *, wait: bool) -> Lane:
        return MicroBatcher(
            isolating_refusals(partial(self._apply_batch, wait=wait)), max_batch=batch_max, max_in_flight=1
        )

    async def apply(self, reports: Sequence[Received]) -> list[Settled]:
        """Books each report once, whatever its order's status, and returns their outcomes in order; a duplicate
        changes nothing, and a malformed, refused or impossible report is kept as a break (a real fill among the
        impossible ones booked to the error account). The reports share transactions with each other and with other
        calls' reports. Raises Unavailable (or the database's error) while the database cannot book them."""
        outcomes: list[Settled | None] = [None] * len(reports)
        wellformed = [(i, r) for i, r in enumerate(reports) if isinstance(r.parsed, ExecutionReport)]
        booked = await self._book([r.parsed for _, r in wellformed])  # type: ignore[misc]
        malformed = [(i, r.parsed) for i, r in enumerate(reports) if isinstance(r.parsed, MalformedReport)]
        for (i, _), outcome in zip(wellformed, booked, strict=True):
            if isinstance(outcome, BaseException):
                if not refused(outcome):
                    raise outcome
                malformed.append((i, _refused(reports[i], outcome)))
            else:
                outcomes[i] = outcome
        if malformed:
            kept = await self._keep([m for _, m in malformed])
            for (i, _), outcome in zip(malformed, kept, strict=True):
                outcomes[i] = outcome
        return [o for o in outcomes if o is not None]

    async def _book(self, reports: list[ExecutionReport]) -> list[Settled | BaseException]:
        """Each report's outcome, or the error the database refused it alone with. A report found busy in its lane is
        booked again by the busy lane, whose transactions wait for its customer."""
        results = await asyncio.gather(*(self._lane(r.order_id).enqueue(r) for r in reports), return_exceptions=True)
        if busy := [i for i, result in enumerate(results) if result is None]:
            BUSY_CALLS.labels("apply_execution_reports").inc(len(busy))
            again = await asyncio.gather(*(self._busy_lane.enqueue(reports[i]) for i in busy), return_exceptions=True)
            for i, result in zip(busy, again, strict=True):
                results[i] = result
        if any(result is None for result in results):
            raise AssertionError("a batch that waits for its customers found one busy")
        return results  # type: ignore[return-value]

    def _lane(self, order_id: str) -> Lane:
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

    async def _keep(self, malformed: Sequence[MalformedReport]) -> list[Settled]:
        """Keeps each as a break of its own (once, by its key), moving nothing."""
        params = {
            "break_key": [m.break_key for m in malformed],
            "kind": [m.kind for m in malformed],
            "exec_id": [m.exec_id for m in malformed],
            "order_id": [m.order_id for m in malformed],
            "detail": [m.detail for m in malformed],
            "report": [m.raw for m in malformed],
        }
        rows = await fetch_all(self._pool, "record_malformed_reports", params)
        return [Settled(SettlementOutcome(row["outcome"]), None, None) for row in rows]


def _refused(received: Received, error: BaseException) -> MalformedReport:
    """A report the database refused, kept whole as one that cannot be booked as it came."""
    detail = f"refused: the database refused the report ({getattr(error, 'sqlstate', None)}: {error})"
    return MalformedReport(received.raw, detail, received.exec_id or None, received.parsed.order_id, kind="refused")


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
