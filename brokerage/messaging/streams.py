"""The streams: ORDERS, its settings (DESIGN.md, "Settings that matter") and the shard count it was made for; and
EXECUTIONS, the post-trade feed (docs/executions-feed.md)."""

from __future__ import annotations

from nats.js import JetStreamContext
from nats.js.api import DiscardPolicy, RetentionPolicy, StorageType, StreamConfig
from nats.js.errors import NotFoundError

from brokerage.domain.sharding import SUBJECT_PREFIX
from brokerage.settings import Settings

ORDERS_STREAM = "ORDERS"
EXECUTIONS_STREAM = "EXECUTIONS"
EXECUTIONS_SUBJECTS = "executions.*"  # executions.<shard>, the shard of the order's customer
SHARD_COUNT_KEY = "shard_count"


class ShardCountMismatch(RuntimeError):
    """This process is configured for another shard count than the system was created with."""

    def __init__(self, where: str, recorded: int, configured: int) -> None:
        super().__init__(
            f"{where} records {recorded} shards but BROKER_SHARD_COUNT is {configured}; "
            "the shard count is fixed when the stream is created"
        )


def orders_stream_config(settings: Settings) -> StreamConfig:
    return StreamConfig(
        name=ORDERS_STREAM,
        subjects=[f"{SUBJECT_PREFIX}.*"],
        retention=RetentionPolicy.WORK_QUEUE,  # an acknowledged order leaves the stream
        storage=StorageType.FILE,
        max_bytes=settings.stream_max_bytes,
        discard=DiscardPolicy.NEW,  # when full, publishing fails and orders wait in the outbox
        duplicate_window=settings.stream_duplicate_window_seconds,
        num_replicas=settings.stream_replicas,
        metadata={SHARD_COUNT_KEY: str(settings.shard_count)},
    )


class StreamMissing(RuntimeError):
    """The ORDERS stream is not there, and making it is the setup Job's (`python -m brokerage.messaging.setup`)."""


async def ensure_orders_stream(js: JetStreamContext, settings: Settings) -> None:
    """Creates the stream if it is missing (where the settings let this process manage streams); refuses a stream
    made for another shard count."""
    try:
        info = await js.stream_info(ORDERS_STREAM)
    except NotFoundError:
        if not settings.nats_manage_streams:
            raise StreamMissing(f"no stream {ORDERS_STREAM}: run python -m brokerage.messaging.setup") from None
        await js.add_stream(orders_stream_config(settings))
        return
    recorded = (info.config.metadata or {}).get(SHARD_COUNT_KEY)
    if recorded is not None and int(recorded) != settings.shard_count:
        raise ShardCountMismatch(f"stream {ORDERS_STREAM}", int(recorded), settings.shard_count)


def executions_stream_config(settings: Settings) -> StreamConfig:
    """Kept for its readers (limits retention, a week by default); when full, publishing fails and the feed waits in
    PostgreSQL rather than dropping messages no reader has seen."""
    return StreamConfig(
        name=EXECUTIONS_STREAM,
        subjects=[EXECUTIONS_SUBJECTS],
        retention=RetentionPolicy.LIMITS,
        storage=StorageType.FILE,
        max_bytes=settings.stream_max_bytes,
        max_age=settings.executions_max_age_seconds,
        discard=DiscardPolicy.NEW,
        duplicate_window=settings.stream_duplicate_window_seconds,
        num_replicas=settings.stream_replicas,
    )


async def ensure_executions_stream(js: JetStreamContext, settings: Settings) -> None:
    """Creates the feed's stream if it is missing (where the settings let this process manage streams)."""
    try:
        await js.stream_info(EXECUTIONS_STREAM)
    except NotFoundError:
        if not settings.nats_manage_streams:
            raise StreamMissing(f"no stream {EXECUTIONS_STREAM}: run python -m brokerage.messaging.setup") from None
        await js.add_stream(executions_stream_config(settings))
