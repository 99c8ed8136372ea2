"""Cumulative counters read at a window's edges, whose differences explain the CPU figures.

PostgreSQL: WAL records, full-page images and bytes (pg_stat_wal), checkpoints (pg_stat_bgwriter). OrderService:
outbox relay batches and the messages in them (its Prometheus endpoint).
"""

from __future__ import annotations

import urllib.request
from collections.abc import Callable, Mapping

import psycopg
from prometheus_client.parser import text_string_to_metric_families

CounterSource = Callable[[], dict[str, float]]

_POSTGRES = """
SELECT w.wal_records, w.wal_fpi, w.wal_bytes, b.checkpoints_timed + b.checkpoints_req
  FROM pg_stat_wal w, pg_stat_bgwriter b
"""
_RELAY_SAMPLES = {"outbox_batch_size_count": "relay_batches", "outbox_batch_size_sum": "relay_messages"}


def postgres_counters(database_url: str) -> CounterSource:
    """WAL records, full-page images (the first change of a page after a checkpoint), bytes, and checkpoints."""

    def read() -> dict[str, float]:
        with psycopg.connect(database_url, autocommit=True) as conn:
            row = conn.execute(_POSTGRES).fetchone()
        assert row is not None
        return dict(zip(("wal_records", "wal_fpi", "wal_bytes", "checkpoints"), map(float, row), strict=True))

    return read


def relay_counters(metrics_port: int) -> CounterSource:
    """The outbox relay's published batches and messages, from the service's /metrics."""

    def read() -> dict[str, float]:
        url = f"http://127.0.0.1:{metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as response:
            text = response.read().decode()
        found = {name: 0.0 for name in _RELAY_SAMPLES.values()}
        for family in text_string_to_metric_families(text):
            for metric in family.samples:
                if metric.name in _RELAY_SAMPLES:
                    found[_RELAY_SAMPLES[metric.name]] = metric.value
        return found

    return read


def read_all(sources: Mapping[str, CounterSource]) -> dict[str, float]:
    """Every source's counters, in one mapping."""
    values: dict[str, float] = {}
    for source in sources.values():
        values.update(source())
    return values


def differences(before: Mapping[str, float], after: Mapping[str, float]) -> dict[str, float]:
    return {name: after[name] - before.get(name, 0.0) for name in after}
