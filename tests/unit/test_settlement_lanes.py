"""The settlement store's lanes, without a database: an order's reports never sit in two transactions at once,
a report whose customer was busy goes again through the lane that waits, a malformed or refused report is kept
apart without holding up the rest, and every caller gets its reports' outcomes in the order it gave them."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import psycopg
import pytest

from brokerage.domain.executions import (
    ExecType,
    ExecutionReport,
    MalformedReport,
    Received,
    Settled,
    SettlementOutcome,
)
from brokerage.storage.settlements import SettlementStore
from tests.factories import execution_report


def report(order_id: str, n: int) -> Received:
    new = execution_report(
        f"{order_id}-{n}",
        order_id,
        exec_type=ExecType.NEW,
        last_quantity=0,
        last_price=None,
        cumulative_quantity=0,
        order_quantity=1,
    )
    return Received(new.exec_id.encode(), new)


def malformed(exec_id: str) -> Received:
    return Received(b"bytes of " + exec_id.encode(), MalformedReport(b"...", "malformed: a bad price", exec_id, "o9"))


class RecordingStore(SettlementStore):
    """Books nothing: notes which orders are in a transaction at each moment, and answers with the exec_id; the
    reports of orders in `busy` are busy (None) to a transaction that does not wait."""

    def __init__(
        self, flushers: int, busy: frozenset[str] = frozenset(), refuse: dict[str, Exception] | None = None
    ) -> None:
        super().__init__(None, batch_max=8, flushers=flushers)  # type: ignore[arg-type]
        self.busy = busy
        self.refuse = refuse or {}  # the exec_ids whose transactions the database fails, with what
        self.kept: list[MalformedReport] = []
        self.in_flight: list[str] = []
        self.overlaps: list[str] = []
        self.transactions = 0
        self.waited_for: list[str] = []

    async def _apply_batch(
        self, batch: Sequence[ExecutionReport], *, wait: bool
    ) -> list[Settled | BaseException | None]:
        if failed := [self.refuse[r.exec_id] for r in batch if r.exec_id in self.refuse]:
            raise failed[0]
        if wait:
            self.waited_for += [r.exec_id for r in batch]
        orders = {r.order_id for r in batch}
        self.overlaps += [o for o in orders if o in self.in_flight]
        self.in_flight += orders
        self.transactions += 1
        await asyncio.sleep(0.001)
        for order in orders:
            self.in_flight.remove(order)
        return [
            None if r.order_id in self.busy and not wait else Settled(SettlementOutcome.APPLIED, r.exec_id, None)
            for r in batch
        ]

    async def _keep(self, malformed: Sequence[MalformedReport]) -> list[Settled]:
        self.kept += malformed
        return [Settled(SettlementOutcome.BREAK, m.break_key, None) for m in malformed]


async def test_an_orders_reports_never_share_a_moment_in_two_transactions() -> None:
    store = RecordingStore(flushers=4)
    calls = [[report(f"o{o}", n) for o in range(12)] for n in range(5)]  # five batches, each about every order

    outcomes = await asyncio.gather(*(store.apply(reports) for reports in calls))

    assert store.overlaps == []
    assert store.transactions > 4  # the lanes did run side by side
    assert [[s.customer_id for s in settled] for settled in outcomes] == [[r.exec_id for r in c] for c in calls]


async def test_a_report_whose_customer_is_busy_is_booked_by_a_transaction_that_waits_and_answered_in_place() -> None:
    store = RecordingStore(flushers=2, busy=frozenset({"o1"}))
    reports = [report("o0", 0), report("o1", 0), report("o2", 0), report("o1", 1)]

    settled = await store.apply(reports)

    assert [s.customer_id for s in settled] == ["o0-0", "o1-0", "o2-0", "o1-1"]
    assert sorted(store.waited_for) == ["o1-0", "o1-1"]


async def test_malformed_reports_are_kept_as_breaks_and_the_rest_booked_in_place() -> None:
    store = RecordingStore(flushers=2)
    reports = [report("o0", 0), malformed("e-bad"), report("o1", 0)]

    settled = await store.apply(reports)

    assert [(s.outcome, s.customer_id) for s in settled] == [
        (SettlementOutcome.APPLIED, "o0-0"),
        (SettlementOutcome.BREAK, "malformed:e-bad"),
        (SettlementOutcome.APPLIED, "o1-0"),
    ]


async def test_a_report_the_database_refuses_is_kept_whole_and_its_neighbours_are_booked() -> None:
    store = RecordingStore(flushers=1, refuse={"o1-0": psycopg.errors.CheckViolation("no")})
    reports = [report("o0", 0), report("o1", 0), report("o2", 0)]

    settled = await store.apply(reports)

    assert [s.outcome for s in settled] == [
        SettlementOutcome.APPLIED,
        SettlementOutcome.BREAK,
        SettlementOutcome.APPLIED,
    ]
    assert [(m.kind, m.exec_id, m.raw) for m in store.kept] == [("refused", "o1-0", b"o1-0")]


@pytest.mark.parametrize(
    "error", [psycopg.OperationalError("connection lost"), psycopg.errors.SerializationFailure("again")]
)
async def test_a_failure_that_may_pass_fails_the_call_and_keeps_nothing(error: Exception) -> None:
    store = RecordingStore(flushers=1, refuse={"o1-0": error})

    with pytest.raises(type(error)):
        await store.apply([report("o0", 0), report("o1", 0)])

    assert store.kept == []
