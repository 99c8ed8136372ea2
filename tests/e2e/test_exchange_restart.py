"""The exchange simulator SIGKILLed while it works orders, and started again on its journal, as `make run` keeps it.

The restarted venue remembers every order: it fills the rest of those it was working as first planned, answers a
resubmission with the first acknowledgement, and resends on request the reports that died with the process. So
every order ends filled in full, once, and the books reconcile with the drop copy.
"""

from __future__ import annotations

import asyncio
import signal
from collections import defaultdict
from pathlib import Path

import psycopg
import pytest

from brokerage.proto import common_pb2, orders_pb2
from devtools.mesh import read_drop_copy
from devtools.stack import NatsServer, PostgresCluster
from tests.e2e.mesh import (
    arrivals,
    place_all,
    reconcile,
    running_mesh,
    wait_all_at_exchange,
    wait_all_settled,
)

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

CUSTOMERS = 20
ORDERS_PER_CUSTOMER = 5
QUANTITY = 6
FILLS = {common_pb2.EXEC_TYPE_PARTIAL_FILL, common_pb2.EXEC_TYPE_FILL}


def test_a_venue_killed_mid_fill_and_restarted_on_its_journal_fills_every_order_once(
    postgres_cluster: PostgresCluster, migrated_template: str, nats_server: NatsServer, tmp_path: Path
) -> None:
    with running_mesh(
        postgres_cluster,
        migrated_template,
        nats_server,
        tmp_path,
        CUSTOMERS,
        broker_env={"BROKER_STATUS_QUERY_AFTER_SECONDS": "2"},  # reports lost with the venue: asked for soon
        EXCHANGE_JOURNAL_DIR=str(tmp_path / "exchange" / "journals"),
        EXCHANGE_FILL_DELAY_MS="700",  # each order fills in 2 or 3 parts over about 2 s: the kill finds it working
        EXCHANGE_PARTIAL_FILL_PROBABILITY="1",
        EXCHANGE_MAX_FILLS="3",
    ) as mesh:
        requests = [
            orders_pb2.PlaceOrderRequest(
                customer_id=str(c),
                client_order_id=f"restart-{i}",
                symbol="MSFT",
                side=common_pb2.SIDE_BUY,
                quantity=QUANTITY,
            )
            for i in range(ORDERS_PER_CUSTOMER)
            for c in range(1, CUSTOMERS + 1)
        ]
        orders = asyncio.run(place_all(mesh.plan.order_service.target, requests))
        wait_all_at_exchange(mesh.database_url, orders)

        venue = mesh.processes[mesh.plan.exchange.name].process
        venue.send_signal(signal.SIGKILL)
        venue.wait(timeout=10)
        assert _not_ended(mesh.database_url) > 0, "the kill found no order working: nothing was tested"
        mesh.start(mesh.plan.exchange)

        wait_all_settled(mesh.database_url, orders, timeout=120)
        assert _not_ended(mesh.database_url) == 0
        with psycopg.connect(mesh.database_url) as conn:
            statuses = conn.execute("SELECT status, count(*) FROM orders GROUP BY status").fetchall()
        assert statuses == [("FILLED", len(orders))]
        assert len(arrivals(mesh.plan.exchange.target)) == len(orders)  # one exchange order each, no second one
        filled: dict[str, int] = defaultdict(int)
        for entry in read_drop_copy(mesh.plan.exchange.target):
            if entry.report.exec_type in FILLS:
                filled[entry.report.order_id] += entry.report.last_quantity
        assert filled == {o.order_id: QUANTITY for o in orders}
        reconciled = reconcile(mesh)
        assert reconciled.returncode == 0, reconciled.stdout + reconciled.stderr


def _not_ended(database_url: str) -> int:
    with psycopg.connect(database_url) as conn:
        row = conn.execute(
            "SELECT count(*) FROM orders WHERE status IN ('PLACED', 'SUBMITTED', 'PARTIALLY_FILLED')"
        ).fetchone()
    assert row is not None
    return int(row[0])
