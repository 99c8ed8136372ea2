"""The venue's memory on disk (EXCHANGE_JOURNAL_DIR): every order taken, every report produced and every tombstone,
one JSON object per line holding the wire's message (its protobuf bytes, base64: read back through the same checks
as on the wire), appended as it happens, in a file per trading day, and the day's read back at start.

A real exchange does not forget its orders and its day when it restarts, and `make run` keeps PostgreSQL's data
across restarts: a venue that forgot would take an order resubmitted after its restart for a new one and fill it
a second time, never fill the rest of an order it was working, and leave out of its drop copy every fill we
booked before. It needs only its day for that (DAY orders end at their session's close), so a restart reads only
today's file, however many days came before; an earlier day's drop copy is read from its own file when asked for.
Each line is flushed to the operating system before the venue goes on, so a killed simulator loses nothing it
reported; a line torn by a kill mid-write is the last one, and is cut off before the venue writes on (it reported
nothing of it: the line was not yet flushed whole). Lines of the earlier form (protobuf's JSON) are read as well.
"""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Callable
from datetime import date, datetime
from pathlib import Path
from typing import Any, TextIO

from google.protobuf import json_format
from google.protobuf.message import DecodeError, Message

from brokerage.domain.errors import InvalidRequest
from brokerage.domain.executions import ExecutionReport, Tombstone
from brokerage.domain.market_hours import trading_day
from brokerage.proto import callback_pb2, exchange_pb2
from brokerage.telemetry import get_logger
from brokerage.wire import report_from_proto, report_to_proto
from exchange_simulator import translate
from exchange_simulator.venue import Arrival

History = list[Arrival | ExecutionReport | Tombstone]
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
        order = _encoded(translate.submit_request(arrival.ticket))
        acknowledgement = _encoded(translate.acknowledgement(arrival.acknowledgement))
        self._append({"arrival": {"order": order, "acknowledgement": acknowledgement}})

    def reported(self, report: ExecutionReport) -> None:
        self._append({"report": _encoded(report_to_proto(report))})

    def tombstoned(self, tombstone: Tombstone) -> None:
        self._append({"tombstone": _encoded(translate.tombstone(tombstone))})

    def close(self) -> None:
        self._file.close()

    def _append(self, record: dict[str, Any]) -> None:
        self._file.write(json.dumps(record, separators=(",", ":")) + "\n")
        self._file.flush()


class DailyJournal:
    """The venue's history in a file per trading day (New York) under one directory (a VenueJournal): each entry goes
    to the file of its own day, by the clock when it happens."""

    def __init__(self, directory: Path, clock: Callable[[], datetime]) -> None:
        self._directory = directory
        self._clock = clock
        self._day: date | None = None
        self._file: JournalFile | None = None

    def path(self, day: date) -> Path:
        return self._directory / f"{day.isoformat()}.jsonl"

    def history(self, day: date) -> History:
        """The day's history as written; none for a day the venue kept no file of."""
        return read_journal(self.path(day))

    def arrived(self, arrival: Arrival) -> None:
        self._today().arrived(arrival)

    def reported(self, report: ExecutionReport) -> None:
        self._today().reported(report)

    def tombstoned(self, tombstone: Tombstone) -> None:
        self._today().tombstoned(tombstone)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()

    def _today(self) -> JournalFile:
        day = trading_day(self._clock())
        if self._file is None or day != self._day:
            self.close()
            self._day, self._file = day, JournalFile(self.path(day))
        return self._file


def read_journal(path: Path) -> History:
    """The history in the order it was written; none when the file does not exist yet."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        return []
    history: History = []
    for number, line in enumerate(lines, start=1):
        try:
            history.append(_entry(json.loads(line)))
        except (ValueError, KeyError, TypeError, json_format.ParseError, DecodeError, InvalidRequest) as error:
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


def _entry(record: dict[str, Any]) -> Arrival | ExecutionReport | Tombstone:
    if "tombstone" in record:
        return translate.tombstone_from(_decoded(record["tombstone"], exchange_pb2.Tombstone()))
    if "arrival" in record:
        arrival = record["arrival"]
        request = _decoded(arrival["order"], exchange_pb2.SubmitOrderRequest())
        response = _decoded(arrival["acknowledgement"], exchange_pb2.SubmitOrderResponse())
        return Arrival(translate.ticket(request), translate.acknowledgement_from(response))
    return report_from_proto(_decoded(record["report"], callback_pb2.ExecutionReport()))


def _encoded(message: Message) -> str:
    return base64.b64encode(message.SerializeToString()).decode("ascii")


def _decoded(value: str | dict[str, Any], message: Any) -> Any:
    """The message from its base64 bytes, or from protobuf's JSON form (the journal's earlier lines)."""
    if isinstance(value, dict):
        return json_format.ParseDict(value, message)
    message.ParseFromString(base64.b64decode(value, validate=True))
    return message
