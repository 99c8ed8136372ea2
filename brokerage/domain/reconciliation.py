"""What reconciliation compares without a database: our fills against the exchange's drop copy, fill by fill."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal

from brokerage.domain.executions import DropCopyEntry
from brokerage.domain.money import format_decimal
from brokerage.domain.orders import Side


@dataclass(frozen=True)
class Fill:
    exec_id: str
    order_id: str
    side: Side
    quantity: int
    price: Decimal

    def __str__(self) -> str:
        return f"order {self.order_id} {self.side.value} {self.quantity} at {format_decimal(self.price)}"


@dataclass(frozen=True)
class Finding:
    """One discrepancy: what it concerns and what is wrong with it."""

    subject: str
    detail: str


def drop_copy_fills(entries: Iterable[DropCopyEntry]) -> dict[str, Fill]:
    """The fills among the exchange's reports of the day, by exec_id."""
    return {
        e.report.exec_id: Fill(e.report.exec_id, e.report.order_id, e.report.side, e.report.last_quantity, price)
        for e in entries
        if e.report.exec_type.is_fill and (price := e.report.last_price) is not None
    }


def compare_fills(ours: Mapping[str, Fill], theirs: Mapping[str, Fill]) -> list[Finding]:
    """Every fill the exchange made is booked once, as it made it, and we booked no other."""
    findings = []
    for exec_id in sorted(ours.keys() | theirs.keys()):
        booked, made = ours.get(exec_id), theirs.get(exec_id)
        if booked is None:
            findings.append(Finding(f"execution {exec_id}", f"the exchange filled {made}; we have not booked it"))
        elif made is None:
            findings.append(
                Finding(f"execution {exec_id}", f"we booked {booked}; the exchange's drop copy has no such fill")
            )
        elif booked != made:
            findings.append(Finding(f"execution {exec_id}", f"we booked {booked}; the exchange filled {made}"))
    return findings
