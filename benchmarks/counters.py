"""Cumulative counters read at a window's edges, whose differences explain the CPU figures.

PostgreSQL: WAL records, full-page images and bytes (pg_stat_wal), checkpoints (pg_stat_bgwriter). OrderService:
outbox relay batches and the messages in them; any service: the counters of its Prometheus endpoint.
"""

from __future__ import annotations

import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence

import psycopg
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

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
    return metrics_counters([metrics_port], _RELAY_SAMPLES)


def metrics_counters(
    metrics_ports: Sequence[int], samples: Mapping[str, str], split_by: str | tuple[str, ...] = ""
) -> CounterSource:
    """Prometheus samples (name -> our name) summed over the processes on these /metrics ports and over their
    labels; with split_by, one sum per value of that label, named `<our name>:<value>` (per values of several
    labels, where a sample has them all: `<our name>:<value>/<value>`)."""
    labels = (split_by,) if isinstance(split_by, str) and split_by else tuple(split_by)

    def read() -> dict[str, float]:
        found = {name: 0.0 for name in samples.values()}
        for port in metrics_ports:
            for metric in _samples(port):
                if metric.name in samples:
                    name = samples[metric.name]
                    if labels and all(label in metric.labels for label in labels):
                        name = f"{name}:{'/'.join(metric.labels[label] for label in labels)}"
                    found[name] = found.get(name, 0.0) + metric.value
        return found

    return read


def _samples(metrics_port: int) -> Iterator[Sample]:
    url = f"http://127.0.0.1:{metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=5) as response:
        text = response.read().decode()
    for family in text_string_to_metric_families(text):
        yield from family.samples


def read_all(sources: Mapping[str, CounterSource]) -> dict[str, float]:
    """Every source's counters, in one mapping."""
    values: dict[str, float] = {}
    for source in sources.values():
        values.update(source())
    return values


def differences(before: Mapping[str, float], after: Mapping[str, float]) -> dict[str, float]:
    return {name: after[name] - before.get(name, 0.0) for name in after}
