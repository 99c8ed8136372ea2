"""Logs never carry a secret: not under a secret's name, and not as secret-shaped text inside another value."""

from __future__ import annotations

import json
import logging

import pytest
import structlog

from brokerage.telemetry import REDACTED, configure_logging, get_logger, redact

JWT = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiI3In0.c2lnbmF0dXJl"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (f"authorization: Bearer {JWT}", f"authorization: Bearer {REDACTED}"),
        (f"token {JWT} refused", f"token {REDACTED} refused"),
        ("Bearer s3cret", f"Bearer {REDACTED}"),
        ("postgresql://broker:hunter2@db:5432/brokerage", f"postgresql://{REDACTED}@db:5432/brokerage"),
        ("host=db password=hunter2 user=x", f"host=db password={REDACTED} user=x"),
        ("order o-1 of customer 7 filled", "order o-1 of customer 7 filled"),
    ],
)
def test_secret_shaped_text_is_redacted(text: str, expected: str) -> None:
    assert redact(text) == expected


def test_log_lines_carry_no_secret(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("INFO")
    try:
        get_logger("test").info(
            f"refused {JWT}", authorization=f"Bearer {JWT}", callback_token="s3cret", order_id="o-1"
        )
        logging.getLogger("grpc").warning("metadata authorization: Bearer %s", JWT)
    finally:
        structlog.reset_defaults()
    out = capsys.readouterr().out

    assert "s3cret" not in out and JWT not in out
    line = json.loads(out.splitlines()[0])
    assert line["order_id"] == "o-1" and line["authorization"] == REDACTED
