"""Production's NATS users (deploy/k8s/nats/values.yaml, its authorization block as written) on a real nats-server
over TLS: the setup user makes the stream and consumers; OrderService's user publishes orders and reads the stream's
settings but may make no stream; a worker's pulls and answers its shard's messages; CallbackService's rings the
doorbell and may publish no order; each connects as NatsAccess does, with its password from a file."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import nats
import pytest
import yaml
from nats.js.api import StreamConfig

from brokerage.messaging.connection import JetStreamLink, NatsAccess
from brokerage.messaging.consumers import shard_consumer_name
from brokerage.messaging.setup import set_up
from brokerage.messaging.streams import (
    EXECUTIONS_STREAM,
    ORDERS_STREAM,
    StreamMissing,
    ensure_executions_stream,
    ensure_orders_stream,
)
from brokerage.settings import Settings
from devtools.stack import NatsServer, free_port
from devtools.tls import DevCertificates
from tests.integration.conftest import make_settings

pytestmark = pytest.mark.integration

VALUES = Path(__file__).resolve().parents[2] / "deploy" / "k8s" / "nats" / "values.yaml"
USERS = ("setup", "order-service", "execution-service", "callback-service")


def authorization(passwords: dict[str, str]) -> dict[str, object]:
    """The values' authorization block, each `<< $X_PASSWORD >>` replaced by the user's password."""
    block = yaml.safe_load(VALUES.read_text())["config"]["merge"]["authorization"]
    for user in block["users"]:
        assert re.fullmatch(r"<< \$[A-Z_]+_PASSWORD >>", user["password"])
        user["password"] = passwords[user["user"]]
    return dict(block)


@pytest.fixture(scope="module")
def secured_nats(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[NatsServer, dict[str, Path], Path]]:
    directory = tmp_path_factory.mktemp("nats-users")
    certificates = DevCertificates(directory / "tls").ensure()
    passwords = {user: f"pw-{user}-{i}" for i, user in enumerate(USERS)}
    password_files = {}
    for user, password in passwords.items():
        password_files[user] = directory / f"{user}.password"
        password_files[user].write_text(password + "\n")
    server_files = certificates.files("order-service")  # any certificate valid for 127.0.0.1 serves here
    config = {
        "authorization": authorization(passwords),
        "tls": {"cert_file": str(server_files.cert), "key_file": str(server_files.key)},
    }
    config_file = directory / "nats.conf"
    config_file.write_text(json.dumps(config))  # nats-server reads JSON as its configuration
    server = NatsServer(directory / "store", free_port(), config_file)
    server.start()
    try:
        yield server, password_files, certificates.ca()
    finally:
        server.stop()


def settings_as(user: str, secured: tuple[NatsServer, dict[str, Path], Path], **more: object) -> Settings:
    server, passwords, ca = secured
    return make_settings(
        "postgresql://unused@127.0.0.1/unused",
        server.url,
        nats_user=user,
        nats_password_file=str(passwords[user]),
        nats_tls_ca_file=str(ca),
        **more,
    )


@pytest.fixture(scope="module")
async def stream_made(secured_nats: tuple[NatsServer, dict[str, Path], Path]) -> AsyncIterator[None]:
    await set_up(settings_as("setup", secured_nats))
    yield


async def connected(settings: Settings, name: str) -> nats.NATS:
    return await nats.connect(**NatsAccess.of(settings).options(name), connect_timeout=5, allow_reconnect=False)


async def test_order_service_publishes_orders_but_makes_no_stream(
    secured_nats: tuple[NatsServer, dict[str, Path], Path], stream_made: None
) -> None:
    settings = settings_as("order-service", secured_nats, nats_manage_streams=False)
    link = JetStreamLink(NatsAccess.of(settings), "order-service", lambda js: ensure_orders_stream(js, settings))
    try:
        js = await link.jetstream()  # the stream's settings read and checked
        ack = await js.publish("orders.3", b"order", headers={"Nats-Msg-Id": "o-1"}, timeout=5)
        with pytest.raises(Exception):  # noqa: B017  (a permissions violation: no answer comes)
            await js.add_stream(StreamConfig(name="ROGUE", subjects=["rogue.>"]), timeout=2)
    finally:
        await link.close()

    assert ack.stream == ORDERS_STREAM


async def test_a_worker_pulls_and_answers_its_shards_messages(
    secured_nats: tuple[NatsServer, dict[str, Path], Path], stream_made: None
) -> None:
    settings = settings_as("order-service", secured_nats)
    publisher = await connected(settings, "order-service")
    worker = await connected(settings_as("execution-service", secured_nats), "execution-0-7")
    try:
        await publisher.jetstream().publish("orders.5", b"wake", timeout=5)
        subscription = await worker.jetstream().pull_subscribe_bind(
            consumer=shard_consumer_name(5), stream=ORDERS_STREAM
        )
        (message,) = await subscription.fetch(1, timeout=5)
        await message.ack_sync(timeout=5)
        infos = await worker.jetstream().consumers_info(ORDERS_STREAM)
        with pytest.raises(Exception):  # noqa: B017
            await worker.jetstream().delete_consumer(ORDERS_STREAM, shard_consumer_name(5))
    finally:
        await publisher.close()
        await worker.close()

    assert message.data == b"wake"
    assert len(infos) == settings.shard_count


async def test_callback_service_rings_the_doorbell_and_publishes_no_order(
    secured_nats: tuple[NatsServer, dict[str, Path], Path], stream_made: None
) -> None:
    listener = await connected(settings_as("order-service", secured_nats), "order-service")
    callback = await connected(settings_as("callback-service", secured_nats), "callback-service")
    rung = asyncio.Event()

    async def ring(_message: object) -> None:
        rung.set()

    try:
        await listener.subscribe("order_events.>", cb=ring)
        await listener.flush()
        await callback.publish("order_events.Nw", b"")
        await asyncio.wait_for(rung.wait(), timeout=5)
        with pytest.raises(Exception):  # noqa: B017  (no acknowledgement: the publish was refused)
            await callback.jetstream().publish("orders.1", b"forged", timeout=2)
    finally:
        await listener.close()
        await callback.close()


async def test_callback_service_publishes_the_post_trade_feed_and_makes_no_stream(
    secured_nats: tuple[NatsServer, dict[str, Path], Path], stream_made: None
) -> None:
    settings = settings_as("callback-service", secured_nats, nats_manage_streams=False)
    link = JetStreamLink(NatsAccess.of(settings), "callback-service", lambda js: ensure_executions_stream(js, settings))
    try:
        js = await link.jetstream()  # the feed's stream read: the setup made it
        headers = {"Nats-Msg-Id": "E-1"}
        first = await js.publish("executions.3", b"{}", headers=headers, timeout=5)
        again = await js.publish("executions.3", b"{}", headers=headers, timeout=5)
    finally:
        await link.close()

    assert first.stream == EXECUTIONS_STREAM and again.duplicate and again.seq == first.seq


async def test_without_stream_management_a_missing_stream_is_the_setup_jobs_to_make(
    secured_nats: tuple[NatsServer, dict[str, Path], Path],
) -> None:
    settings = settings_as("setup", secured_nats, nats_manage_streams=False)
    client = await connected(settings, "setup")
    try:
        await client.jetstream().delete_stream(ORDERS_STREAM)
        with pytest.raises(StreamMissing):
            await ensure_orders_stream(client.jetstream(), settings)
    finally:
        await client.close()
    await set_up(settings_as("setup", secured_nats))  # and the setup makes it again
