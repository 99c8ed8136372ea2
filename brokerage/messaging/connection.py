"""One NATS connection per process, made lazily so a process starts (and keeps its outbox) while NATS is down; as
the process's own NATS user over TLS where the settings say so."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nats
from nats.aio.client import Client
from nats.js import JetStreamContext

from brokerage.background import stop_requested
from brokerage.settings import Settings
from brokerage.telemetry import get_logger

log = get_logger(__name__)
OnConnected = Callable[[JetStreamContext], Awaitable[None]]


@dataclass(frozen=True)
class NatsAccess:
    """Where NATS is and who we are there."""

    url: str
    user: str = ""
    password: str = ""
    tls_ca_file: str = ""

    @classmethod
    def of(cls, settings: Settings) -> NatsAccess:
        """From the settings, the password read from its file once, at start."""
        password = Path(settings.nats_password_file).read_text().strip() if settings.nats_password_file else ""
        return cls(settings.nats_url, settings.nats_user, password, settings.nats_tls_ca_file)

    def options(self, name: str) -> dict[str, Any]:
        """nats.connect's arguments for a process of this name: with a user, its credentials and an inbox prefix of
        its own (`_INBOX_<user>`), so that the user may be allowed to subscribe to its own replies alone; TLS."""
        servers = [url.strip() for url in self.url.split(",") if url.strip()]  # a cluster: each server's URL
        options: dict[str, Any] = {"servers": servers, "name": name}
        if self.user:
            options |= {"user": self.user, "password": self.password, "inbox_prefix": f"_INBOX_{self.user}"}
        if self.tls_ca_file:
            options["tls"] = ssl.create_default_context(cafile=self.tls_ca_file)
        return options


class JetStreamLink:
    def __init__(self, access: NatsAccess | str, name: str, on_connected: OnConnected | None = None) -> None:
        self._access = NatsAccess(access) if isinstance(access, str) else access
        self._name = name
        self._on_connected = on_connected
        self._client: Client | None = None
        self._js: JetStreamContext | None = None
        self._lock = asyncio.Lock()

    @property
    def connected(self) -> bool:
        return self._client is not None and self._client.is_connected

    async def jetstream(self) -> JetStreamContext:
        """The JetStream context, connecting first if needed; raises while NATS cannot be reached."""
        await self.client()
        assert self._js is not None
        return self._js

    async def client(self) -> Client:
        """The core NATS client (plain publish and subscribe), connecting first if needed."""
        async with self._lock:
            if self._client is None:
                client = await nats.connect(
                    **self._access.options(self._name),
                    connect_timeout=2,
                    max_reconnect_attempts=-1,  # keep trying for ever, also for the first connection
                    reconnect_time_wait=1.0,
                    error_cb=_log_error,
                    disconnected_cb=_log_disconnected,
                    reconnected_cb=_log_reconnected,
                )
                js = client.jetstream()
                try:
                    if self._on_connected:
                        await self._on_connected(js)
                except BaseException:
                    await client.close()
                    raise
                self._client, self._js = client, js
            return self._client

    async def stay_connected(self, retry_seconds: float = 1.0) -> None:
        """Connects, trying until it succeeds, for a process whose own work never connects but whose side tasks
        (the doorbell) use the connection when there is one. Reconnects after that are the client's own."""
        while not stop_requested() and not self.connected:
            try:
                await self.client()
            except Exception as error:
                log.debug("nats not reachable yet", error=repr(error))
                await asyncio.sleep(retry_seconds)

    async def close(self) -> None:
        """Drains pending acknowledgements when connected; otherwise just closes."""
        client, self._client, self._js = self._client, None, None
        if client is None:
            return
        try:
            await (client.drain() if client.is_connected else client.close())
        except Exception as error:  # shutting down: nothing is left to save
            log.warning("nats close failed", error=repr(error))


async def _log_error(error: Exception) -> None:
    log.warning("nats error", error=str(error))


async def _log_disconnected() -> None:
    log.warning("nats disconnected")


async def _log_reconnected() -> None:
    log.info("nats reconnected")
