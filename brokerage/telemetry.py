"""Telemetry every process shares: JSON logs that carry order and customer ids, and never a secret, and the
Prometheus endpoint."""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Iterator, MutableMapping
from contextlib import contextmanager
from typing import Any

import structlog
from prometheus_client import start_http_server

# What a secret looks like wherever it might slip into a line: a field named for one, a JWT (three base64url parts,
# the first a JSON header), a bearer credential, a password in a connection URL or string.
SECRET_FIELD = re.compile(r"authorization|token|secret|password|passwd|credential|private_key", re.IGNORECASE)
_SECRET_TEXT = re.compile(
    r"eyJ[\w-]*\.[\w-]+\.[\w-]*"  # a JWT
    r"|(?<=Bearer )\S+"
    r"|(?<=://)[^/@\s:]+:[^/@\s]+(?=@)"  # user:password@ in a URL
    r"|(?<=password=)\S+",
    re.IGNORECASE,
)
REDACTED = "[redacted]"


def redact(text: str) -> str:
    return _SECRET_TEXT.sub(REDACTED, text)


def _redact_secrets(_logger: Any, _method: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """Last before rendering: no value under a secret's name, and no secret-shaped text in any value."""
    for key, value in event.items():
        if SECRET_FIELD.search(key) and key != "event":
            event[key] = REDACTED
        elif isinstance(value, str):
            event[key] = redact(value)
    return event


class _RedactingFilter(logging.Filter):
    """The same for the libraries' own log records (grpc, psycopg, nats), which do not go through structlog."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = redact(record.getMessage())
        record.args = None
        return True


def configure_logging(level: str = "INFO") -> None:
    """One JSON object per line on stdout; ids bound with `log_context` appear on every line they cover."""
    logging.basicConfig(format="%(message)s", stream=sys.stdout, level=level)
    for handler in logging.getLogger().handlers:
        handler.addFilter(_RedactingFilter())
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            _redact_secrets,
            structlog.processors.JSONRenderer(),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelNamesMapping()[level]),
        logger_factory=structlog.PrintLoggerFactory(sys.stdout),
        cache_logger_on_first_use=True,
    )


def get_logger(name: str) -> Any:
    return structlog.get_logger(logger_name=name)


@contextmanager
def log_context(**ids: Any) -> Iterator[None]:
    """Binds ids (order_id, customer_id, ...) to every log line written inside the block, also in awaited code."""
    with structlog.contextvars.bound_contextvars(**ids):
        yield


def serve_metrics(port: int, host: str = "0.0.0.0") -> int:
    """Starts the Prometheus /metrics endpoint on a thread; returns the port it listens on."""
    server, _thread = start_http_server(port, addr=host)
    return int(server.server_port)
