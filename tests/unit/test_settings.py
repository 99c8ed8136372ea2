"""The database password read from its file (BROKER_DATABASE_PASSWORD_FILE): once, at start, and never shown."""

from __future__ import annotations

from pathlib import Path

import psycopg.conninfo
import pytest
from pydantic import ValidationError

from brokerage.settings import Settings

URL = "postgresql://orders@db.example:5432/brokerage?sslmode=verify-full"


def test_the_password_file_goes_into_the_connection_string_alone(tmp_path: Path) -> None:
    secret = tmp_path / "password"
    secret.write_text("s3cr@t/:x%\n")  # as a mounted Secret's key may end: with a newline

    settings = Settings(database_url=URL, database_password_file=secret)  # type: ignore[arg-type]
    secret.write_text("rotated")  # read once, at start: a rotation takes a restart

    parsed = psycopg.conninfo.conninfo_to_dict(settings.dsn)
    assert (parsed["user"], parsed["password"], parsed["host"], parsed["sslmode"]) == (
        "orders",
        "s3cr@t/:x%",
        "db.example",
        "verify-full",
    )
    assert "s3cr" not in repr(settings) and "s3cr" not in str(settings.model_dump())
    assert settings.model_copy(update={"grpc_port": 0}).dsn == settings.dsn


def test_without_a_file_the_url_is_the_connection_string() -> None:
    assert Settings(database_url=URL).dsn == URL  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("url", "content", "problem"),
    [
        (URL, None, "cannot be read"),
        (URL, "\n", "is empty"),
        ("postgresql://orders:other@db.example/brokerage", "secret", "carries a password"),
    ],
)
def test_a_password_file_that_cannot_serve_is_a_settings_error(
    tmp_path: Path, url: str, content: str | None, problem: str
) -> None:
    secret = tmp_path / "password"
    if content is not None:
        secret.write_text(content)
    with pytest.raises(ValidationError, match=problem):
        Settings(database_url=url, database_password_file=secret)  # type: ignore[arg-type]
