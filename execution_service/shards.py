"""The cluster's shards as its workers and operators see them: which are paused, how far behind each is, and
which order each has in flight. Pauses live in PostgreSQL (shard-wide, for every replica of every cluster, and
across restarts); this board keeps a copy fresh so idle workers of a paused shard stop pulling its messages."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import UTC, datetime

from prometheus_client import Gauge

from brokerage.background import stop_requested
from brokerage.messaging.connection import JetStreamLink
from brokerage.messaging.consumers import shard_backlogs
from brokerage.storage.shards import ShardRecord, ShardStore
from brokerage.telemetry import get_logger

log = get_logger(__name__)

SHARD_BACKLOG = Gauge("execution_shard_backlog", "Messages of the shard not yet acknowledged.", ("shard",))
SHARD_OLDEST_PLACED = Gauge(
    "execution_shard_oldest_placed_seconds", "Age of the shard's oldest order not yet at the exchange.", ("shard",)
)
SHARD_PAUSED = Gauge("execution_shard_paused", "1 while an operator has the shard paused.", ("shard",))


@dataclass(frozen=True)
class ShardView:
    record: ShardRecord
    backlog: int | None  # None while NATS cannot say


class ShardBoard:
    def __init__(self, store: ShardStore, link: JetStreamLink, owned: tuple[int, ...], refresh_seconds: float) -> None:
        self.owned = owned
        self._store = store
        self._link = link
        self._refresh_seconds = refresh_seconds
        self._paused: frozenset[int] = frozenset()

    def is_paused(self, shard: int) -> bool:
        return shard in self._paused

    async def follow(self) -> None:
        """Refreshes the pauses and the lag metrics until cancelled; a failed refresh keeps the last ones."""
        while not stop_requested():
            try:
                await self.refresh()
            except Exception as error:
                log.warning("shard refresh failed", error=repr(error))
            await asyncio.sleep(self._refresh_seconds)

    async def refresh(self) -> None:
        self._paused = await self._store.paused()
        now = datetime.now(UTC)
        for view in await self.views(self.owned):
            shard = str(view.record.shard)
            oldest = view.record.oldest_placed_at
            SHARD_OLDEST_PLACED.labels(shard).set((now - oldest).total_seconds() if oldest else 0)
            SHARD_PAUSED.labels(shard).set(1 if view.record.paused else 0)
            if view.backlog is not None:
                SHARD_BACKLOG.labels(shard).set(view.backlog)

    async def views(self, shards: tuple[int, ...]) -> list[ShardView]:
        records = await self._store.records(shards)
        backlogs = await self._backlogs()
        return [ShardView(record, None if backlogs is None else backlogs.get(record.shard, 0)) for record in records]

    async def pause(self, shard: int, reason: str, operator: str) -> None:
        await self._store.pause(shard, reason, operator)
        self._paused = self._paused | {shard}
        log.warning("shard paused", shard=shard, reason=reason, operator=operator)

    async def resume(self, shard: int, operator: str) -> None:
        await self._store.resume(shard)
        self._paused = self._paused - {shard}
        log.warning("shard resumed", shard=shard, operator=operator)

    async def _backlogs(self) -> dict[int, int] | None:
        """Every shard's backlog, or None while NATS cannot say (a shard with no consumer yet has none)."""
        if not self._link.connected:
            return None
        try:
            return await shard_backlogs(await self._link.jetstream())
        except Exception as error:
            log.debug("shard backlogs unknown", error=repr(error))
            return None
