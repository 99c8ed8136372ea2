"""The ids the venue names its orders and executions by."""

from __future__ import annotations

import itertools

from ulid import ULID


class VenueIds:
    """Venue order ids and exec ids: a counter behind the process's session id.

    The session id is a fresh ULID per process, so ids stay unique across restarts although the counters
    start again from 1 (the venue forgets everything when it stops).
    """

    def __init__(self, session_id: str | None = None) -> None:
        self.session_id = session_id or str(ULID())
        self._orders = itertools.count(1)
        self._executions = itertools.count(1)

    def next_venue_order_id(self) -> str:
        return f"{self.session_id}-O{next(self._orders)}"

    def next_exec_id(self) -> str:
        return f"{self.session_id}-E{next(self._executions)}"
