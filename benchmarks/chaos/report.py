"""chaos.md and chaos.json: per seed and summed, what was sent and injected, what every invariant found, and, from
the isolated faults, what each kind of fault cost (p50 and max over its occurrences)."""

from __future__ import annotations

import json
import platform
import statistics
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path

from benchmarks.chaos.checks import DOUBLED, FIFO, LOST
from benchmarks.chaos.plan import FaultKind
from benchmarks.chaos.recovery import Recovery
from benchmarks.chaos.run import SeedResult

VENUE_COUNTERS = {
    "exchange_malformed_reports_total": "reports sent malformed",
    "exchange_duplicate_submits_total": "duplicate submits seen",
    "exchange_reports_delivered_total": "report copies delivered",
}


def calibration_ms() -> float:
    """The median of five runs of a fixed pure-Python loop: this machine's speed today, beside the figures."""
    runs = []
    for _ in range(5):
        began = time.perf_counter()
        sum(i * i for i in range(1_000_000))
        runs.append((time.perf_counter() - began) * 1000)
    return round(statistics.median(runs), 1)


def write_results(results: list[SeedResult], directory: Path, replay: Callable[[int, int], str]) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    summary = _summary(results)
    document: dict[str, object] = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"python": platform.python_version(), "calibration_ms": calibration_ms()},
        "summary": summary,
        "recovery": _recovery_table(results),
        "seeds": [
            {
                **{k: v for k, v in asdict(r).items() if k not in ("verdicts", "recoveries")},
                "invariants": {v.name: {"count": v.count, "violations": v.violations} for v in r.verdicts},
                "recoveries": [asdict(x) for x in r.recoveries],
                "replay": replay(r.seed, r.orders),
            }
            for r in results
        ],
    }
    (directory / "chaos.json").write_text(json.dumps(document, indent=2, default=str) + "\n")
    (directory / "chaos.md").write_text(_markdown(document, results, replay))


def _summary(results: list[SeedResult]) -> dict[str, object]:
    faults = Counter(f["kind"] for r in results for f in r.faults)
    breaks: Counter[str] = Counter()
    venue: Counter[str] = Counter()
    invariants: dict[str, int] = defaultdict(int)
    for r in results:
        breaks.update(r.breaks)
        venue.update({VENUE_COUNTERS[k]: int(v) for k, v in r.venue.items() if k in VENUE_COUNTERS})
        for v in r.verdicts:
            invariants[v.name] += v.count
    windows = [f["detail"].get("without_synchronous_standby_seconds") for r in results for f in r.faults]
    windows = [w for w in windows if w is not None]
    return {
        "seeds": len(results),
        "passed": sum(r.passed for r in results),
        "calls": sum(r.orders for r in results),
        "answers": dict(sum((Counter(r.answers) for r in results), Counter())),
        "faults": {str(k): faults.get(str(k), 0) for k in FaultKind},
        "lost": invariants.get(LOST, 0),
        "doubled": invariants.get(DOUBLED, 0),
        "fifo_violations": invariants.get(FIFO, 0),
        "breaks": dict(breaks),
        "venue": dict(venue),
        "invariants": dict(invariants),
        "without_synchronous_standby_seconds_max": max(windows, default=0.0),
    }


def _recovery_table(results: list[SeedResult]) -> dict[str, dict[str, float]]:
    by_kind: dict[str, list[Recovery]] = defaultdict(list)
    for r in results:
        for x in r.recoveries:
            by_kind[x.kind].append(x)
    table = {}
    for kind in FaultKind:
        seen = by_kind.get(str(kind), [])
        if not seen:
            continue
        unavailable = [x.place_unavailable for x in seen]
        paused = [x.settlement_paused for x in seen]
        table[str(kind)] = {
            "n": len(seen),
            "lasted_p50": statistics.median(x.lasted for x in seen),
            "place_unavailable_p50": statistics.median(unavailable),
            "place_unavailable_max": max(unavailable),
            "place_error_rate_mean": round(statistics.fmean(x.place_error_rate for x in seen), 3),
            "settlement_paused_p50": statistics.median(paused),
            "settlement_paused_max": max(paused),
        }
    return table


def _markdown(document: dict[str, object], results: list[SeedResult], replay: Callable[[int, int], str]) -> str:
    s = document["summary"]
    assert isinstance(s, dict)
    lines = [
        "# Chaos: the mesh on clustered engines under mixed faults",
        "",
        f"Run {document['when']} by `make chaos` (`python -m benchmarks.chaos`); calibration "
        f"{document['machine']['calibration_ms']} ms (a fixed Python loop, median of 5; this machine's speed varies"  # type: ignore[index]
        " about 2x between days). Each seed: PostgreSQL primary + synchronous standby, three NATS servers (ORDERS"
        " R3), two OrderService replicas, cluster A of two workers and B of one, CallbackService, the simulator"
        " in chaos. SIGKILL keeps the page cache: no durability through a power loss is claimed.",
        "",
        f"**{s['passed']} of {s['seeds']} seeds passed.** Calls sent: {s['calls']}. Lost: {s['lost']}. "
        f"Doubled: {s['doubled']}. FIFO violations: {s['fifo_violations']}. Longest window without a synchronous"
        " standby (after a promotion, until the old primary rejoined):"
        f" {s['without_synchronous_standby_seconds_max']} s.",
        "",
        "## Faults injected (all seeds)",
        "",
        "| fault | injected |",
        "|---|---:|",
        *(f"| {k} | {v} |" for k, v in s["faults"].items()),
        "",
        "## Invariants (violations, all seeds)",
        "",
        "| invariant | violations |",
        "|---|---:|",
        *(f"| {k} | {v} |" for k, v in s["invariants"].items()),
        "",
        f"Answers to the load's attempts: {_inline(s['answers'])}. Breaks by kind: {_inline(s['breaks']) or 'none'}."
        f" The venue: {_inline(s['venue'])}.",
        "",
        "## Recovery, from isolated faults (one at a time, then a quiet gap)",
        "",
        "PlaceOrder unavailable: from the injection to the answer of the last failed attempt (an RPC error, or a"
        " REJECTED for a stale quote). Settlement paused: the longest stretch with no execution booked.",
        "",
        "| fault | n | lasted p50 s | PlaceOrder unavailable p50 / max s | PlaceOrder error rate (mean) "
        "| settlement paused p50 / max s |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    recovery = document["recovery"]
    assert isinstance(recovery, dict)
    for kind, x in recovery.items():
        lines.append(
            f"| {kind} | {x['n']} | {x['lasted_p50']:.1f} | {x['place_unavailable_p50']:.1f} / "
            f"{x['place_unavailable_max']:.1f} | {x['place_error_rate_mean']:.0%} | "
            f"{x['settlement_paused_p50']:.1f} / {x['settlement_paused_max']:.1f} |"
        )
    lines += [
        "",
        "## Seeds",
        "",
        "| seed | passed | s | faults | breaks | failed invariants | replay |",
        "|---|---|---:|---:|---|---|---|",
    ]
    for r in results:
        failed = "; ".join(f"{v.name} ({v.count})" for v in r.failed()) + (" stuck" if r.stuck else "") + r.error
        lines.append(
            f"| {r.seed} | {'yes' if r.passed else 'NO'} | {r.seconds:.0f} | {len(r.faults)} | {_inline(r.breaks)} "
            f"| {failed} | `{replay(r.seed, r.orders)}` |"
        )
    return "\n".join(lines) + "\n"


def _inline(counts: object) -> str:
    assert isinstance(counts, dict)
    return ", ".join(f"{k} {v}" for k, v in counts.items())
