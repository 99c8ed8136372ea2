"""The deployment's stream set-up (`python -m brokerage.messaging.setup`): idempotent, every shard's consumer."""

from __future__ import annotations

import nats
import pytest

from brokerage.messaging.consumers import shard_backlogs
from brokerage.messaging.setup import set_up
from brokerage.messaging.streams import ORDERS_STREAM, ShardCountMismatch
from tests.integration.conftest import make_settings

pytestmark = pytest.mark.integration


async def test_the_stream_and_every_shards_consumer_are_created_once_and_kept(fresh_nats: str) -> None:
    settings = make_settings("postgresql://unused@127.0.0.1:1/x", fresh_nats, consumer_ack_wait_seconds=4)

    await set_up(settings)
    await set_up(settings)  # again: nothing changes

    nc = await nats.connect(fresh_nats)
    try:
        js = nc.jetstream()
        assert (await js.stream_info(ORDERS_STREAM)).config.metadata["shard_count"] == "16"  # type: ignore[index]
        assert await shard_backlogs(js) == {shard: 0 for shard in range(16)}
        consumer = await js.consumer_info(ORDERS_STREAM, "shard-5")
        assert (consumer.config.ack_wait, consumer.config.max_ack_pending, consumer.config.filter_subject) == (
            4,
            1,
            "orders.5",
        )
    finally:
        await nc.close()

    with pytest.raises(ShardCountMismatch):
        await set_up(settings.model_copy(update={"shard_count": 8}))
