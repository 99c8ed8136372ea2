"""A worker killed between the exchange's acknowledgement and its own commit, on real processes.

The exchange simulator here is a slow venue (EXCHANGE_ACK_DELAY_MS): it takes each order at once and answers
later, so a worker SIGKILLed while its submits are in flight leaves orders the exchange has and our record holds
only as claimed. The other replica of the cluster gets those messages once AckWait passes, sends the orders
again, hears "duplicate" with the first acknowledgement, and records them: one exchange order each, in order.

Here the venue keeps its execution reports instead of delivering them: its NEW report would otherwise record the
order SUBMITTED before the redelivery, and the path under test (resending) would not be taken. That the reports
alone also leave one exchange order each is what the settlement tests show.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Iterator

import pytest

from devtools.stack import NatsServer, PostgresCluster
from tests.e2e.mesh import (
    Mesh,
    arrivals,
    assert_each_customer_arrived_in_sequence_order,
    buys,
    place_all,
    running_mesh,
    wait_all_at_exchange,
)

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]

CUSTOMERS = 40
ACK_DELAY_MS = 300


@pytest.fixture(scope="module")
def slow_venue_mesh(
    postgres_cluster: PostgresCluster,
    migrated_template: str,
    nats_server: NatsServer,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Mesh]:
    with running_mesh(
        postgres_cluster,
        migrated_template,
        nats_server,
        tmp_path_factory.mktemp("slow-venue"),
        CUSTOMERS,
        EXCHANGE_ACK_DELAY_MS=str(ACK_DELAY_MS),
        EXCHANGE_CALLBACK_TARGET="",
    ) as mesh:
        yield mesh


def test_a_worker_killed_after_the_exchange_took_its_orders_causes_no_second_exchange_order(
    slow_venue_mesh: Mesh,
) -> None:
    mesh = slow_venue_mesh
    victim, survivor = mesh.processes["execution-0-7-1"], mesh.processes["execution-0-7-2"]

    async def place_and_kill_mid_submit() -> list:  # type: ignore[type-arg]
        # Both replicas pull every shard, and which one a message goes to is NATS's choice. So the survivor is
        # frozen while the orders go in (once its pending pulls have expired, unanswered), and the victim takes
        # every message of the cluster.
        survivor.process.send_signal(signal.SIGSTOP)
        await asyncio.sleep(float(mesh.env["BROKER_FETCH_TIMEOUT_SECONDS"]) * 3)
        orders = await place_all(mesh.plan.order_service.target, buys("crash", range(1, CUSTOMERS + 1), 5))
        # With a backlog behind each shard the victim spends nearly all its time waiting for the slow venue's
        # answers: half an answer's wait after a few recorded submits, it has orders at the exchange that it
        # has not recorded.
        while sum(line.get("event") == "order submitted" for line in victim.logs()) < 3:
            await asyncio.sleep(0.05)
        await asyncio.sleep(ACK_DELAY_MS / 1000 / 2)
        victim.process.send_signal(signal.SIGKILL)
        survivor.process.send_signal(signal.SIGCONT)
        return orders

    orders = asyncio.run(place_and_kill_mid_submit())
    wait_all_at_exchange(mesh.database_url, orders)

    assert mesh.exchange_metric("exchange_duplicate_submits_total") >= 1  # the window was hit: orders resent ...
    assert mesh.exchange_metric("exchange_orders_received_total") == len(orders)  # ... yet one exchange order each
    arrived = arrivals(mesh.plan.exchange.target)
    assert set(arrived) == {o.order_id for o in orders}
    assert_each_customer_arrived_in_sequence_order(orders, arrived)
    resent = [line for line in survivor.logs() if line.get("resubmitted") is True]
    assert resent, "the surviving replica resent what the dead one had in flight"
