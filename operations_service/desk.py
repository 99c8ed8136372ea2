"""The repair desk: resolves breaks by the rule of their kind against the venue's drop copy, and redrives orders
through what the venue says of them. It knows the domain, the stores and the venue, not gRPC.

Money moves only through settlement (a drop copy's execution booked under its exec_id, as any report is) or through
the repairs' own functions (a write-off's reversal of what a report put in the error account); every resolve and
redrive leaves its audit row. Each is idempotent: asked again, it answers with what was done.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, date, datetime

from brokerage.domain.errors import FailedPrecondition, NotFound, OrderNotFound
from brokerage.domain.executions import DropCopyEntry, ExecutionReport, Received, SettlementOutcome
from brokerage.domain.market_hours import trading_day
from brokerage.domain.orders import Order, OrderStatus
from brokerage.domain.repairs import Break, Resolution, Step, resolution_step
from brokerage.exchange_client import ExchangeClient
from brokerage.storage.repairs import RepairStore
from brokerage.storage.settlements import SettlementStore
from brokerage.telemetry import get_logger
from brokerage.wire import report_to_proto

log = get_logger(__name__)

LOST_AT_THE_VENUE = "canceled: the exchange never received the order"
RESOLVE_PAGE = 500  # open breaks read at a time by a resolve of a whole kind


class DropCopies:
    """The venue's drop copies of the days asked about, each read once, its executions by exec_id."""

    def __init__(self, exchange: ExchangeClient) -> None:
        self._exchange = exchange
        self._days: dict[date, dict[str, DropCopyEntry]] = {}

    async def find(self, exec_id: str, *days: date) -> ExecutionReport | None:
        for day in days:
            if day not in self._days:
                copy = await self._exchange.drop_copy(day)
                self._days[day] = {e.report.exec_id: e for e in copy.executions}
            if (entry := self._days[day].get(exec_id)) is not None:
                return entry.report
        return None


class RepairDesk:
    def __init__(self, repairs: RepairStore, settlement: SettlementStore, exchange: ExchangeClient) -> None:
        self._repairs = repairs
        self._settlement = settlement
        self._exchange = exchange

    async def breaks(
        self, *, kind: str | None, include_resolved: bool, limit: int, after: int | None = None
    ) -> list[Break]:
        return await self._repairs.breaks(kind=kind, include_resolved=include_resolved, limit=limit, after=after)

    async def resolve(
        self,
        break_id: int,
        resolution: Resolution,
        operator: str,
        note: str,
        *,
        exec_id: str | None = None,
        drop_copies: DropCopies | None = None,
    ) -> tuple[Break, str]:
        """Resolves the break, or FailedPrecondition saying why it cannot be resolved so; the break as it now stands
        and what was done."""
        brk = await self._repairs.get_break(break_id)
        if brk is None:
            raise NotFound("break", str(break_id))
        if not brk.is_open:
            return brk, f"already resolved: {brk.resolution}, by {brk.resolved_by}"  # (a repair or settlement)
        if brk.exec_id is None and exec_id:
            brk = replace(brk, exec_id=exec_id)
        venue = None
        if brk.exec_id is not None:
            days = sorted({trading_day(brk.recorded_at), trading_day(datetime.now(UTC))})
            venue = await (drop_copies or DropCopies(self._exchange)).find(brk.exec_id, *days)
        step = resolution_step(brk, resolution, venue is not None)
        outcome = step.value
        if step is Step.BOOK_DROP_COPY and venue is not None:
            [settled] = await self._settlement.apply([Received(report_to_proto(venue).SerializeToString(), venue)])
            outcome = f"booked the drop copy's execution {venue.exec_id}: {_said(settled.outcome)}"
        await self._repairs.resolve(break_id, resolution, operator, note)
        log.warning(
            "break resolved",
            break_id=break_id,
            resolution=resolution.value,
            operator=operator,
            outcome=outcome,
            order_id=brk.order_id,
            exec_id=brk.exec_id,
        )
        resolved = await self._repairs.get_break(break_id)
        assert resolved is not None
        return resolved, outcome

    async def resolve_kind(
        self, kind: str, resolution: Resolution, operator: str, note: str
    ) -> list[tuple[Break, str]]:
        """Every open break of the kind, resolved so (each drop copy read once)."""
        drop_copies = DropCopies(self._exchange)
        resolved: list[tuple[Break, str]] = []
        after = None
        while page := await self._repairs.breaks(kind=kind, include_resolved=False, limit=RESOLVE_PAGE, after=after):
            for brk in page:
                resolved.append(await self.resolve(brk.break_id, resolution, operator, note, drop_copies=drop_copies))
            after = page[-1].break_id
        return resolved

    async def redrive(self, order_id: str, operator: str, note: str) -> tuple[Order, str]:
        """Asks the venue about the order and books its reports (never a status summary); an order waiting here that
        the venue never received goes again, and one at the venue that it never received is canceled through its
        tombstone."""
        order = await self._repairs.order(order_id)
        if order is None:
            raise OrderNotFound(order_id)
        status = await self._exchange.order_status(order_id, resend_reports=True)
        if status.known:
            received = [Received(report_to_proto(r).SerializeToString(), r) for r in status.reports]
            outcomes = await self._settlement.apply(received) if received else []
            booked = sum(1 for s in outcomes if s.outcome is SettlementOutcome.APPLIED)
            outcome = f"the exchange has it ({status.status}): {booked} of its {len(received)} reports booked now"
            if order.status is OrderStatus.PLACED and (
                redriven := await self._repairs.redrive_waiting(order_id, operator, note)
            ):
                order = redriven  # its reports settle it; a retry due now finds it known to the venue
        elif order.status is OrderStatus.PLACED:
            redriven = await self._repairs.redrive_waiting(order_id, operator, note)
            if redriven is None:
                raise FailedPrecondition(
                    f"order/{order_id}", "NOT_HELD", f"order {order_id} is not held: nothing to redrive"
                )
            order, outcome = redriven, "the exchange never received it: sent again"
        elif order.status is OrderStatus.SUBMITTED and order.filled_quantity == 0:
            answer = await self._exchange.cancel(order_id)
            ended = (
                await self._repairs.end_lost(order_id, LOST_AT_THE_VENUE, operator, note)
                if answer.never_received
                else None
            )
            if ended is None:
                raise FailedPrecondition(f"order/{order_id}", "NOT_LOST", f"order {order_id}: {answer.reason}")
            order, outcome = ended, "the exchange never received it: canceled through its tombstone, released"
        else:
            raise FailedPrecondition(
                f"order/{order_id}",
                "UNKNOWN_AT_VENUE",
                f"order {order_id} is {order.status.value} with {order.filled_quantity} filled, which the exchange "
                "does not know: an operator's decision against the drop copy",
            )
        log.warning(
            "order redriven", order_id=order_id, customer_id=order.customer_id, operator=operator, outcome=outcome
        )
        return (await self._repairs.order(order_id)) or order, outcome


def _said(outcome: SettlementOutcome) -> str:
    return {
        SettlementOutcome.APPLIED: "booked to the customer",
        SettlementOutcome.DUPLICATE: "it was booked already",
        SettlementOutcome.BREAK: "a break of its own (booked to the error account if a real fill)",
    }[outcome]
