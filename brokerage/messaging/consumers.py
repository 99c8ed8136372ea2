"""One durable pull consumer per shard on the ORDERS stream (DESIGN.md, "Settings that matter").

Every replica of the cluster that owns a shard pulls the same consumer. MaxAckPending 1 lets one message of the
shard be in flight at a time, whichever replica holds it, so a customer's orders go out in order; a `nak(delay)`
keeps that slot until the redelivery. MaxDeliver is unlimited because a finite one silently skips a message.
"""

from __future__ import annotations

from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from brokerage.domain.sharding import subject_for_shard
from brokerage.messaging.streams import ORDERS_STREAM

_PREFIX = "shard-"
CONSUMERS_PER_PAGE = 256  # JetStream's page size for a consumer listing


def shard_consumer_name(shard: int) -> str:
    return f"{_PREFIX}{shard}"


def shard_consumer_config(shard: int, ack_wait_seconds: float) -> ConsumerConfig:
    return ConsumerConfig(
        name=shard_consumer_name(shard),
        durable_name=shard_consumer_name(shard),
        description=f"orders of shard {shard}, one at a time",
        filter_subject=subject_for_shard(shard),
        deliver_policy=DeliverPolicy.ALL,
        ack_policy=AckPolicy.EXPLICIT,
        ack_wait=ack_wait_seconds,  # how soon another replica takes over from a dead one
        max_ack_pending=1,
        max_deliver=-1,
    )


async def ensure_shard_consumer(js: JetStreamContext, shard: int, ack_wait_seconds: float) -> None:
    """Creates the shard's consumer, or brings an existing one to this configuration (idempotent)."""
    await js.add_consumer(ORDERS_STREAM, shard_consumer_config(shard, ack_wait_seconds))


async def shard_backlogs(js: JetStreamContext) -> dict[int, int]:
    """Per shard, the messages not yet acknowledged (waiting, plus the one in flight); a page of consumers per
    request, whatever the shard count, rather than a request per shard."""
    backlogs: dict[int, int] = {}
    seen = 0
    while True:
        page = await js.consumers_info(ORDERS_STREAM, offset=seen or None)
        seen += len(page)
        for info in page:
            shard = _shard_of(info.name)
            if shard is not None:
                backlogs[shard] = int(info.num_pending or 0) + int(info.num_ack_pending or 0)
        if len(page) < CONSUMERS_PER_PAGE:
            return backlogs


def _shard_of(consumer_name: str | None) -> int | None:
    number = (consumer_name or "").removeprefix(_PREFIX)
    return int(number) if consumer_name and consumer_name.startswith(_PREFIX) and number.isdigit() else None
