"""The results of an execution benchmark run: a markdown report (a table per measurement, a row per shard count,
and notes drawn from the figures) and the same figures as JSON."""

from __future__ import annotations

import json
import math
import sys
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from benchmarks.cpu import MACHINE_BUSY
from benchmarks.loadgen import SKIPPED
from benchmarks.mesh import BENCH_SETTINGS, LOAD, SHUTDOWN, START_UP, Complaints
from benchmarks.report import _clean, _n, commit, machine
from devtools.mesh import CLUSTER_COUNT, REPLICAS_PER_CLUSTER
from devtools.stack import PG_SETTINGS

if TYPE_CHECKING:
    from benchmarks.execution import Level, Options, Phase, Run

NAME = "execution"
# Disjoint process groups: their sum, subtracted from the machine's busy time, leaves "other".
GROUPS = ("order_service", "exchange", "workers", "postgres", "nats", "client")
GROUP_NAMES = {
    "order_service": "OrderService",
    "exchange": "exchange simulator",
    "workers": "workers",
    "postgres": "PostgreSQL",
    "nats": "NATS",
    "client": "load generator",
}
SUBMIT_METHOD = "SubmitOrders"  # each order on the workers' stream, as execution_exchange_seconds labels it
PLACEMENT_SHORTFALL = 0.95  # placed below this share of the offered rate: the steady phase overloaded placement
KEPT_UP = 0.95  # submitted at least this share of the placement rate: the workers kept pace


def header_lines(run: Run, options: Options, started: float, host: dict[str, Any]) -> list[str]:
    date = datetime.fromtimestamp(started, UTC).strftime("%Y-%m-%d %H:%M UTC")
    minutes = (datetime.now(UTC).timestamp() - started) / 60
    versions_text = ", ".join(f"{k} {v}" for k, v in run.versions.items())
    pg = ", ".join(f"{k}={v}" for k, v in PG_SETTINGS.items() if k != "listen_addresses")
    settings = ", ".join(f"{k}={v}" for k, v in BENCH_SETTINGS.items())
    database = "".join(f", {k}={v}" for k, v in options.pg_settings.items())
    workers = CLUSTER_COUNT * REPLICAS_PER_CLUSTER
    return [
        f"# Execution benchmark: placed to submitted ({date})",
        "",
        f"- **Command:** `{options.command}` (from the repository root; `make bench-execution` runs the defaults). "
        f"Took {minutes:.1f} min. Commit {commit()[:12]} (the working tree may hold uncommitted changes).",
        f"- **Machine:** nproc={host['nproc']}, {host['cpu']}, {host['memory_gib']} GiB, Linux {host['kernel']}. "
        "Shared: PostgreSQL, NATS, every service and the load generator run on it, and so may unrelated work "
        "(the `other` CPU column), so figures are noisy. Its speed: "
        f"{run.calibration.describe() if run.calibration else 'not calibrated'}.",
        f"- **Versions:** {versions_text}.",
        f"- **Set-up, per shard count:** a fresh private PostgreSQL ({pg}{database}) with {options.customers:,} "
        "customers funded, and a fresh private NATS JetStream with no streams (the services create ORDERS with that "
        "shard count). The processes of `make run` (`devtools.mesh.plan_mesh`) on free ports, settlement left out: "
        "the exchange simulator with no callback target (it keeps its fills; no CallbackService runs, nothing "
        f"settles the orders), one OrderService, and {CLUSTER_COUNT} "
        f"worker clusters (the shards split in halves) of {REPLICAS_PER_CLUSTER} replicas each: {workers} worker "
        "processes, each replica pulling every shard of its cluster, one message in flight per shard. Settings "
        f"beside the plan's: {settings} (with no settlement every SUBMITTED order would look silent after 60 s "
        "and be asked about); the rest default (AckWait 10 s, an order PLACED 30 s is republished by the sweeper).",
        f"- **Load:** one load generator process (one grpc.aio channel). Steady: an open loop at "
        f"{options.rate:g} orders/s. Saturation: {options.in_flight} PlaceOrder calls in flight, back to back. "
        f"Each phase: {options.warmup:g} s warm-up then {options.duration:g} s measured; per-call deadline "
        f"{options.deadline:g} s. Each call buys 1 share of AAPL, MSFT, GOOGL, AMZN or TSLA for a random customer "
        "with a new client_order_id.",
        "- **Placed to submitted** of an order: its `submitted` order event's occurred_at (the worker's record of "
        "the exchange's acknowledgement) minus its created_at (now() of the placement transaction, i.e. when that "
        "transaction began: a long group-commit transaction counts in), from the database, over the orders "
        "created in the measured window, read once none is PLACED any more. One run: the percentiles are over "
        "orders, not repetitions.",
    ]


def _ms(value: float) -> str:
    return _n(value, 1)


def _drain(phase: Phase) -> str:
    return "**not drained**" if phase.drain_seconds is None else f"{phase.drain_seconds:.1f}"


def _not_submitted(phase: Phase) -> str:
    missing = phase.latency.not_submitted
    return ", ".join(f"**{status} {n}**" for status, n in missing.items()) if missing else "0"


def _placement_latency(phase: Phase) -> str:
    return f"{_ms(phase.placement.p50_ms)} / {_ms(phase.placement.p99_ms)}"


def steady_table(levels: Sequence[Level]) -> list[str]:
    lines = [
        "| shards | orders created in window | not SUBMITTED | p50 ms | p90 ms | p99 ms | max ms "
        "| p99 of the fastest / slowest shard | backlog in window, max | drained after the window, s "
        "| PlaceOrder p50 / p99 ms |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for level in levels:
        s, latency = level.steady, level.steady.latency
        lines.append(
            f"| {level.shard_count} | {latency.placed:,} | {_not_submitted(s)} | {_ms(latency.p50_ms)} | "
            f"{_ms(latency.p90_ms)} | {_ms(latency.p99_ms)} | {_ms(latency.max_ms)} | "
            f"{_ms(latency.fastest_shard_p99_ms)} / {_ms(latency.slowest_shard_p99_ms)} | "
            f"{max(s.backlog_seen, default=0):,} | {_drain(s)} | {_placement_latency(s)} |"
        )
    return lines


def saturation_table(levels: Sequence[Level]) -> list[str]:
    lines = [
        "| shards | placed/s | submitted/s | submitted/s per shard | backlog at the window's start / end "
        "| drained after the window, s | placed-to-submitted p50 ms | p99 ms | not SUBMITTED "
        "| PlaceOrder p50 / p99 ms |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for level in levels:
        s = level.saturation
        start = s.backlog_seen[0] if s.backlog_seen else 0
        lines.append(
            f"| {level.shard_count} | {_n(s.placed_per_second)} | **{_n(s.submitted_per_second)}** | "
            f"{_n(s.submitted_per_second / level.shard_count, 1)} | {start:,} / {s.backlog_at_close:,} | "
            f"{_drain(s)} | {_ms(s.latency.p50_ms)} | {_ms(s.latency.p99_ms)} | {_not_submitted(s)} | "
            f"{_placement_latency(s)} |"
        )
    return lines


def other_cpu_seconds(phase: Phase) -> float:
    cpu = phase.placement.cpu_seconds
    return cpu[MACHINE_BUSY] - sum(cpu.get(g, 0.0) for g in GROUPS)


def steady_cpu_table(levels: Sequence[Level]) -> list[str]:
    lines = [
        "| shards | OrderService | exchange simulator | workers | PostgreSQL (OrderService's connections / "
        "workers') | NATS | load generator | sum of these | other | machine busy |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for level in levels:
        s = level.steady
        us = {g: s.cpu_us_per_order(g) for g in (*GROUPS, "pg_order_service", "pg_workers")}
        other = other_cpu_seconds(s) * 1e6 / max(s.latency.submitted, 1)
        lines.append(
            f"| {level.shard_count} | {_n(us['order_service'])} | {_n(us['exchange'])} | {_n(us['workers'])} | "
            f"{_n(us['postgres'])} ({_n(us['pg_order_service'])} / {_n(us['pg_workers'])}) | {_n(us['nats'])} | "
            f"{_n(us['client'])} | {_n(sum(us[g] for g in GROUPS))} | {_n(other)} | "
            f"{s.placement.machine_busy_fraction:.0%} |"
        )
    return lines


def saturation_cpu_table(levels: Sequence[Level]) -> list[str]:
    lines = [
        "| shards | OrderService | exchange simulator | workers | PostgreSQL (OrderService's connections / "
        "workers') | NATS | load generator | other | machine busy | workers + their PostgreSQL, µs per submission |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for level in levels:
        s = level.saturation
        cores = {g: s.placement.cores(g) for g in (*GROUPS, "pg_order_service", "pg_workers")}
        per_submission = s.cpu_us_per_submission("workers") + s.cpu_us_per_submission("pg_workers")
        lines.append(
            f"| {level.shard_count} | {cores['order_service']:.2f} | {cores['exchange']:.2f} | "
            f"{cores['workers']:.2f} | {cores['postgres']:.2f} ({cores['pg_order_service']:.2f} / "
            f"{cores['pg_workers']:.2f}) | {cores['nats']:.2f} | {cores['client']:.2f} | "
            f"{other_cpu_seconds(s) / s.placement.seconds:.2f} | {s.placement.machine_busy_fraction:.0%} | "
            f"{_n(per_submission)} |"
        )
    return lines


def _outcomes(counters: dict[str, float], prefix: str, leave_out: str = "") -> str:
    found = {
        k.removeprefix(prefix): v for k, v in counters.items() if k.startswith(prefix) and k != f"{prefix}{leave_out}"
    }
    return ", ".join(f"{k} {v:,.0f}" for k, v in sorted(found.items()) if v) or "none"


def submit_call_ms(counters: dict[str, float]) -> float:
    """The workers' mean time for an order's submission over a phase (sent to answered), as they measured it."""
    calls = counters.get(f"exchange_calls:{SUBMIT_METHOD}", 0.0)
    return counters.get(f"exchange_seconds:{SUBMIT_METHOD}", 0.0) * 1000 / calls if calls else math.nan


def messages_table(levels: Sequence[Level]) -> list[str]:
    lines = [
        "| shards | phase | orders created (of which no caller heard) | orders_placed_total "
        "| outbox published (publish failures) | messages acknowledged as done "
        "| other message outcomes | republished by the sweeper | orders submitted (mean ms) | new at the exchange "
        "| duplicate submits | exchange call errors |",
        "|---:|---|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|",
    ]
    for level in levels:
        for phase in level.phases.values():
            c = phase.counters
            lines.append(
                f"| {level.shard_count} | {phase.kind} | {phase.orders_created:,} ({_unanswered(phase)}) | "
                f"{_n(c.get('placed', 0))} | {_n(c.get('published', 0))} "
                f"({_n(c.get('publish_failures', 0))}) | {_n(c.get('messages:done', 0))} | "
                f"{_outcomes(c, 'messages:', leave_out='done')} | {_n(c.get('republished_by_sweeper', 0))} | "
                f"{_n(c.get(f'exchange_calls:{SUBMIT_METHOD}', 0))} ({_n(submit_call_ms(c), 2)}) | "
                f"{_outcomes(c, 'exchange_received:')} | {_n(c.get('exchange_duplicate_submits', 0))} | "
                f"{_n(c.get('exchange_errors', 0))} |"
            )
    return lines


def _unanswered(phase: Phase) -> str:
    return f"**{phase.created_unanswered:,}**" if phase.created_unanswered else "0"


def record_lines(levels: Sequence[Level]) -> list[str]:
    """The orders by status, failed PlaceOrder calls, and the services' log warnings and errors, per shard count."""
    lines = []
    for level in levels:
        statuses = ", ".join(f"{k} {v:,}" for k, v in level.orders_by_status.items()) or "none"
        lines.append(f"- **{level.shard_count} shards.** Orders at the end, by status: {statuses}.")
        for phase in level.phases.values():
            bad = {k: v for k, v in phase.placement.outcomes_all.items() if k != "ORDER_STATUS_PLACED"}
            if bad:
                lines.append(f"  - **PlaceOrder calls not PLACED ({phase.kind}, warm-up and drain included): {bad}**")
            if phase.placement.late_start:
                lines.append(f"  - Warning: the {phase.kind} load generator started after the window opened.")
        lines += complaint_lines(level.complaints)
    return lines


def complaint_lines(complaints: Complaints) -> list[str]:
    """Under load, each service's warnings and errors; at start-up and shutdown, the events summed over services."""
    lines = []
    under_load = complaints.get(LOAD, {})
    if not under_load:
        lines.append("  - Under load (both phases and their drains) no service logged a warning or an error.")
    for name, found in under_load.items():
        top = "; ".join(f"`{event}`: {n:,}" for event, n in list(found.items())[:5])
        more = f" (and {len(found) - 5} more kinds)" if len(found) > 5 else ""
        lines.append(f"  - Under load, {name} logged: {top}{more}.")
    for period in (START_UP, SHUTDOWN):
        events: Counter[str] = Counter()
        for found in complaints.get(period, {}).values():
            events.update(found)
        if events:
            summary = "; ".join(f"`{event}`: {n:,}" for event, n in events.most_common())
            lines.append(f"  - At {period}, over all services: {summary}.")
    return lines


def _by_shards(levels: Sequence[Level], figure: str) -> str:
    return ", ".join(f"{figure.format(level=level)} at {level.shard_count}" for level in levels)


def latency_notes(levels: Sequence[Level], options: Options) -> list[str]:
    steady = ", ".join(
        f"{_ms(lv.steady.latency.p50_ms)} / {_ms(lv.steady.latency.p99_ms)} ms at {lv.shard_count} shards"
        for lv in levels
    )
    drained = ", ".join(f"{_drain(lv.steady)} s at {lv.shard_count}" for lv in levels)
    keeping = (
        f"after the load stopped, the last order was submitted (and nothing was left to place) within {drained} "
        "shards: anything but a fraction of a second means a backlog, in OrderService or at the workers"
    )
    notes = [f"- **Latency at {options.rate:g} orders/s** (p50 / p99 placed to submitted): {steady}; {keeping}."]
    short = [lv for lv in levels if lv.steady.placed_per_second < PLACEMENT_SHORTFALL * options.rate]
    if short:
        placed = ", ".join(
            f"{_n(lv.steady.placed_per_second)}/s at {lv.shard_count} shards "
            f"(while it created {_n(lv.steady.latency.placed / lv.steady.window.seconds)}/s)"
            for lv in short
        )
        notes.append(
            f"- **OrderService did not sustain the offered {options.rate:g} orders/s**: it answered PLACED to "
            f"{placed}; the other calls waited, missed their deadline or were skipped (see the record below). "
            "Those latencies include placement's own overload, not only the way to the exchange."
        )
    return notes


def throughput_notes(levels: Sequence[Level], options: Options) -> list[str]:
    per_second = ", ".join(
        f"{_n(lv.saturation.submitted_per_second)}/s at {lv.shard_count} shards "
        f"({_n(lv.saturation.submitted_per_second / lv.shard_count, 1)} per shard, one every "
        f"{_n(1000 * lv.shard_count / max(lv.saturation.submitted_per_second, 1e-9), 1)} ms)"
        for lv in levels
    )
    first, last = levels[0], levels[-1]
    rates = first.saturation.submitted_per_second, last.saturation.submitted_per_second
    scaling = (
        f": {rates[1] / rates[0]:.2f} times as many at {last.shard_count} shards as at {first.shard_count}"
        if len(levels) > 1 and rates[0]
        else ""
    )
    outran = [lv for lv in levels if lv.saturation.submitted_per_second < KEPT_UP * lv.saturation.placed_per_second]
    backlog = (
        "submission fell behind placement at "
        + ", ".join(f"{lv.shard_count}" for lv in outran)
        + " shards (a backlog built up: see the drain times)"
        if outran
        else "submission kept pace with placement, so placement (sharing the machine) was the limit"
    )
    placed = _by_shards(levels, "{level.saturation.placed_per_second:,.0f}/s")
    return [
        f"- **Throughput with {options.in_flight} PlaceOrder calls in flight**: orders submitted {per_second}"
        f"{scaling}. OrderService placed {placed}; {backlog}.",
    ]


def cpu_notes(levels: Sequence[Level]) -> list[str]:
    notes = []
    for level in levels:
        s = level.steady
        us = {g: s.cpu_us_per_order(g) for g in GROUPS}
        total = sum(us.values())
        shares = ", ".join(f"{GROUP_NAMES[g]} {us[g] / total:.0%}" for g in sorted(us, key=lambda g: -us[g]))
        busy = level.saturation.placement
        top = sorted(GROUPS, key=lambda g: -busy.cores(g))[:3]
        cores = ", ".join(f"{GROUP_NAMES[g]} {busy.cores(g):.2f}" for g in top)
        pg = f"{_n(s.cpu_us_per_order('pg_order_service'))} / {_n(s.cpu_us_per_order('pg_workers'))}"
        notes.append(
            f"- **CPU at {level.shard_count} shards**: {_n(total)} µs per order at the steady rate ({shares}; "
            f"PostgreSQL's backends for OrderService / the workers: {pg} µs); "
            f"at saturation the machine was {busy.machine_busy_fraction:.0%} busy, most of it {cores} cores."
        )
    return notes


def _failed_calls(phase: Phase) -> str:
    failed = {k: v for k, v in phase.placement.outcomes_all.items() if not k.startswith(("ORDER_STATUS_", SKIPPED))}
    return ", ".join(f"{k} {v:,}" for k, v in failed.items()) or "without an answer"


def anomaly_notes(levels: Sequence[Level]) -> list[str]:
    notes = []
    for level in levels:
        for phase in level.phases.values():
            if phase.latency.not_submitted:
                notes.append(
                    f"- At {level.shard_count} shards ({phase.kind}), orders of the window not SUBMITTED: "
                    f"{phase.latency.not_submitted}."
                )
            if phase.created_unanswered > 0:
                notes.append(
                    f"- At {level.shard_count} shards ({phase.kind}) OrderService created "
                    f"{phase.created_unanswered:,} orders whose callers had already given up (their calls ended "
                    f"{_failed_calls(phase)}): reserved, sent to the exchange and SUBMITTED all the same, while its "
                    f"`orders_placed_total` counted {phase.counters.get('placed', 0):,.0f} of the "
                    f"{phase.orders_created:,} orders created."
                )
            republished = phase.counters.get("republished_by_sweeper", 0)
            if republished:
                notes.append(
                    f"- At {level.shard_count} shards ({phase.kind}) the sweeper republished {republished:,.0f} orders "
                    "PLACED longer than 30 s: extra messages, each finding its order done or claiming it anew."
                )
        under_load = level.complaints.get(LOAD, {}).values()
        logged = sum(n for found in under_load for n in found.values())
        if logged:
            notes.append(
                f"- At {level.shard_count} shards the services logged {logged:,} warnings or errors under load (below)."
            )
    return notes or ["- Nothing unusual: every order was SUBMITTED, no sweeper republish, no warning in the logs."]


def markdown(run: Run, options: Options, started: float, host: dict[str, Any]) -> str:
    levels = run.levels
    lines = [
        *header_lines(run, options, started, host),
        "",
        "## Notes",
        "",
        *latency_notes(levels, options),
        *throughput_notes(levels, options),
        *cpu_notes(levels),
        *anomaly_notes(levels),
        "",
        f"## Placed to submitted at a steady {options.rate:g} orders/s",
        "",
        *steady_table(levels),
        "",
        f"## Saturation: {options.in_flight} PlaceOrder calls in flight",
        "",
        "Submitted/s counts the `submitted` events recorded inside the window, whenever their orders were placed; "
        "placed/s the calls answered PLACED inside it. The backlog is the orders still PLACED. Latency is over the "
        "orders placed in the window, so it includes their wait in the backlog.",
        "",
        *saturation_table(levels),
        "",
        "## CPU per order at the steady rate (µs, measured window)",
        "",
        "Per order placed in the window (and submitted). PostgreSQL is the postmaster and all its processes, also "
        "those that exited; in brackets, the backends of OrderService's and of the workers' connections within it. "
        "`other` is the rest of the machine's busy time (the kernel, this script, unrelated processes).",
        "",
        *steady_cpu_table(levels),
        "",
        "## CPU at saturation (average cores in the window)",
        "",
        *saturation_cpu_table(levels),
        "",
        "## Messages, sweeps and the exchange (each phase, warm-up and drain included)",
        "",
        'Orders created are from the record; "no caller heard" is those minus the PlaceOrder calls answered with an '
        "order (the rest ended in an error, typically DEADLINE_EXCEEDED, yet OrderService went on to place them). "
        "The other columns are the services' Prometheus counters; SubmitOrder's mean is the workers' own timing of "
        "the call.",
        "",
        *messages_table(levels),
        "",
        "## The record and the logs",
        "",
        *record_lines(levels),
        "",
    ]
    return "\n".join(lines)


def as_json(run: Run, options: Options, started: float, host: dict[str, Any]) -> str:
    data = {
        "date": datetime.fromtimestamp(started, UTC).isoformat(),
        "command": options.command,
        "commit": commit(),
        "machine": host,
        "versions": run.versions,
        "options": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(options).items()},
        "bench_settings": BENCH_SETTINGS,
        "calibration": run.calibration.as_json() if run.calibration else None,
        "levels": [level.as_json() for level in run.levels],
    }
    return json.dumps(_clean(data), indent=2) + "\n"


def write(run: Run, options: Options, started: float) -> list[Path]:
    """Writes <results_dir>/execution.md and .json; returns their paths."""
    host = machine()
    options.results_dir.mkdir(parents=True, exist_ok=True)
    md = options.results_dir / f"{NAME}.md"
    js = options.results_dir / f"{NAME}.json"
    md.write_text(markdown(run, options, started, host))
    js.write_text(as_json(run, options, started, host))
    print(md.read_text(), file=sys.stderr)
    return [md, js]
