"""The schema snapshot (brokerage/storage/schema.sql) is exactly what the migrations make: every table, column,
constraint, index, function, trigger, view, type and aggregate, the privileges granted on them, and the transitions'
rows. So a reader finds the current definition of everything in one file, and the tests, whose template is built from
that file, test the schema the migrations give a deployment."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import psycopg
import pytest

from brokerage.storage.catalog import describe
from brokerage.storage.migrate import apply, load_snapshot
from devtools.stack import PostgresCluster

pytestmark = pytest.mark.integration


@pytest.fixture
def two_databases(postgres_cluster: PostgresCluster) -> Iterator[tuple[str, str]]:
    names = [f"schema_{kind}_{uuid.uuid4().hex[:8]}" for kind in ("migrated", "snapshot")]
    for name in names:
        postgres_cluster.create_database(name)
    yield postgres_cluster.url(names[0]), postgres_cluster.url(names[1])
    for name in names:
        postgres_cluster.drop_database(name)


def test_the_migrations_from_scratch_give_exactly_the_snapshot(two_databases: tuple[str, str]) -> None:
    migrated, snapshot = two_databases
    apply(migrated)
    load_snapshot(snapshot)

    with psycopg.connect(migrated) as a, psycopg.connect(snapshot) as b:
        by_migrations, by_snapshot = describe(a), describe(b)

    differing = {
        name: (by_migrations.get(name), by_snapshot.get(name))
        for name in by_migrations.keys() | by_snapshot.keys()
        if by_migrations.get(name) != by_snapshot.get(name)
    }
    assert differing == {}, "\n".join(f"{n}:\n  migrations: {m}\n  snapshot:   {s}" for n, (m, s) in differing.items())
    assert len(by_migrations) > 250  # a description of a whole schema, not of an empty one


def test_a_database_made_from_the_snapshot_is_up_to_date_for_the_migrations(two_databases: tuple[str, str]) -> None:
    _, snapshot = two_databases
    load_snapshot(snapshot)
    assert apply(snapshot) == 0
