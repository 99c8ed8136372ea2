"""Applies the SQL migrations in migrations/ with yoyo: `python -m brokerage.storage.migrate`."""

from __future__ import annotations

import logging
from pathlib import Path

from yoyo import get_backend, read_migrations

from brokerage.settings import load_settings
from brokerage.telemetry import configure_logging, get_logger

MIGRATIONS = Path(__file__).parent / "migrations"
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


def main() -> None:
    settings = load_settings()
    configure_logging(settings.log_level)
    logging.getLogger("yoyo").setLevel(logging.WARNING)  # one JSON line below says what was applied
    applied = apply(settings.dsn)
    log.info("migrations applied", applied=applied)


if __name__ == "__main__":
    main()
