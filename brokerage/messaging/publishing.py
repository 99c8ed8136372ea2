"""Publishing a batch to JetStream and knowing it arrived: every message with its own Nats-Msg-Id (JetStream
drops a repeat within the stream's duplicate window) and its kind, every acknowledgement awaited."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from nats.js import JetStreamContext
from nats.js.api import PubAck

from brokerage.messaging.messages import TYPE_HEADER, MessageType


class Publishable(Protocol):
    @property
    def subject(self) -> str: ...
    @property
    def payload(self) -> bytes: ...
    @property
    def dedupe_id(self) -> str: ...
    @property
    def message_type(self) -> str: ...


@dataclass(frozen=True)
class Publication:
    subject: str
    payload: bytes
    dedupe_id: str
    message_type: str = MessageType.ORDER_PLACED


async def publish_all(js: JetStreamContext, messages: Sequence[Publishable], timeout: float) -> None:
    """Publishes the messages in order and returns once JetStream has acknowledged all of them; raises if any
    is refused or the acknowledgements take longer than timeout (then any of them may or may not be stored)."""
    acks = [
        await js.publish_async(m.subject, m.payload, headers={"Nats-Msg-Id": m.dedupe_id, TYPE_HEADER: m.message_type})
        for m in messages
    ]
    await _await_acks(acks, timeout)


async def _await_acks(acks: list[asyncio.Future[PubAck]], timeout: float) -> None:
    """Waits for every acknowledgement (in order) or fails; whatever is still outstanding is cancelled, which
    also frees the client's in-flight slots (an ack lost in a disconnect never comes)."""
    try:
        async with asyncio.timeout(timeout):
            for ack in acks:
                await ack
    finally:
        for ack in acks:
            if not ack.cancel() and not ack.cancelled():
                ack.exception()  # retrieved: a failure after the first one is already being handled
