"""The venue's memory on disk (EXCHANGE_JOURNAL_PATH): every order taken and every report produced, one JSON
object per line, appended as it happens and read back at start.

A real exchange does not forget its orders and its day when it restarts, and `make run` keeps PostgreSQL's data
across restarts: a venue that forgot would take an order resubmitted after its restart for a new one and fill it
a second time, never fill the rest of an order it was working, and leave out of its drop copy every fill we
booked before. Each line is flushed to the operating system before the venue goes on, so a killed simulator
loses nothing it reported; a line torn by a kill mid-write is the last one, and is cut off before the venue
writes on (it reported nothing of it: the line was not yet flushed whole).
"""

from __future__ import annotations

import json
import os
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, TextIO

from brokerage.domain.executions import ExecType, ExecutionReport
from brokerage.domain.money import format_decimal
from brokerage.domain.orders import Side
from brokerage.telemetry import get_logger
from exchange_simulator.tickets import OrderTicket
from exchange_simulator.venue import Acknowledgement, Arrival

log = get_logger(__name__)

TAIL_CHUNK = 4096  # bytes read at a time, from the end, looking for the last whole line


class JournalError(ValueError):
    """A journal line other than the last cannot be read: the history is damaged, and the venue will not guess."""


class JournalFile:
    """Appends the venue's history to a file (a VenueJournal)."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        _drop_torn_tail(path)
        self._file: TextIO = path.open("a", encoding="utf-8")

    def arrived(self, arrival: Arrival) -> None:
        self._append({"arrival": _arrival_fields(arrival)})

    def reported(self, report: ExecutionReport) -> None:
        self._append({"report": _report_fields(report)})

    def close(self) -> None:
        self._file.close()

    def _append(self, record: dict[str, Any]) -> None:
        self._file.write(json.dumps(record, separators=(",", ":")) + "\n")
        self._file.flush()


def read_journal(path: Path) -> list[Arrival | ExecutionReport]:
    """The history in the order it was written; none when the file does not exist yet."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        return []
    history: list[Arrival | ExecutionReport] = []
    for number, line in enumerate(lines, start=1):
        try:
            history.append(_entry(json.loads(line)))
        except (ValueError, KeyError, TypeError) as error:
            if number < len(lines):
                raise JournalError(f"{path}, line {number}: {error!r}") from error
            log.warning("torn last journal line skipped", journal=str(path), line=number)
    return history


def _drop_torn_tail(path: Path) -> None:
    """Cuts a torn last line off, so that the next line written starts a line of its own."""
    if not path.exists():
        return
    with path.open("rb+") as file:
        size = file.seek(0, os.SEEK_END)
        if size == 0:
            return
        cut = end = size
        while end > 0:
            start = max(0, end - TAIL_CHUNK)
            file.seek(start)
            chunk = file.read(end - start)
            if end == size and chunk.endswith(b"\n"):
                return  # whole lines only
            newline = chunk.rfind(b"\n")
            if newline >= 0:
                cut = start + newline + 1
                break
            cut = end = start  # no line end yet: the torn line began further back
        file.truncate(cut)
    log.warning("torn last journal line dropped", journal=str(path), bytes=size - cut)


def _entry(record: dict[str, Any]) -> Arrival | ExecutionReport:
    if "arrival" in record:
        return _arrival(record["arrival"])
    return _report(record["report"])


def _arrival_fields(arrival: Arrival) -> dict[str, Any]:
    ticket, ack = arrival.ticket, arrival.acknowledgement
    return {
        "order_id": ticket.order_id,
        "customer_id": ticket.customer_id,
        "symbol": ticket.symbol,
        "side": ticket.side.value,
        "quantity": ticket.quantity,
        "protection_price": format_decimal(ticket.protection_price),
        "venue_order_id": ack.venue_order_id,
        "accepted": ack.accepted,
        "reject_reason": ack.reject_reason,
        "arrival_sequence": ack.arrival_sequence,
    }


def _arrival(fields: dict[str, Any]) -> Arrival:
    ticket = OrderTicket(
        order_id=fields["order_id"],
        customer_id=fields["customer_id"],
        symbol=fields["symbol"],
        side=Side(fields["side"]),
        quantity=int(fields["quantity"]),
        protection_price=Decimal(fields["protection_price"]),
    )
    acknowledgement = Acknowledgement(
        venue_order_id=fields["venue_order_id"],
        accepted=bool(fields["accepted"]),
        reject_reason=fields["reject_reason"],
        arrival_sequence=int(fields["arrival_sequence"]),
    )
    return Arrival(ticket, acknowledgement)


def _report_fields(report: ExecutionReport) -> dict[str, Any]:
    return {
        "exec_id": report.exec_id,
        "order_id": report.order_id,
        "venue_order_id": report.venue_order_id,
        "exec_type": report.exec_type.value,
        "last_quantity": report.last_quantity,
        "last_price": None if report.last_price is None else format_decimal(report.last_price),
        "cumulative_quantity": report.cumulative_quantity,
        "reason": report.reason,
        "transact_time": report.transact_time.isoformat(),
        "symbol": report.symbol,
        "side": report.side.value,
        "order_quantity": report.order_quantity,
    }


def _report(fields: dict[str, Any]) -> ExecutionReport:
    price = fields["last_price"]
    return ExecutionReport(
        exec_id=fields["exec_id"],
        order_id=fields["order_id"],
        venue_order_id=fields["venue_order_id"],
        exec_type=ExecType(fields["exec_type"]),
        last_quantity=int(fields["last_quantity"]),
        last_price=None if price is None else Decimal(price),
        cumulative_quantity=int(fields["cumulative_quantity"]),
        reason=fields["reason"],
        transact_time=datetime.fromisoformat(fields["transact_time"]),
        symbol=fields["symbol"],
        side=Side(fields["side"]),
        order_quantity=int(fields["order_quantity"]),
    )
