"""Applies the SQL migrations in migrations/ with yoyo: `python -m brokerage.storage.migrate`.

The migrations are how a deployed database is built and changed. schema.sql is the schema they make, readable in one
file (a test proves the two the same); a new database can also be made from it at once (load_snapshot: the tests'
template), every migration then recorded as applied."""

from __future__ import annotations

import logging
from pathlib import Path

import psycopg
from yoyo import get_backend, read_migrations

from brokerage.settings import load_settings
from brokerage.telemetry import configure_logging, get_logger

MIGRATIONS = Path(__file__).parent / "migrations"
SNAPSHOT = Path(__file__).parent / "schema.sql"
log = get_logger(__name__)


def yoyo_url(database_url: str) -> str:
    """yoyo picks its driver from the URL scheme; ours is psycopg 3."""
    scheme, rest = database_url.split("://", 1)
    return f"postgresql+psycopg://{rest}" if scheme in {"postgres", "postgresql"} else database_url


def apply(database_url: str, through: str | None = None) -> int:
    """Applies every pending migration (with `through`, those up to the one whose id starts with it) under yoyo's
    lock; returns how many were applied."""
    backend = get_backend(yoyo_url(database_url))
    try:
        migrations = read_migrations(str(MIGRATIONS))
        with backend.lock():
            pending = backend.to_apply(migrations)
            if through is not None:
                ids = [m.id for m in pending]
                last = next(i for i, name in enumerate(ids) if name.startswith(through))
                pending = pending[: last + 1]
            backend.apply_migrations(pending)
        return len(pending)
    finally:
        backend.connection.close()


def load_snapshot(database_url: str) -> int:
    """Makes an empty database's schema from schema.sql in one transaction, and records every migration as applied
    (yoyo's own tables are made first); returns how many."""
    backend = get_backend(yoyo_url(database_url))
    try:
        migrations = read_migrations(str(MIGRATIONS))
        with backend.lock():
            if backend.to_rollback(migrations):
                raise RuntimeError("the database has migrations applied: the snapshot is for an empty one")
            with psycopg.connect(database_url) as conn:
                conn.execute(SNAPSHOT.read_text())  # type: ignore[arg-type]  # a script of our own, no parameters
            backend.mark_migrations(backend.to_apply(migrations))
        return len(migrations)
    finally:
        backend.connection.close()


def main() -> None:
    settings = load_settings()
    configure_logging(settings.log_level)
    logging.getLogger("yoyo").setLevel(logging.WARNING)  # one JSON line below says what was applied
    applied = apply(settings.dsn)
    log.info("migrations applied", applied=applied)


if __name__ == "__main__":
    main()
