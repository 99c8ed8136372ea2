"""The venue in real time: what the servicer calls. It executes fills when they fall due, walks the prices on
schedule, logs every report and hands it to delivery, and applies chaos to acknowledgements. No protobuf here.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Sequence
from datetime import date, datetime

from prometheus_client import Counter

from brokerage.background import stop_requested
from brokerage.domain.executions import DropCopyEntry, ExecutionReport, Tombstone
from brokerage.domain.market_hours import trading_day
from brokerage.telemetry import get_logger, log_context
from exchange_simulator.chaos import Chaos
from exchange_simulator.delivery import ReportSink
from exchange_simulator.journal import DailyJournal
from exchange_simulator.market import Market, Quote
from exchange_simulator.tickets import OrderTicket
from exchange_simulator.venue import Acknowledgement, CancelOutcome, Venue, VenueOrder

log = get_logger(__name__)

ORDERS_RECEIVED = Counter("exchange_orders_received_total", "Orders received for the first time.", ["outcome"])
DUPLICATE_SUBMITS = Counter("exchange_duplicate_submits_total", "SubmitOrder calls for an order already received.")


class Exchange:
    def __init__(
        self,
        venue: Venue,
        market: Market,
        sink: ReportSink,
        chaos: Chaos,
        *,
        clock: Callable[[], datetime],
        price_step_seconds: float,
        acknowledgement_wait_seconds: float,
        acknowledgement_delay_seconds: float = 0.0,
        journal: DailyJournal | None = None,
        past_days: Callable[[date], list[DropCopyEntry | Tombstone]] | None = None,
    ) -> None:
        self.venue = venue
        self.market = market
        self._sink = sink
        self._chaos = chaos
        self._clock = clock
        self._price_step = price_step_seconds
        self._acknowledgement_wait = acknowledgement_wait_seconds
        self._acknowledgement_delay = acknowledgement_delay_seconds
        self._journal = journal  # the venue writes to it; closed with us
        self._past_days = past_days  # an earlier day's drop copy, from its journal
        self._wake = asyncio.Event()  # a new order may have a fill due sooner than the one being waited for
        venue.add_listener(self._on_report)

    async def submit(self, ticket: OrderTicket) -> Acknowledgement:
        with log_context(order_id=ticket.order_id, customer_id=ticket.customer_id):
            ack = self.venue.submit(ticket)
            if ack.duplicate:
                DUPLICATE_SUBMITS.inc()
                log.info("duplicate submit", submissions=self.venue.order(ticket.order_id).submissions)
                return ack
            ORDERS_RECEIVED.labels("accepted" if ack.accepted else "rejected").inc()
            log.info("order received", arrival_sequence=ack.arrival_sequence, accepted=ack.accepted)
            self._wake.set()
            if ack.accepted and self._chaos.fills_before_acknowledgement():
                await self._fill_before_acknowledging(ticket.order_id)
            if self._acknowledgement_delay:
                await asyncio.sleep(self._acknowledgement_delay)  # taken already: only the answer is slow
            return ack

    async def _fill_before_acknowledging(self, order_id: str) -> None:
        """Chaos: the first fill executes at once, and the answer waits until CallbackService has it (and NEW),
        so the caller hears of a fill before it has seen its acknowledgement."""
        self.venue.fill_now(order_id)
        exec_ids = [r.exec_id for r in self.venue.order(order_id).reports]
        delivered = await self._sink.wait_delivered(exec_ids, self._acknowledgement_wait)
        log.info("chaos: acknowledging after the first fill", reports=len(exec_ids), delivered=delivered)

    def cancel(self, order_id: str) -> CancelOutcome:
        with log_context(order_id=order_id):
            outcome = self.venue.cancel(order_id)
            log.info("cancel", accepted=outcome.accepted, reason=outcome.reason)
            return outcome

    def status(self, order_id: str, *, resend_reports: bool) -> VenueOrder | None:
        """The order, or None if the venue never received it; optionally queues its reports again."""
        order = self.venue.find(order_id)
        if order is not None and resend_reports:
            with log_context(order_id=order_id, customer_id=order.ticket.customer_id):
                log.info("resending reports", reports=len(order.reports))
            for report in order.reports:
                self._sink.enqueue(report)
        return order

    def quotes(self, symbols: Sequence[str]) -> list[Quote]:
        return self.market.quotes(symbols)

    def drop_copy(self, day: date | None) -> list[DropCopyEntry | Tombstone]:
        """A trading day's reports and tombstones (None: today's): today's from the venue, earlier ones from their
        journals when the venue keeps them."""
        if day is not None and day != trading_day(self._clock()) and self._past_days is not None:
            return self._past_days(day)
        return self.venue.drop_copy(day)

    async def run_fills(self) -> None:
        """Executes fills as they fall due, until cancelled."""
        while not stop_requested():
            await self._until_next_fill_due()
            self.venue.execute_due_fills()

    async def expire_day_orders(self) -> None:
        """Cancels working DAY orders at their expiry (the close of their session), until cancelled."""
        while not stop_requested():
            await asyncio.sleep(1.0)
            self.venue.expire_due()

    async def walk_prices(self) -> None:
        """Moves every price one step per interval, until cancelled."""
        while not stop_requested():
            await asyncio.sleep(self._price_step)
            self.market.step(self._clock())

    async def close(self) -> None:
        await self._sink.close()
        if self._journal is not None:
            self._journal.close()

    async def _until_next_fill_due(self) -> None:
        self._wake.clear()
        due = self.venue.next_fill_due()
        wait = None if due is None else max(0.0, (due - self._clock()).total_seconds())
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(wait):
                await self._wake.wait()

    def _on_report(self, report: ExecutionReport) -> None:
        customer_id = self.venue.order(report.order_id).ticket.customer_id
        with log_context(order_id=report.order_id, customer_id=customer_id):
            log.info(
                "execution report",
                exec_id=report.exec_id,
                exec_type=report.exec_type.value,
                last_quantity=report.last_quantity,
                cumulative_quantity=report.cumulative_quantity,
                reason=report.reason,
            )
        self._sink.enqueue(report)
