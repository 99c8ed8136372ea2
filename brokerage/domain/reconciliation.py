"""What reconciliation compares without a database, against the exchange's drop copy: what clearing moved for each
execution, the venue's final word on each order, and the order each customer's orders reached the venue in."""

from __future__ import annotations

import itertools
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal

from brokerage.domain.executions import DropCopyEntry, ExecType
from brokerage.domain.money import format_decimal
from brokerage.domain.orders import OrderStatus, Side

VENUE_FINAL_STATUS = {
    ExecType.FILL: OrderStatus.FILLED,
    ExecType.CANCELED: OrderStatus.CANCELED,
    ExecType.REJECTED: OrderStatus.REJECTED,
}


@dataclass(frozen=True)
class Finding:
    """One discrepancy: what it concerns and what is wrong with it."""

    subject: str
    detail: str


@dataclass(frozen=True)
class ClearingMovement:
    """What the firm's clearing account with the venue moved for one execution, signed as the venue sees it: a buy
    brings its cost in and sends its shares out (shares < 0, cash > 0), a sell the other way."""

    exec_id: str
    order_id: str
    symbol: str
    shares: int
    cash: Decimal

    @classmethod
    def of_fill(
        cls, exec_id: str, order_id: str, symbol: str, side: Side, quantity: int, price: Decimal
    ) -> ClearingMovement:
        sign = 1 if side is Side.BUY else -1
        return cls(exec_id, order_id, symbol, -sign * quantity, sign * quantity * price)

    def __str__(self) -> str:
        side = "BUY" if self.shares < 0 else "SELL"
        return f"order {self.order_id} {side} {abs(self.shares)} {self.symbol} for {format_decimal(abs(self.cash))}"


@dataclass(frozen=True)
class OurOrder:
    """An order as our books hold it, for the comparisons with the venue's day."""

    order_id: str
    customer_id: str
    sequence: int
    status: OrderStatus


def venue_movements(entries: Iterable[DropCopyEntry]) -> dict[str, ClearingMovement]:
    """What clearing must have moved for each fill among the exchange's reports of the day, by exec_id."""
    return {
        e.report.exec_id: ClearingMovement.of_fill(
            e.report.exec_id, e.report.order_id, e.report.symbol, e.report.side, e.report.last_quantity, price
        )
        for e in entries
        if e.report.exec_type.is_fill and (price := e.report.last_price) is not None
    }


def compare_clearing(
    ours: Mapping[str, ClearingMovement], theirs: Mapping[str, ClearingMovement], open_breaks: set[str]
) -> list[Finding]:
    """Clearing moved exactly the exchange's fills: each fill of the drop copy is booked once, as the venue made it
    (to a customer or to the error account), or waits as an open break; nothing else moved clearing."""
    findings = []
    for exec_id in sorted(ours.keys() | theirs.keys()):
        booked, made = ours.get(exec_id), theirs.get(exec_id)
        if booked is not None and (booked.shares, booked.cash) == (0, 0):
            booked = None  # booked and reversed by a repair: nothing moved
        if booked is None and made is not None and exec_id not in open_breaks:
            findings.append(Finding(f"execution {exec_id}", f"the exchange filled {made}; clearing did not move"))
        elif made is None and booked is not None:
            findings.append(
                Finding(f"execution {exec_id}", f"clearing moved {booked}; the exchange's drop copy has no such fill")
            )
        elif (
            booked is not None
            and made is not None
            and (booked.symbol, booked.shares, booked.cash)
            != (
                made.symbol,
                made.shares,
                made.cash,
            )
        ):
            findings.append(Finding(f"execution {exec_id}", f"clearing moved {booked}; the exchange filled {made}"))
    return findings


def venue_finals(entries: Iterable[DropCopyEntry]) -> dict[str, OrderStatus]:
    """Each order's final status as the venue ended it (its last final report), by order id."""
    return {
        e.report.order_id: VENUE_FINAL_STATUS[e.report.exec_type]
        for e in entries
        if e.report.exec_type in VENUE_FINAL_STATUS
    }


def compare_outcomes(
    ours: Mapping[str, OurOrder], finals: Mapping[str, OrderStatus], explained: set[str]
) -> list[Finding]:
    """The venue's final word on each order is ours, unless a break names the order (the break says why not)."""
    findings = []
    for order_id, final in sorted(finals.items()):
        order = ours.get(order_id)
        if order_id in explained or order is None or order.status is final:
            continue
        findings.append(
            Finding(f"order {order_id}", f"the exchange ended it {final.value}; we hold it {order.status.value}")
        )
    return findings


def arrivals(entries: Iterable[DropCopyEntry]) -> dict[str, int]:
    """Each order's arrival sequence at the venue (a resubmission keeps its first), by order id."""
    return {e.report.order_id: e.arrival_sequence for e in entries if e.arrival_sequence > 0}


def check_arrival_order(ours: Mapping[str, OurOrder], arrived: Mapping[str, int]) -> list[Finding]:
    """Per customer, the orders that reached the venue arrived in their sequence order (rule 5)."""
    by_customer: dict[str, list[OurOrder]] = defaultdict(list)
    for order_id in arrived:
        if (order := ours.get(order_id)) is not None:
            by_customer[order.customer_id].append(order)
    findings = []
    for customer, orders in sorted(by_customer.items()):
        orders.sort(key=lambda o: o.sequence)
        for earlier, later in itertools.pairwise(orders):
            if arrived[later.order_id] < arrived[earlier.order_id]:
                findings.append(
                    Finding(
                        f"customer {customer}",
                        f"order {later.order_id} (sequence {later.sequence}) arrived {arrived[later.order_id]}, "
                        f"before order {earlier.order_id} (sequence {earlier.sequence}) at {arrived[earlier.order_id]}",
                    )
                )
    return findings


def check_tombstones(ended_unsent: set[str], tombstoned: set[str], arrived: Mapping[str, int]) -> list[Finding]:
    """Each order we ended unsent (rule 9) was never received by the venue, which keeps its tombstone."""
    findings = []
    for order_id in sorted(ended_unsent):
        if order_id in arrived:
            findings.append(Finding(f"order {order_id}", f"ended unsent here, yet it arrived {arrived[order_id]}"))
        elif order_id not in tombstoned:
            findings.append(Finding(f"order {order_id}", "ended unsent here, but the venue keeps no tombstone of it"))
    return findings
