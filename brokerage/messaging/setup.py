"""Creates the ORDERS stream and every shard's consumer, and the EXECUTIONS stream (the post-trade feed),
idempotently: `python -m brokerage.messaging.setup`.

A deployment runs it once (a Kubernetes Job) before the workers start, so the stream is made with the intended
settings (replicas, limits) rather than by whichever process happens to connect first; running it again changes
nothing, or brings the consumers to the configured AckWait. A stream made for another shard count is refused.
"""

from __future__ import annotations

import asyncio
import sys

import nats

from brokerage.messaging.connection import NatsAccess
from brokerage.messaging.consumers import ensure_shard_consumer
from brokerage.messaging.streams import ShardCountMismatch, ensure_executions_stream, ensure_orders_stream
from brokerage.settings import Settings, load_settings
from brokerage.telemetry import configure_logging, get_logger

log = get_logger(__name__)


async def set_up(settings: Settings) -> None:
    client = await nats.connect(**NatsAccess.of(settings).options("setup"), connect_timeout=5, allow_reconnect=False)
    try:
        js = client.jetstream()
        await ensure_orders_stream(js, settings)
        for shard in range(settings.shard_count):
            await ensure_shard_consumer(js, shard, settings.consumer_ack_wait_seconds)
        await ensure_executions_stream(js, settings)
    finally:
        await client.close()


def main() -> None:
    settings = load_settings()
    configure_logging(settings.log_level)
    try:
        asyncio.run(set_up(settings))
    except ShardCountMismatch as error:
        log.critical("stream set-up refused", error=str(error))
        sys.exit(1)
    log.info("stream and consumers ready", shard_count=settings.shard_count, replicas=settings.stream_replicas)


if __name__ == "__main__":
    main()
