"""The transactions on the money path stay cheap to plan: no statement inside them (triggers included) is planned
expensively enough for PostgreSQL to JIT-compile it. Under `enable_seqscan = off`, which those functions set, a
statement that cannot use an index is costed at 1e10, and JIT then spends milliseconds on every call (it did: the
shard trigger's read of shard_config cost about 7 ms per placement). Checked with JIT on, as a connection that does
not turn it off would run, by auto_explain reporting every nested statement's plan."""

from __future__ import annotations

from decimal import Decimal

import psycopg
import pytest

pytestmark = pytest.mark.integration


def explained(db: psycopg.Connection, statements: list[str]) -> list[str]:
    """auto_explain's report of every statement run, nested ones included, as notices."""
    notices: list[str] = []
    db.add_notice_handler(lambda diagnostic: notices.append(diagnostic.message_primary or ""))
    for setting in (
        "LOAD 'auto_explain'",
        "SET jit = on",
        "SET auto_explain.log_min_duration = 0",
        "SET auto_explain.log_nested_statements = on",
        "SET auto_explain.log_level = notice",
        "SET client_min_messages = notice",
    ):
        db.execute(setting)
    for statement in statements:
        db.execute(statement)
    return [n for n in notices if "plan:" in n]


def test_no_statement_of_placement_submission_settlement_or_cancel_is_jit_compiled(db: psycopg.Connection) -> None:
    plans = explained(
        db,
        [
            "SELECT place_order('o1', '1', 'k1', 'AAPL', 'BUY', 10, 240.00, 2400.00, NULL, 'orders.1', '')",
            "SELECT place_order('o2', '1', 'k2', 'AAPL', 'BUY', 1, 240.00, 240.00, NULL, 'orders.1', '')",
            "SELECT * FROM claim_for_submissions(ARRAY['o1'])",
            "SELECT * FROM record_submissions(ARRAY['o1'], ARRAY['V1'])",
            "SELECT * FROM apply_execution_report('e1', 'o1', 'V1', 'PARTIAL_FILL', 4, 230.00, 4, '', now(), '{}')",
            "SELECT * FROM apply_execution_report('e2', 'o1', 'V1', 'FILL', 6, 231.00, 10, '', now(), '{}')",
            "SELECT * FROM cancel_order('1', 'o2', 'orders.1', '')",
        ],
    )

    assert len(plans) > 20  # auto_explain saw the nested statements
    assert [p.split("\n")[1] for p in plans if "JIT:" in p] == []
    assert db.execute("SELECT filled_quantity, average_fill_price FROM orders WHERE order_id = 'o1'").fetchone() == (
        10,
        Decimal("230.6000"),
    )


async def test_the_services_connections_have_jit_off(seeded_database: str) -> None:
    from brokerage.storage.pool import open_pool
    from tests.integration.conftest import make_settings

    pool = await open_pool(make_settings(seeded_database, "nats://unused"))
    try:
        async with pool.connection() as conn:
            assert await (await conn.execute("SHOW jit")).fetchone() == ("off",)
    finally:
        await pool.close()
