"""The engines as production runs them, on loopback (the ground issue 18's fault harness stands on): three NATS
servers in one JetStream cluster with `sync_interval: always`, the ORDERS stream and its shard consumers R3, made by
the setup as in prod. Losing any one server, the stream's leader included, loses no acknowledged order and stalls
no shard: publishing and consuming go on once the survivors have elected a leader, and the node comes back as a
replica that catches up."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import nats
import pytest
from nats.errors import TimeoutError as NatsTimeout
from nats.js.errors import ServiceUnavailableError

from brokerage.messaging.connection import NatsAccess
from brokerage.messaging.consumers import shard_consumer_name
from brokerage.messaging.setup import set_up
from brokerage.messaging.streams import ORDERS_STREAM
from devtools.stack import NatsCluster
from tests.integration.conftest import make_settings

pytestmark = pytest.mark.integration

SHARD = 4


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsCluster]:
    with NatsCluster(tmp_path_factory.mktemp("nats-cluster")) as started:
        yield started


async def publish_acknowledged(js: nats.js.JetStreamContext, subject: str, body: bytes, msg_id: str) -> None:
    """As the outbox relay does: again until JetStream acknowledges it (a leader election answers nothing for a
    moment); the duplicate window drops a second copy."""
    for _ in range(100):
        try:
            await js.publish(subject, body, headers={"Nats-Msg-Id": msg_id}, timeout=1)
            return
        except nats.errors.Error:  # no responders, no response from the stream, a timeout
            await asyncio.sleep(0.1)
    raise AssertionError(f"{msg_id} was never acknowledged")


async def test_an_r3_stream_loses_no_acknowledged_order_when_its_leader_dies(cluster: NatsCluster) -> None:
    settings = make_settings("postgresql://unused@127.0.0.1/unused", cluster.url, stream_replicas=3)
    await set_up(settings)
    client = await nats.connect(**NatsAccess.of(settings).options("test"), connect_timeout=5)
    try:
        js = client.jetstream()
        info = await js.stream_info(ORDERS_STREAM)
        leader = info.cluster.leader if info.cluster else None
        assert info.config.num_replicas == 3 and leader in cluster.nodes
        subject = f"orders.{SHARD}"
        for n in range(50):
            await publish_acknowledged(js, subject, f"order-{n}".encode(), f"o-{n}")

        cluster.nodes[leader].kill()  # SIGKILL: as a node lost, mid-run
        for n in range(50, 100):
            await publish_acknowledged(js, subject, f"order-{n}".encode(), f"o-{n}")
        await publish_acknowledged(js, subject, b"order-7", "o-7")  # a republish: dropped as a duplicate

        consumer = await js.pull_subscribe_bind(consumer=shard_consumer_name(SHARD), stream=ORDERS_STREAM)
        received: list[bytes] = []
        while len(received) < 100:
            try:
                (message,) = await consumer.fetch(1, timeout=2)
            except (NatsTimeout, ServiceUnavailableError):
                # The consumer has a leader of its own: until the survivors elect one (it may have been on the dead
                # node), a pull answers 503 or nothing. The worker backs off and pulls again; so does this.
                await asyncio.sleep(0.1)
                continue
            received.append(message.data)
            await message.ack_sync(timeout=5)

        cluster.nodes[leader].start()  # back as a replica
        after = await js.stream_info(ORDERS_STREAM)
        new_leader = after.cluster.leader if after.cluster else None
    finally:
        await client.close()

    assert received == [f"order-{n}".encode() for n in range(100)]  # every acknowledged order, once, in order
    assert new_leader != leader
