"""The venue's order book of market orders: submission (idempotent by our order id), fills by plan and never
beyond the protection price, cancels, status and the drop copy.

A cancel of an order the venue never received leaves a tombstone for the day, and a later submit of that id is
refused without arriving (rule 9): so the caller may end the order itself. A DAY order (one with an expiry) is
refused once its expiry has passed, and canceled at its expiry if still working (rule 10).

No I/O and no waiting: the clock is injected, due fills run when `execute_due_fills` is called, and every
execution report goes to the listeners as it is produced. Everything runs on one thread (the event loop), so a
cancel and a fill never interleave: whichever comes first wins and the other finds the order terminal.

A journal, when given, is told of every order taken and every report, in the order they happen; `restore` takes
that history back into a new venue, so the venue can remember its orders and its day across a restart.
"""

from __future__ import annotations

import heapq
import itertools
import re
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from datetime import date, datetime
from decimal import Decimal
from typing import Protocol

from brokerage.domain.errors import (
    FailedPrecondition,
    FieldViolation,
    IdempotencyConflict,
    InvalidRequest,
    OrderNotFound,
)
from brokerage.domain.executions import DropCopyEntry, ExecType, ExecutionReport, Tombstone
from brokerage.domain.market_hours import MarketClock, trading_day
from brokerage.domain.money import format_decimal
from brokerage.domain.orders import OrderStatus
from exchange_simulator.executions import VenueIds
from exchange_simulator.fill_plan import FillRules, PlannedFill, plan_fills
from exchange_simulator.market import Market
from exchange_simulator.tickets import OrderTicket

TRADING_DAY = re.compile(r"\d{4}-\d{2}-\d{2}")
CUSTOMER_CANCEL = "canceled at the customer's request"
EXPIRED_AT_CLOSE = "expired: a DAY order, canceled at the close"
NEVER_RECEIVED = "never received: a tombstone refuses the order for the rest of the day"

ReportListener = Callable[[ExecutionReport], None]


@dataclass(frozen=True)
class Acknowledgement:
    """The venue's answer to SubmitOrder; a repeated submit gets the first one back, marked duplicate."""

    venue_order_id: str
    accepted: bool
    reject_reason: str
    arrival_sequence: int
    duplicate: bool = False


@dataclass(frozen=True)
class Arrival:
    """An order the venue took (or refused), with its first acknowledgement: a journal's record of it."""

    ticket: OrderTicket
    acknowledgement: Acknowledgement


class VenueJournal(Protocol):
    """Where the venue's history goes as it happens: each arrival before any report of its order."""

    def arrived(self, arrival: Arrival) -> None: ...

    def reported(self, report: ExecutionReport) -> None: ...

    def tombstoned(self, tombstone: Tombstone) -> None: ...


@dataclass(frozen=True)
class CancelOutcome:
    accepted: bool  # the unfilled rest is canceled; the CANCELED report is already out
    reason: str = ""  # why not
    never_received: bool = False  # no such order: a tombstone now refuses it for the day


@dataclass
class VenueOrder:
    ticket: OrderTicket
    acknowledgement: Acknowledgement
    pending_fills: deque[PlannedFill]
    submissions: int = 1  # SubmitOrder calls for this order: the first and its duplicates
    cumulative_quantity: int = 0
    ended: OrderStatus | None = None  # REJECTED or CANCELED: ended before it filled completely
    next_fill_due: datetime | None = None
    reports: list[ExecutionReport] = field(default_factory=list)

    @property
    def order_id(self) -> str:
        return self.ticket.order_id

    @property
    def arrival_sequence(self) -> int:
        return self.acknowledgement.arrival_sequence

    @property
    def venue_order_id(self) -> str:
        return self.acknowledgement.venue_order_id

    @property
    def status(self) -> OrderStatus:
        if self.ended is not None:
            return self.ended
        if self.cumulative_quantity == self.ticket.quantity:
            return OrderStatus.FILLED
        return OrderStatus.PARTIALLY_FILLED if self.cumulative_quantity else OrderStatus.SUBMITTED

    @property
    def is_working(self) -> bool:
        return not self.status.is_terminal


class Venue:
    def __init__(
        self,
        market: Market,
        rules: FillRules,
        *,
        clock: Callable[[], datetime],
        market_clock: MarketClock,
        ids: VenueIds,
        journal: VenueJournal | None = None,
    ) -> None:
        self._market = market
        self._rules = rules
        self._clock = clock
        self._market_clock = market_clock
        self._ids = ids
        self._orders: dict[str, VenueOrder] = {}
        self._arrivals = itertools.count(1)
        # every report and tombstone in the order produced: the drop copy's source
        self._log: list[ExecutionReport | Tombstone] = []
        self._tombstones: dict[str, Tombstone] = {}
        self._due: list[tuple[datetime, int, str]] = []  # heap of (due, arrival sequence, order id)
        self._expiries: list[tuple[datetime, int, str]] = []  # heap of (expiry, arrival sequence, order id)
        self._listeners: list[ReportListener] = []
        self._journal = journal

    @property
    def market(self) -> Market:
        return self._market

    @property
    def session_id(self) -> str:
        return self._ids.session_id

    def add_listener(self, listener: ReportListener) -> None:
        self._listeners.append(listener)

    def find(self, order_id: str) -> VenueOrder | None:
        return self._orders.get(order_id)

    def order(self, order_id: str) -> VenueOrder:
        order = self._orders.get(order_id)
        if order is None:
            raise OrderNotFound(order_id)
        return order

    # Submission

    def submit(self, ticket: OrderTicket) -> Acknowledgement:
        """The acknowledgement; the same order again gets the first one (duplicate), other fields are refused, and
        an order canceled before it arrived (a tombstone) or arriving past its expiry is refused without arriving."""
        order = self._orders.get(ticket.order_id)
        if order is None:
            self._refuse_unless_it_may_arrive(ticket)
            return self._arrive(ticket).acknowledgement
        if order.ticket != ticket:
            raise IdempotencyConflict(f"order {ticket.order_id!r} was submitted before with other fields")
        order.submissions += 1
        return replace(order.acknowledgement, duplicate=True)

    def _refuse_unless_it_may_arrive(self, ticket: OrderTicket) -> None:
        now = self._clock()
        tombstone = self._tombstones.get(ticket.order_id)
        if tombstone is not None and trading_day(tombstone.recorded_at) == trading_day(now):
            raise FailedPrecondition(
                f"order/{ticket.order_id}",
                "CANCELED_BEFORE_ARRIVAL",
                f"order {ticket.order_id} was canceled before it arrived",
            )
        if ticket.expires_at is not None and ticket.expires_at <= now:
            raise FailedPrecondition(
                f"order/{ticket.order_id}",
                "EXPIRED",
                f"order {ticket.order_id} expired at {ticket.expires_at.isoformat()}",
            )

    def _arrive(self, ticket: OrderTicket) -> VenueOrder:
        reject_reason = self._reject_reason(ticket)
        acknowledgement = Acknowledgement(
            venue_order_id=self._ids.next_venue_order_id(),
            accepted=reject_reason is None,
            reject_reason=reject_reason or "",
            arrival_sequence=next(self._arrivals),
        )
        plan = () if reject_reason else plan_fills(ticket.order_id, ticket.quantity, self._rules)
        order = VenueOrder(ticket, acknowledgement, deque(plan))
        self._orders[ticket.order_id] = order
        if self._journal is not None:
            self._journal.arrived(Arrival(ticket, acknowledgement))
        if reject_reason:
            self._end(order, OrderStatus.REJECTED, reject_reason)
        else:
            self._report(order, ExecType.NEW)
            self._schedule_next_fill(order, self._clock())
            self._schedule_expiry(order)
        return order

    def _reject_reason(self, ticket: OrderTicket) -> str | None:
        if not self._market.is_listed(ticket.symbol):
            return f"unknown symbol {ticket.symbol!r}"
        if self._market.is_halted(ticket.symbol):
            return f"trading in {ticket.symbol} is halted"
        if not self._market_clock.is_open(self._clock()):
            return "market closed"
        return None

    # Fills

    def next_fill_due(self) -> datetime | None:
        while self._due and self._is_stale(self._due[0]):
            heapq.heappop(self._due)
        return self._due[0][0] if self._due else None

    def execute_due_fills(self) -> list[ExecutionReport]:
        """Executes every fill due by now, earliest first, at the current prices."""
        now = self._clock()
        reports: list[ExecutionReport] = []
        while self._due and self._due[0][0] <= now:
            entry = heapq.heappop(self._due)
            if not self._is_stale(entry):
                reports += self._fill_next(self._orders[entry[2]], now)
        return reports

    def fill_now(self, order_id: str) -> list[ExecutionReport]:
        """Executes the order's next fill at once rather than when due (chaos: a fill before the acknowledgement)."""
        order = self.order(order_id)
        return self._fill_next(order, self._clock()) if order.is_working else []

    def _fill_next(self, order: VenueOrder, now: datetime) -> list[ExecutionReport]:
        order.next_fill_due = None
        ticket = order.ticket
        if self._market.is_halted(ticket.symbol):  # a halted stock does not trade: try again later
            self._schedule_next_fill(order, now)
            return []
        price = self._market.price(ticket.symbol)
        if not ticket.allows(price):
            reason = (
                f"price {format_decimal(price)} is beyond the protection price "
                f"{format_decimal(ticket.protection_price)}: unfilled rest canceled"
            )
            return [self._end(order, OrderStatus.CANCELED, reason)]
        fill = order.pending_fills.popleft()
        order.cumulative_quantity += fill.quantity
        exec_type = ExecType.PARTIAL_FILL if order.pending_fills else ExecType.FILL
        report = self._report(order, exec_type, last_quantity=fill.quantity, last_price=price)
        self._schedule_next_fill(order, now)
        return [report]

    def _schedule_next_fill(self, order: VenueOrder, after: datetime) -> None:
        if not order.pending_fills:
            return
        order.next_fill_due = after + order.pending_fills[0].delay
        heapq.heappush(self._due, (order.next_fill_due, order.arrival_sequence, order.order_id))

    def _is_stale(self, entry: tuple[datetime, int, str]) -> bool:
        """A heap entry left behind by a cancel or an early fill (entries are not removed, only skipped)."""
        return self._orders[entry[2]].next_fill_due != entry[0]

    # Expiry

    def _schedule_expiry(self, order: VenueOrder) -> None:
        if order.ticket.expires_at is not None:
            heapq.heappush(self._expiries, (order.ticket.expires_at, order.arrival_sequence, order.order_id))

    def next_expiry(self) -> datetime | None:
        return self._expiries[0][0] if self._expiries else None

    def expire_due(self) -> list[ExecutionReport]:
        """Cancels every working DAY order whose expiry has come (the close of its session)."""
        now, reports = self._clock(), []
        while self._expiries and self._expiries[0][0] <= now:
            order = self._orders[heapq.heappop(self._expiries)[2]]
            if order.is_working:
                reports.append(self._end(order, OrderStatus.CANCELED, EXPIRED_AT_CLOSE))
        return reports

    # Cancels

    def cancel(self, order_id: str) -> CancelOutcome:
        """Cancels what is unfilled of a working order; nothing fills after it. An order never received gets a
        tombstone for the day instead, which refuses it should it come."""
        order = self._orders.get(order_id)
        if order is None:
            self._tombstone(order_id)
            return CancelOutcome(False, NEVER_RECEIVED, never_received=True)
        if not order.is_working:
            return CancelOutcome(False, f"already {order.status.value.lower()}")
        self._end(order, OrderStatus.CANCELED, CUSTOMER_CANCEL)
        return CancelOutcome(True)

    def _tombstone(self, order_id: str) -> Tombstone:
        tombstone = self._tombstones.get(order_id)
        if tombstone is None or trading_day(tombstone.recorded_at) != trading_day(self._clock()):
            tombstone = self._tombstones[order_id] = Tombstone(order_id, self._clock())
            self._log.append(tombstone)
            if self._journal is not None:
                self._journal.tombstoned(tombstone)
        return tombstone

    def _end(self, order: VenueOrder, status: OrderStatus, reason: str) -> ExecutionReport:
        order.ended = status
        order.pending_fills.clear()
        order.next_fill_due = None
        exec_type = ExecType.REJECTED if status is OrderStatus.REJECTED else ExecType.CANCELED
        return self._report(order, exec_type, reason=reason)

    # Restart

    def restore(self, history: Iterable[Arrival | ExecutionReport | Tombstone]) -> int:
        """Takes back the orders and reports of an earlier run, in the order a journal recorded them, before the
        venue takes anything new. Nothing is reported again (a caller that missed a report asks for the order's
        status). A working order fills its rest as first planned, from now on (the plan follows from the rules'
        seed: under another seed, the rest goes in one fill). Returns how many orders are still working."""
        for entry in history:
            if isinstance(entry, Arrival):
                self._orders[entry.ticket.order_id] = VenueOrder(entry.ticket, entry.acknowledgement, deque())
                self._arrivals = itertools.count(entry.acknowledgement.arrival_sequence + 1)
            elif isinstance(entry, Tombstone):
                self._tombstones[entry.order_id] = entry
                self._log.append(entry)
            else:
                self._take_back(entry)
        now = self._clock()
        working = [order for order in self._orders.values() if order.is_working]
        for order in working:
            order.pending_fills = deque(self._rest_of_plan(order))
            self._schedule_next_fill(order, now)
            self._schedule_expiry(order)
        return len(working)

    def _take_back(self, report: ExecutionReport) -> None:
        order = self._orders[report.order_id]
        order.reports.append(report)
        order.cumulative_quantity = report.cumulative_quantity
        if report.exec_type is ExecType.CANCELED:
            order.ended = OrderStatus.CANCELED
        elif report.exec_type is ExecType.REJECTED:
            order.ended = OrderStatus.REJECTED
        self._log.append(report)

    def _rest_of_plan(self, order: VenueOrder) -> list[PlannedFill]:
        fills = sum(1 for report in order.reports if report.exec_type.is_fill)
        planned = plan_fills(order.order_id, order.ticket.quantity, self._rules)
        if sum(fill.quantity for fill in planned[:fills]) == order.cumulative_quantity:
            return list(planned[fills:])
        return [PlannedFill(order.ticket.quantity - order.cumulative_quantity, self._rules.fill_delay)]

    # Reports

    def _report(
        self,
        order: VenueOrder,
        exec_type: ExecType,
        *,
        last_quantity: int = 0,
        last_price: Decimal | None = None,
        reason: str = "",
    ) -> ExecutionReport:
        ticket = order.ticket
        report = ExecutionReport(
            exec_id=self._ids.next_exec_id(),
            order_id=ticket.order_id,
            venue_order_id=order.venue_order_id,
            exec_type=exec_type,
            last_quantity=last_quantity,
            last_price=last_price,
            cumulative_quantity=order.cumulative_quantity,
            reason=reason,
            transact_time=self._clock(),
            symbol=ticket.symbol,
            side=ticket.side,
            order_quantity=ticket.quantity,
        )
        order.reports.append(report)
        self._log.append(report)
        if self._journal is not None:
            self._journal.reported(report)  # before anyone hears of it
        for listener in self._listeners:
            listener(report)
        return report

    def all_reports(self) -> list[ExecutionReport]:
        """Every report so far, in the order the venue produced them."""
        return [entry for entry in self._log if isinstance(entry, ExecutionReport)]

    def drop_copy(self, day: date | None = None) -> list[DropCopyEntry | Tombstone]:
        """Every report and tombstone of a trading day (New York time; None: today there), in the order they were
        produced."""
        day = day or trading_day(self._clock())
        entries: list[DropCopyEntry | Tombstone] = []
        for entry in self._log:
            if isinstance(entry, Tombstone):
                if trading_day(entry.recorded_at) == day:
                    entries.append(entry)
            elif trading_day(entry.transact_time) == day:
                order = self._orders[entry.order_id]
                entries.append(DropCopyEntry(entry, order.ticket.customer_id, order.arrival_sequence))
        return entries


def parse_trading_day(text: str) -> date | None:
    """YYYY-MM-DD, or None for an empty text (today); anything else is a malformed request."""
    if not text.strip():
        return None
    try:
        if TRADING_DAY.fullmatch(text.strip()):
            return date.fromisoformat(text.strip())
    except ValueError:
        pass
    raise InvalidRequest([FieldViolation("trading_day", f"expected YYYY-MM-DD, got {text!r}")])
