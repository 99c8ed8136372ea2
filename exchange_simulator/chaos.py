"""Chaos: the misbehaviour of a real venue's callbacks, on purpose, so the backend proves it copes.

With rate p each report is independently delayed (up to a maximum, so later reports overtake it) with
probability p and sent twice with probability p; and each accepted order, with probability p, is answered only
after its NEW report and its first fill have reached CallbackService. Rate 0 changes nothing. Apart from it, each
report is, with probability `replay_rate`, sent once more `replay_delay_seconds` later (an old report replayed, as a
venue recovering its log does), and each
report goes out malformed with probability `malformed_rate` (a price that is no number, bad UTF-8 in its reason, an
exec type no one knows, no transact time): CallbackService keeps it as a break, and the real report is then only in
the drop copy, for an operator to book.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from prometheus_client import Counter

from brokerage.domain.executions import ExecutionReport
from brokerage.proto import callback_pb2
from brokerage.wire import report_to_proto

MALFORMED = Counter("exchange_malformed_reports_total", "Reports chaos sent malformed, by what was wrong.", ["fault"])
_BAD_UTF8_MARK = "\x01bad-utf8\x01"  # replaced, byte for byte, by as many bytes that are no UTF-8
_UNKNOWN_EXEC_TYPE = 99


@dataclass
class Chaos:
    rate: float
    max_delay_seconds: float
    rng: random.Random = field(default_factory=random.Random)
    malformed_rate: float = 0.0
    replay_rate: float = 0.0
    replay_delay_seconds: float = 0.0

    def delivery_delay(self) -> float:
        """Seconds to hold a report back before its first delivery attempt."""
        if self.rate and self.rng.random() < self.rate:
            return self.rng.uniform(0.0, self.max_delay_seconds)
        return 0.0

    def copies(self) -> int:
        """How many times to deliver a report."""
        return 2 if self.rate and self.rng.random() < self.rate else 1

    def delays(self) -> list[float]:
        """Each copy of a report to deliver, as the seconds to hold it back first: one, two when duplicated, and one
        more long after when replayed."""
        held = [self.delivery_delay() for _ in range(self.copies())]
        if self.replay_rate and self.rng.random() < self.replay_rate:
            held.append(self.replay_delay_seconds)
        return held

    def fills_before_acknowledgement(self) -> bool:
        """Whether SubmitOrder waits until the order's first fill was delivered before answering."""
        return bool(self.rate) and self.rng.random() < self.rate

    def encode(self, report: ExecutionReport) -> bytes:
        """The report's bytes as they go out: as they should be, or (malformed_rate) broken in one of four ways (a
        fill's price only for a fill)."""
        message = report_to_proto(report)
        if not (self.malformed_rate and self.rng.random() < self.malformed_rate):
            return message.SerializeToString()
        faults = ("utf8", "exec_type", "transact_time", *(("price",) if report.exec_type.is_fill else ()))
        fault = self.rng.choice(faults)
        MALFORMED.labels(fault).inc()
        return _broken(message, fault)


def _broken(message: callback_pb2.ExecutionReport, fault: str) -> bytes:
    if fault == "price":
        message.last_price = "12,34"
    elif fault == "exec_type":
        message.exec_type = _UNKNOWN_EXEC_TYPE  # type: ignore[assignment]  # proto3 keeps an unknown enum value
    elif fault == "transact_time":
        message.ClearField("transact_time")
    else:
        message.reason = _BAD_UTF8_MARK
        encoded = _BAD_UTF8_MARK.encode()
        return message.SerializeToString().replace(encoded, b"\xff" * len(encoded))
    return message.SerializeToString()
