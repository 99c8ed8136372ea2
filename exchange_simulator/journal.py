"""The venue's memory on disk (EXCHANGE_JOURNAL_PATH): every order taken and every report produced, one JSON
object per line (the wire's messages in protobuf's JSON form, read back through the same checks as on the wire),
appended as it happens and read back at start.

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
from pathlib import Path
from typing import Any, TextIO

from google.protobuf import json_format
from google.protobuf.message import Message

from brokerage.domain.errors import InvalidRequest
from brokerage.domain.executions import ExecutionReport, Tombstone
from brokerage.proto import callback_pb2, exchange_pb2
from brokerage.telemetry import get_logger
from brokerage.wire import report_from_proto, report_to_proto
from exchange_simulator import translate
from exchange_simulator.venue import Arrival

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
        order = _as_dict(translate.submit_request(arrival.ticket))
        acknowledgement = _as_dict(translate.acknowledgement(arrival.acknowledgement))
        self._append({"arrival": {"order": order, "acknowledgement": acknowledgement}})

    def reported(self, report: ExecutionReport) -> None:
        self._append({"report": _as_dict(report_to_proto(report))})

    def tombstoned(self, tombstone: Tombstone) -> None:
        self._append({"tombstone": _as_dict(translate.tombstone(tombstone))})

    def close(self) -> None:
        self._file.close()

    def _append(self, record: dict[str, Any]) -> None:
        self._file.write(json.dumps(record, separators=(",", ":")) + "\n")
        self._file.flush()


def read_journal(path: Path) -> list[Arrival | ExecutionReport | Tombstone]:
    """The history in the order it was written; none when the file does not exist yet."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        return []
    history: list[Arrival | ExecutionReport | Tombstone] = []
    for number, line in enumerate(lines, start=1):
        try:
            history.append(_entry(json.loads(line)))
        except (ValueError, KeyError, TypeError, json_format.ParseError, InvalidRequest) as error:
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
        return translate.tombstone_from(json_format.ParseDict(record["tombstone"], exchange_pb2.Tombstone()))
    if "arrival" in record:
        arrival = record["arrival"]
        request = json_format.ParseDict(arrival["order"], exchange_pb2.SubmitOrderRequest())
        response = json_format.ParseDict(arrival["acknowledgement"], exchange_pb2.SubmitOrderResponse())
        return Arrival(translate.ticket(request), translate.acknowledgement_from(response))
    return report_from_proto(json_format.ParseDict(record["report"], callback_pb2.ExecutionReport()))


def _as_dict(message: Message) -> dict[str, Any]:
    return json_format.MessageToDict(message, preserving_proto_field_name=True)
