"""Telemetry every process shares: JSON logs that carry order and customer ids, and the Prometheus endpoint."""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import structlog
from prometheus_client import start_http_server


def configure_logging(level: str = "INFO") -> None:
    """One JSON object per line on stdout; ids bound with `log_context` appear on every line they cover."""
    logging.basicConfig(format="%(message)s", stream=sys.stdout, level=level)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
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
