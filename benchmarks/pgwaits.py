"""What a server's database connections are doing during a window, sampled from pg_stat_activity on a thread.

The server's connections are those with its application_name. Each sample counts them by state: `idle` (a pooled
connection with no work), `CPU` (active, not waiting) or `<wait_event_type>:<wait_event>` (active and waiting: a
lock, WAL fsync, ...).
"""

from __future__ import annotations

import threading
from collections import Counter

import psycopg

_QUERY = """
SELECT CASE WHEN state = 'active' THEN coalesce(wait_event_type || ':' || wait_event, 'CPU')
            ELSE coalesce(state, 'unknown') END
  FROM pg_stat_activity
 WHERE backend_type = 'client backend' AND datname = current_database() AND application_name = %s
"""


def backend_pids(database_url: str, application_name: str) -> list[int]:
    """The server processes of the connections with that application_name."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        rows = conn.execute("SELECT pid FROM pg_stat_activity WHERE application_name = %s", (application_name,))
        return [int(row[0]) for row in rows.fetchall()]


class WaitSampler:
    """Samples every `interval` seconds between start() and stop(); stop() returns the counts."""

    def __init__(self, database_url: str, application_name: str, interval: float = 0.05) -> None:
        self._url = database_url
        self._application_name = application_name
        self._interval = interval
        self._stop = threading.Event()
        self._counts: Counter[str] = Counter()
        self._samples = 0
        self._thread = threading.Thread(target=self._run, name="pg-wait-sampler", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> dict[str, float]:
        """Stops sampling; returns the average number of backends in each state per sample."""
        self._stop.set()
        self._thread.join()
        return {state: n / max(self._samples, 1) for state, n in self._counts.most_common()}

    def _run(self) -> None:
        with psycopg.connect(self._url, autocommit=True) as conn:
            while not self._stop.wait(self._interval):
                self._counts.update(str(row[0]) for row in conn.execute(_QUERY, (self._application_name,)).fetchall())
                self._samples += 1
