"""Fixtures shared by the integration and end-to-end tests: one private PostgreSQL cluster and one NATS
JetStream server per session, started only when a test asks for them (unit tests do no I/O).

Each test gets its own database, cloned from a migrated template (fast), and may get a NATS server emptied of
streams. A test that kills a server should restart it; the function-scoped fixtures also start it again.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator

import nats
import pytest

from devtools.stack import NatsServer, PostgresCluster, free_port

TEMPLATE_DATABASE = "template_brokerage"


@pytest.fixture(scope="session")
def postgres_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PostgresCluster]:
    """A private PostgreSQL cluster for the whole session, on a free port."""
    with PostgresCluster(tmp_path_factory.mktemp("pg"), free_port()) as cluster:
        yield cluster


@pytest.fixture(scope="session")
def migrated_template(postgres_cluster: PostgresCluster) -> str:
    """The name of a database holding the schema, to clone test databases from: made from the snapshot (schema.sql),
    which test_schema_snapshot proves the same as the migrations' (and every migration recorded as applied)."""
    from brokerage.storage.migrate import load_snapshot

    postgres_cluster.create_database(TEMPLATE_DATABASE)
    load_snapshot(postgres_cluster.url(TEMPLATE_DATABASE))
    return TEMPLATE_DATABASE


@pytest.fixture(scope="session")
def service_logins(postgres_cluster: PostgresCluster, migrated_template: str) -> dict[str, str]:
    """A login user of each service role (brokerage.storage.grants), made once for the session's cluster: the
    role's name, the user's."""
    from brokerage.storage.grants import ROLES

    for role in ROLES:
        postgres_cluster.create_login(role.login, role.name)
    return {role.name: role.login for role in ROLES}


@pytest.fixture
def database_url(postgres_cluster: PostgresCluster, migrated_template: str) -> Iterator[str]:
    """The URL of a fresh migrated database for this test, dropped afterwards."""
    postgres_cluster.start()  # a no-op unless an earlier test killed it
    name = f"test_{uuid.uuid4().hex[:12]}"
    postgres_cluster.create_database(name, template=migrated_template)
    yield postgres_cluster.url(name)
    postgres_cluster.start()
    postgres_cluster.drop_database(name)


@pytest.fixture(scope="session")
def nats_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsServer]:
    """A private NATS JetStream server for the whole session, on a free port."""
    with NatsServer(tmp_path_factory.mktemp("nats"), free_port()) as server:
        yield server


@pytest.fixture
def nats_url(nats_server: NatsServer) -> str:
    """The session server's URL (streams left by earlier tests remain: see fresh_nats)."""
    nats_server.start()  # a no-op unless an earlier test killed it
    return nats_server.url


@pytest.fixture
async def fresh_nats(nats_url: str) -> AsyncIterator[str]:
    """The session server's URL after deleting every stream (the stream is always ORDERS)."""
    nc = await nats.connect(nats_url)
    try:
        js = nc.jetstream()
        for info in await js.streams_info():
            if info.config.name:
                await js.delete_stream(info.config.name)
    finally:
        await nc.close()
    yield nats_url
