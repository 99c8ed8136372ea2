"""The private servers of devtools.stack survive what the crash tests do to them."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import grpc
import nats
import psycopg
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from devtools.stack import NatsServer, PostgresCluster, free_port, port_open

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]


def _select_one(url: str) -> int:
    with psycopg.connect(url, connect_timeout=5) as conn:
        row = conn.execute("SELECT 1").fetchone()
    assert row is not None
    return int(row[0])


def test_postgres_cluster_restarts_after_kill_and_reuses_its_data(tmp_path: Path) -> None:
    with PostgresCluster(tmp_path / "pg", free_port()) as cluster:
        assert _select_one(cluster.url()) == 1
        cluster.create_database("scratch")
        cluster.create_database("scratch", exist_ok=True)

        cluster.kill()
        assert cluster.pid is None
        assert (cluster.data_dir / "postmaster.pid").exists()  # stale, as after a crash
        with pytest.raises(psycopg.OperationalError):
            psycopg.connect(cluster.url(), connect_timeout=2)

        cluster.restart()
        assert _select_one(cluster.url("scratch")) == 1

    again = PostgresCluster(tmp_path / "pg", free_port())  # the same data directory, another port
    with again:
        assert _select_one(again.url("scratch")) == 1
        again.create_database("copy", template="scratch")
        again.drop_database("copy")
        again.drop_database("copy")
    assert again.pid is None


@contextmanager
def _grpc_busy_in_this_process() -> Iterator[None]:
    """A gRPC server and client calling it without pause, on a thread of this process, until the block ends."""
    stop = threading.Event()

    async def call_until_stopped() -> None:
        server = grpc.aio.server()
        health_pb2_grpc.add_HealthServicer_to_server(health.aio.HealthServicer(), server)
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            while not stop.is_set():
                await asyncio.gather(*(stub.Check(health_pb2.HealthCheckRequest(), timeout=5) for _ in range(20)))
        await server.stop(None)

    caller = threading.Thread(target=asyncio.run, args=(call_until_stopped(),))
    caller.start()
    try:
        yield
    finally:
        stop.set()
        caller.join()


def test_postgres_cluster_starts_and_stops_while_grpc_is_busy_in_the_same_process(tmp_path: Path) -> None:
    # A child forked (not vforked) under busy gRPC threads ran gRPC's fork handlers and died of SIGSEGV.
    with _grpc_busy_in_this_process(), PostgresCluster(tmp_path / "pg", free_port()) as cluster:
        for _ in range(5):
            cluster.stop()
            cluster.start()
        assert _select_one(cluster.url()) == 1


async def test_nats_server_keeps_jetstream_data_across_kill(tmp_path: Path) -> None:
    with NatsServer(tmp_path / "nats", free_port()) as server:
        nc = await nats.connect(server.url)
        js = nc.jetstream()
        await js.add_stream(name="KEEP", subjects=["keep.>"])
        ack = await js.publish("keep.one", b"survives")
        await nc.close()

        server.kill()
        assert not port_open(server.port)
        server.restart()

        nc = await nats.connect(server.url)
        msg = await nc.jetstream().get_msg("KEEP", ack.seq)
        await nc.close()
        assert msg.data == b"survives"
    assert not port_open(server.port)


async def test_session_nats_server_accepts_streams(nats_url: str) -> None:
    nc = await nats.connect(nats_url)
    await nc.jetstream().add_stream(name="LEFTOVER", subjects=["leftover.>"])
    await nc.close()


async def test_fresh_nats_deletes_streams_of_earlier_tests(fresh_nats: str) -> None:
    nc = await nats.connect(fresh_nats)
    streams = await nc.jetstream().streams_info()
    await nc.close()
    assert streams == []


def test_database_url_is_a_private_clone_of_the_migrated_template(
    database_url: str, postgres_cluster: PostgresCluster, migrated_template: str
) -> None:
    count_migrations = "SELECT count(*) FROM _yoyo_migration"
    with psycopg.connect(database_url, connect_timeout=5) as conn:
        row = conn.execute(count_migrations).fetchone()
        conn.execute("CREATE TABLE only_in_this_test (x int)")
    assert row is not None and row[0] > 0
    with psycopg.connect(postgres_cluster.url(migrated_template), connect_timeout=5) as conn:
        leaked = conn.execute("SELECT to_regclass('only_in_this_test')").fetchone()
    assert leaked == (None,)
