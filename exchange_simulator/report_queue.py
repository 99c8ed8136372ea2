"""The streaming delivery's bookkeeping, without I/O: which reports wait to be sent and which were sent on the
current stream and not yet acknowledged.

Each entry is one copy of a report (chaos may send a report twice): a copy waits, is taken to be sent with the
others taken with it (in flight), and leaves when an acknowledgement of its exec_id comes back. Two copies of one
exec_id in flight need two acknowledgements; an acknowledgement matching no copy in flight changes nothing. When a
stream ends, every copy still in flight goes back to the front of the line, to be sent again on the next stream.
"""

from __future__ import annotations

from collections import deque

from brokerage.domain.executions import ExecutionReport


class ReportQueue:
    def __init__(self, window: int) -> None:
        self._window = window  # at most this many copies in flight: backpressure
        self._waiting: deque[ExecutionReport] = deque()
        self._in_flight: dict[str, list[ExecutionReport]] = {}  # by exec_id, in the order first sent
        self._in_flight_count = 0

    def __len__(self) -> int:
        """Copies not yet acknowledged: waiting or in flight."""
        return len(self._waiting) + self._in_flight_count

    @property
    def in_flight(self) -> int:
        return self._in_flight_count

    def add(self, report: ExecutionReport) -> None:
        self._waiting.append(report)

    def take(self, limit: int) -> list[ExecutionReport]:
        """Up to `limit` copies to send together, oldest first, now counted in flight; as many as wait and the
        window has room for (none if it is full)."""
        count = min(limit, len(self._waiting), self._window - self._in_flight_count)
        taken = [self._waiting.popleft() for _ in range(max(count, 0))]
        for report in taken:
            self._in_flight.setdefault(report.exec_id, []).append(report)
        self._in_flight_count += len(taken)
        return taken

    def acknowledge(self, exec_id: str) -> bool:
        """Retires one copy of this exec_id in flight; False if there is none (a stray acknowledgement)."""
        copies = self._in_flight.get(exec_id)
        if not copies:
            return False
        copies.pop()
        if not copies:
            del self._in_flight[exec_id]
        self._in_flight_count -= 1
        return True

    def requeue(self) -> int:
        """The stream ended: every copy in flight waits again, ahead of the rest. Returns how many did."""
        unacknowledged = [report for copies in self._in_flight.values() for report in copies]
        self._waiting.extendleft(reversed(unacknowledged))
        self._in_flight.clear()
        self._in_flight_count = 0
        return len(unacknowledged)
