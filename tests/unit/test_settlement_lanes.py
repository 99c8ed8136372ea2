"""The settlement store's lanes, without a database: an order's reports never sit in two transactions at once,
and every caller gets its reports' outcomes in the order it gave them."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from brokerage.domain.executions import ExecType, ExecutionReport, Settled, SettlementOutcome
from brokerage.storage.settlements import SettlementStore
from tests.factories import execution_report


def report(order_id: str, n: int) -> ExecutionReport:
    return execution_report(
        f"{order_id}-{n}",
        order_id,
        exec_type=ExecType.NEW,
        last_quantity=0,
        last_price=None,
        cumulative_quantity=0,
        order_quantity=1,
    )


class RecordingStore(SettlementStore):
    """Books nothing: notes which orders are in a transaction at each moment, and answers with the exec_id."""

    def __init__(self, flushers: int) -> None:
        super().__init__(None, batch_max=8, flushers=flushers)  # type: ignore[arg-type]
        self.in_flight: list[str] = []
        self.overlaps: list[str] = []
        self.transactions = 0

    async def _apply_batch(self, batch: Sequence[ExecutionReport]) -> list[Settled | BaseException]:
        orders = {r.order_id for r in batch}
        self.overlaps += [o for o in orders if o in self.in_flight]
        self.in_flight += orders
        self.transactions += 1
        await asyncio.sleep(0.001)
        for order in orders:
            self.in_flight.remove(order)
        return [Settled(SettlementOutcome.APPLIED, r.exec_id, None) for r in batch]


async def test_an_orders_reports_never_share_a_moment_in_two_transactions() -> None:
    store = RecordingStore(flushers=4)
    calls = [[report(f"o{o}", n) for o in range(12)] for n in range(5)]  # five batches, each about every order

    outcomes = await asyncio.gather(*(store.apply(reports) for reports in calls))

    assert store.overlaps == []
    assert store.transactions > 4  # the lanes did run side by side
    assert [[s.customer_id for s in settled] for settled in outcomes] == [[r.exec_id for r in c] for c in calls]
