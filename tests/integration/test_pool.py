"""What every service's connection pool promises, whatever the database's own settings say."""

from __future__ import annotations

import psycopg
import pytest
from psycopg import sql

from brokerage.storage.pool import open_pool
from tests.integration.conftest import make_settings

pytestmark = pytest.mark.integration


async def test_a_commit_waits_for_the_synchronous_standby_even_where_the_database_says_otherwise(
    seeded_database: str,
) -> None:
    """An OK answer rests on its transaction's commit; with synchronous_commit off or local, a failover right after
    the answer could lose it. The pool pins it on for every session, over a database's or a role's setting."""
    with psycopg.connect(seeded_database, autocommit=True) as conn:
        name = conn.info.dbname
        conn.execute(sql.SQL("ALTER DATABASE {} SET synchronous_commit = off").format(sql.Identifier(name)))
    pool = await open_pool(make_settings(seeded_database, "nats://unused"))
    try:
        async with pool.connection() as conn:
            row = await (await conn.execute("SHOW synchronous_commit")).fetchone()
    finally:
        await pool.close()
    with psycopg.connect(seeded_database) as conn:
        assert conn.execute("SHOW synchronous_commit").fetchone() == ("off",)  # the database's setting took hold
    assert row == ("on",)
