"""What one measured level is, and the figures derived from it: throughput, percentiles, CPU per call, medians."""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from benchmarks.cpu import MACHINE_BUSY, MACHINE_TOTAL

SUCCESS = {"place": "ORDER_STATUS_PLACED", "place-info": "ORDER_STATUS_PLACED", "echo": "ECHOED"}


def percentile(values: Sequence[float], q: float) -> float:
    """The nearest-rank q-quantile (0 < q <= 1) of values; NaN when there are none."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


@dataclass
class Measurement:
    """One run of one level: `kind` is place (WARNING logs), place-info (INFO logs) or echo."""

    kind: str
    concurrency: int
    rep: int
    seconds: float
    succeeded: int
    p50_ms: float
    p99_ms: float
    max_ms: float
    outcomes_window: dict[str, int]
    outcomes_all: dict[str, int]
    cpu_seconds: dict[str, float]
    outbox_unpublished: int | None = None
    pg_backends: dict[str, float] = field(default_factory=dict)  # average client backends per state
    counters: dict[str, float] = field(default_factory=dict)  # WAL, checkpoints, relay batches in the window
    late_start: bool = False  # a load generator made its first call after the window opened

    @property
    def per_second(self) -> float:
        return self.succeeded / self.seconds

    @property
    def failed_window(self) -> int:
        """Calls completed in the window that did not succeed (non-PLACED statuses and RPC errors)."""
        return sum(self.outcomes_window.values()) - self.succeeded

    @property
    def failed_all(self) -> int:
        """Calls that did not succeed, warm-up and drain included."""
        return sum(n for outcome, n in self.outcomes_all.items() if outcome != SUCCESS[self.kind])

    def cpu_us_per_call(self, group: str) -> float:
        return self.cpu_seconds.get(group, 0.0) * 1e6 / self.succeeded if self.succeeded else math.nan

    def cores(self, group: str) -> float:
        """Average cores a group used during the window."""
        return self.cpu_seconds.get(group, 0.0) / self.seconds

    def other_cpu_seconds(self, groups: Iterable[str]) -> float:
        """Machine CPU used outside the named groups: other processes (the shared machine) and the kernel."""
        return self.cpu_seconds[MACHINE_BUSY] - sum(self.cpu_seconds.get(g, 0.0) for g in groups)

    @property
    def machine_busy_fraction(self) -> float:
        return self.cpu_seconds[MACHINE_BUSY] / self.cpu_seconds[MACHINE_TOTAL]

    def as_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["per_second"] = round(self.per_second, 1)
        data["failed_window"] = self.failed_window
        data["failed_all"] = self.failed_all
        return data


def measurement(
    kind: str,
    concurrency: int,
    rep: int,
    seconds: float,
    outputs: Sequence[Mapping[str, Any]],
    cpu_seconds: dict[str, float],
) -> Measurement:
    """Merges the load generators' outputs (outcomes and latencies) into one Measurement."""
    latencies = [x for out in outputs for x in out["latencies_ms"]]
    window = _merged(out["outcomes_window"] for out in outputs)
    return Measurement(
        kind=kind,
        concurrency=concurrency,
        rep=rep,
        seconds=seconds,
        succeeded=window.get(SUCCESS[kind], 0),
        p50_ms=percentile(latencies, 0.50),
        p99_ms=percentile(latencies, 0.99),
        max_ms=max(latencies, default=math.nan),
        outcomes_window=window,
        outcomes_all=_merged(out["outcomes_all"] for out in outputs),
        cpu_seconds=cpu_seconds,
    )


def _merged(counts: Iterable[Mapping[str, int]]) -> dict[str, int]:
    total: dict[str, int] = {}
    for count in counts:
        for key, n in count.items():
            total[key] = total.get(key, 0) + n
    return total


@dataclass(frozen=True)
class Summary:
    """The median over repetitions of one kind at one level; failures are summed."""

    kind: str
    concurrency: int
    reps: int
    per_second: float
    p50_ms: float
    p99_ms: float
    failed_window: int
    failed_all: int
    outcomes_all: dict[str, int]
    cpu_us: dict[str, float]  # median CPU µs per successful call, per group (server_loop within server) and "other"
    cores: dict[str, float]  # median cores used, per group
    machine_busy: float  # median fraction of the machine busy
    outbox_unpublished: int | None
    pg_backends: dict[str, float]  # mean over repetitions of the average client backends per state
    per_call: dict[str, float]  # median counter difference per successful call (WAL bytes, FPIs, relay batches)
    counters: dict[str, float]  # median counter differences in the window


def summarize(runs: Sequence[Measurement], groups: Sequence[str]) -> Summary:
    """Medians of runs of the same kind and level (a single run is its own median); `groups` are the disjoint
    process groups whose sum is subtracted from the machine's busy time to give "other"."""
    first = runs[0]
    unpublished = [r.outbox_unpublished for r in runs if r.outbox_unpublished is not None]
    measured = [g for g in first.cpu_seconds if g not in {MACHINE_BUSY, MACHINE_TOTAL}]
    cpu_us = {g: _median(r.cpu_us_per_call(g) for r in runs) for g in measured}
    cpu_us["other"] = _median(r.other_cpu_seconds(groups) * 1e6 / max(r.succeeded, 1) for r in runs)
    return Summary(
        kind=first.kind,
        concurrency=first.concurrency,
        reps=len(runs),
        per_second=_median(r.per_second for r in runs),
        p50_ms=_median(r.p50_ms for r in runs),
        p99_ms=_median(r.p99_ms for r in runs),
        failed_window=sum(r.failed_window for r in runs),
        failed_all=sum(r.failed_all for r in runs),
        outcomes_all=_merged(r.outcomes_all for r in runs),
        cpu_us=cpu_us,
        cores={g: _median(r.cores(g) for r in runs) for g in measured},
        machine_busy=_median(r.machine_busy_fraction for r in runs),
        outbox_unpublished=max(unpublished) if unpublished else None,
        pg_backends={k: v / len(runs) for k, v in _merged_float(r.pg_backends for r in runs).items()},
        per_call={k: _median(r.counters.get(k, 0.0) / max(r.succeeded, 1) for r in runs) for k in first.counters},
        counters={k: _median(r.counters.get(k, 0.0) for r in runs) for k in first.counters},
    )


def _merged_float(counts: Iterable[Mapping[str, float]]) -> dict[str, float]:
    total: dict[str, float] = {}
    for count in counts:
        for key, n in count.items():
            total[key] = total.get(key, 0.0) + n
    return dict(sorted(total.items(), key=lambda item: -item[1]))


def _median(values: Iterable[float]) -> float:
    return statistics.median(list(values))
