"""PostgreSQL as production runs it, on loopback (the ground issue 18's fault harness stands on): a primary and a
synchronous standby. A commit is acknowledged only once the standby has it, so killing the primary and promoting
the standby loses no acknowledged commit; clients on the multi-host URL (target_session_attrs=read-write) find the
new primary; the old one comes back, rewound, as the new one's synchronous standby."""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
import pytest

from devtools.stack import ReplicatedPostgres

pytestmark = pytest.mark.integration


@pytest.fixture
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ReplicatedPostgres]:
    replicated = ReplicatedPostgres(tmp_path_factory.mktemp("replicated"))
    replicated.start()
    try:
        yield replicated
    finally:
        replicated.stop()


def committed(url: str) -> list[int]:
    with psycopg.connect(url, autocommit=True, connect_timeout=10) as conn:
        return [n for (n,) in conn.execute("SELECT n FROM acknowledged ORDER BY n").fetchall()]


def test_a_failover_loses_no_acknowledged_commit_and_the_old_primary_returns_as_a_standby(
    pair: ReplicatedPostgres,
) -> None:
    first = pair.primary
    with psycopg.connect(pair.url(), autocommit=True, connect_timeout=10) as conn:
        conn.execute("CREATE TABLE acknowledged (n int PRIMARY KEY)")
        for n in range(100):
            conn.execute("INSERT INTO acknowledged VALUES (%s)", (n,))  # each acknowledged: on the standby too

    second = pair.fail_over()
    survived = committed(pair.url())  # the multi-host URL finds the promoted standby
    pair.rejoin()
    with psycopg.connect(pair.url(), autocommit=True, connect_timeout=10) as conn:
        conn.execute("INSERT INTO acknowledged VALUES (100)")
        primary_port = conn.info.port
    on_the_old_primary = committed(pair.nodes[first].url())  # now a standby: reads what the new primary committed

    assert second != first and primary_port == pair.nodes[second].port
    assert survived == list(range(100))
    assert on_the_old_primary == list(range(101))
