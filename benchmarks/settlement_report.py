"""The results of a settlement benchmark run: a markdown report (the verdict against the floor and the goal, notes
drawn from the figures, a table per measurement, a row per phase) and the same figures as JSON."""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from benchmarks.cpu import MACHINE_BUSY
from benchmarks.execution_report import complaint_lines, submit_call_ms
from benchmarks.mesh import SETTLEMENT_BENCH_SETTINGS
from benchmarks.report import _clean, _n, commit, machine
from benchmarks.settlements import (
    BACKLOG_GROWTH,
    FLOOR_PER_SECOND,
    GOAL_PER_SECOND,
    KEPT_UP,
    LATENCY_RATE,
    P99_LIMIT_MS,
    SUSTAINED_SECONDS,
)
from brokerage.settings import Settings
from devtools.mesh import CLUSTER_COUNT, REPLICAS_PER_CLUSTER
from devtools.stack import PG_SETTINGS
from exchange_simulator.settings import SimulatorSettings

if TYPE_CHECKING:
    from benchmarks.settlement import Options, Phase, Run

NAME = "settlement"
# Disjoint process groups: their sum, subtracted from the machine's busy time, leaves "other".
GROUPS = ("order_service", "workers", "callback_service", "exchange", "postgres", "nats", "client")
GROUP_NAMES = {
    "order_service": "OrderService",
    "workers": "workers",
    "callback_service": "CallbackService",
    "exchange": "exchange simulator",
    "postgres": "PostgreSQL",
    "nats": "NATS",
    "client": "load generator",
}
PG_GROUPS = ("pg_order_service", "pg_workers", "pg_callback_service")  # within PostgreSQL
REPORT_METHOD = "ReportExecution"
SHARED_MACHINE_CORES = 0.2  # unrelated work using this much on average: say the phase's figures are disturbed
# The settings that shape settlement, shown with their values in the set-up: (variable, where its default is).
SHOWN_SETTINGS: tuple[tuple[str, type[Settings] | type[SimulatorSettings]], ...] = (
    ("EXCHANGE_FILL_DELAY_MS", SimulatorSettings),
    ("EXCHANGE_PARTIAL_FILL_PROBABILITY", SimulatorSettings),
    ("EXCHANGE_MAX_FILLS", SimulatorSettings),
    ("EXCHANGE_CALLBACK_STREAM", SimulatorSettings),
    ("EXCHANGE_CALLBACK_STREAM_WINDOW", SimulatorSettings),
    ("EXCHANGE_CALLBACK_STREAM_BATCHES_IN_FLIGHT", SimulatorSettings),
    ("EXCHANGE_CALLBACK_STREAM_BATCH_MAX", SimulatorSettings),
    ("EXCHANGE_DELIVERY_CONCURRENCY", SimulatorSettings),
    ("EXCHANGE_CHAOS_RATE", SimulatorSettings),
    ("BROKER_SETTLEMENT_BATCH_MAX", Settings),
    ("BROKER_SETTLEMENT_FLUSHERS", Settings),
    ("BROKER_PLACEMENT_FLUSHERS", Settings),
    ("BROKER_PLACEMENT_BATCH_MAX", Settings),
)


def setting(run: Run, variable: str, kind: type[Settings] | type[SimulatorSettings]) -> str:
    """A setting's value in the run: its override, else its default."""
    field = variable.lower().removeprefix(str(kind.model_config.get("env_prefix", "")).lower())
    return run.settings.get(variable, str(kind.model_fields[field].default))


def header_lines(run: Run, options: Options, started: float, host: dict[str, Any]) -> list[str]:
    date = datetime.fromtimestamp(started, UTC).strftime("%Y-%m-%d %H:%M UTC")
    minutes = (datetime.now(UTC).timestamp() - started) / 60
    versions_text = ", ".join(f"{k} {v}" for k, v in run.versions.items())
    pg = ", ".join(f"{k}={v}" for k, v in PG_SETTINGS.items() if k != "listen_addresses")
    database = "".join(f", {k}={v}" for k, v in options.pg_settings.items())
    bench = ", ".join(f"{k}={v}" for k, v in SETTLEMENT_BENCH_SETTINGS.items())
    shown = ", ".join(f"{variable}={setting(run, variable, kind)}" for variable, kind in SHOWN_SETTINGS)
    overrides = ", ".join(f"{k}={v}" for k, v in run.settings.items()) or "none"
    rates = ", ".join(f"{rate:g}" for rate in options.open_rates)
    saturation = f"; saturation: {options.in_flight} PlaceOrder calls in flight" if options.in_flight else ""
    return [
        f"# Settlement benchmark: placed to FILLED and settled ({date})",
        "",
        f"- **Command:** `{options.command}` (from the repository root; `make bench-settlement` runs the defaults). "
        f"Took {minutes:.1f} min. Commit {commit()[:12]} (the working tree may hold uncommitted changes).",
        f"- **Machine:** nproc={host['nproc']}, {host['cpu']}, {host['memory_gib']} GiB, Linux {host['kernel']}. "
        "Shared: PostgreSQL, NATS, every service and the load generator run on it, and so may unrelated work "
        "(the `other` CPU column), so figures are noisy. Its speed: "
        f"{run.calibration.describe() if run.calibration else 'not calibrated'}.",
        f"- **Versions:** {versions_text}.",
        f"- **Set-up:** a fresh private PostgreSQL ({pg}{database}) with {options.customers:,} customers funded "
        f"(in {run.seed_seconds:.1f} s), and a fresh private NATS JetStream with no streams. The whole mesh of "
        f"`make run` (`devtools.mesh.plan_mesh`, {options.shards} shards) on free ports, started one by one in "
        f"{run.start_seconds:.1f} s: CallbackService, the exchange simulator reporting every execution to it, one "
        f"OrderService, and {CLUSTER_COUNT} worker clusters ({', '.join(run.clusters)}) of "
        f"{REPLICAS_PER_CLUSTER} replicas each. Settings: {bench}; {shown}; overridden for this run "
        f"(--service-setting, BENCH_*): {overrides}; the rest default.",
        f"- **Load:** one load generator process (one grpc.aio channel). Open loops at {rates} orders/s{saturation}. "
        f"Each phase: {options.warmup:g} s warm-up then {options.duration:g} s measured, then a wait until every "
        f"order has ended; per-call deadline {options.deadline:g} s. Each call buys 1 to {options.max_quantity} "
        "shares (uniformly) of AAPL, MSFT, GOOGL, AMZN or TSLA for a random customer with a new client_order_id.",
        "- **Placed to settled** of an order: its terminal order event's occurred_at (`filled`, written by "
        "CallbackService in the transaction that booked its last fill and released the rest; or `canceled`, "
        "`rejected`) minus its created_at; both are now() of their transactions, i.e. when each began. Over the "
        "orders created in the measured window, read once all have ended. **Settled/s**: terminal events inside the "
        "window, whenever their orders were placed, per second. **Backlog**: orders not yet ended (PLACED, "
        "SUBMITTED, PARTIALLY_FILLED). An offered rate is **kept up** when every PlaceOrder call answered in the "
        f"window was PLACED, orders ended in the window reached {KEPT_UP:.0%} of those offered, and the backlog "
        f"grew by at most {BACKLOG_GROWTH:.0%} of them over the window.",
    ]


def verdict(run: Run, options: Options) -> dict[str, Any]:
    """The highest rates kept up (and within the p99 limit), and the floor, the latency limit and the goal."""
    kept = [p.rate for p in run.open_loops if p.kept_up and p.rate is not None]
    within = [p.rate for p in run.open_loops if p.within_p99 and p.rate is not None]
    latency_phase = run.at_rate(LATENCY_RATE)
    return {
        "window_seconds": options.duration,
        "best_kept_up": max(kept, default=None),
        "best_within_p99": max(within, default=None),
        "floor": _judge(run, options, lambda p: p.kept_up, FLOOR_PER_SECOND),
        "p99_at_300": _judge_latency(latency_phase, options, P99_LIMIT_MS),
        "goal": _judge(run, options, lambda p: p.kept_up, GOAL_PER_SECOND),
    }


def _judge(run: Run, options: Options, test: Callable[[Phase], bool], at_least: float) -> str:
    measured = [p for p in run.open_loops if p.rate is not None and p.rate >= at_least]
    if not measured:
        return f"not measured (no offered rate of {at_least:g}/s or more)"
    passed = any(test(p) for p in measured)
    if options.duration < SUSTAINED_SECONDS:
        return f"not judged (windows of {options.duration:g} s, not {SUSTAINED_SECONDS:g}); kept up that long: " + (
            "yes" if passed else "no"
        )
    return "met" if passed else "NOT met"


def _judge_latency(phase: Phase | None, options: Options, limit_ms: float) -> str:
    if phase is None:
        return f"not measured (no open loop at {LATENCY_RATE:g}/s)"
    passed = phase.kept_up and phase.latency.p99_ms <= limit_ms
    figure = f"p99 {_ms(phase.latency.p99_ms)} ms, {'kept up' if phase.kept_up else 'not kept up'}"
    if options.duration < SUSTAINED_SECONDS:
        return f"not judged (window of {options.duration:g} s, not {SUSTAINED_SECONDS:g}; {figure})"
    return f"{'met' if passed else 'NOT met'} ({figure})"


def verdict_lines(result: dict[str, Any]) -> list[str]:
    best = result["best_kept_up"]
    within = result["best_within_p99"]
    return [
        f"- Highest offered rate kept up for the {result['window_seconds']:g} s window: **{_rate(best)}**; with "
        f"p99 placed-to-settled ≤ {P99_LIMIT_MS:g} ms as well: **{_rate(within)}**.",
        f"- Floor, {FLOOR_PER_SECOND:g} orders/s sustained for {SUSTAINED_SECONDS:g} s: **{result['floor']}**.",
        f"- p99 placed-to-settled ≤ {P99_LIMIT_MS:g} ms at {LATENCY_RATE:g} orders/s: **{result['p99_at_300']}**.",
        f"- Goal, {GOAL_PER_SECOND:g} orders/s sustained for {SUSTAINED_SECONDS:g} s: **{result['goal']}**.",
    ]


def _rate(rate: float | None) -> str:
    return "none" if rate is None else f"{rate:g} orders/s"


def _ms(value: float) -> str:
    return _n(value, 1)


def _drain(phase: Phase) -> str:
    return "**not drained**" if phase.drain_seconds is None else f"{phase.drain_seconds:.1f}"


def _errors(phase: Phase) -> str:
    """PlaceOrder calls in the window that did not answer PLACED (errors, rejections, skipped calls)."""
    failed = phase.placement.failed_window
    if not failed:
        return "0"
    bad = {k: v for k, v in phase.placement.outcomes_window.items() if k != "ORDER_STATUS_PLACED"}
    return f"**{failed:,}** ({', '.join(f'{k} {v:,}' for k, v in bad.items())})"


def _not_filled(phase: Phase) -> str:
    missing = phase.latency.not_filled
    return ", ".join(f"**{status} {n:,}**" for status, n in missing.items()) if missing else "0"


def _submitted(phase: Phase) -> str:
    s = phase.submission
    return f"{_ms(s.p50_ms)} / {_ms(s.p90_ms)} / {_ms(s.p99_ms)} ({s.submitted:,})"


def latency_table(phase: Phase) -> list[str]:
    latency, placement = phase.latency, phase.placement
    return [
        "| orders created in window | not FILLED | placed-to-settled p50 ms | p90 ms | p99 ms | max ms "
        "| placed-to-submitted p50 / p90 / p99 ms (orders with a `submitted` event) | PlaceOrder p50 / p99 ms "
        "| PlaceOrder calls not PLACED |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        f"| {latency.placed:,} | {_not_filled(phase)} | **{_ms(latency.p50_ms)}** | {_ms(latency.p90_ms)} | "
        f"**{_ms(latency.p99_ms)}** | {_ms(latency.max_ms)} | {_submitted(phase)} | "
        f"{_ms(placement.p50_ms)} / {_ms(placement.p99_ms)} | {_errors(phase)} |",
    ]


def _per_second_range(phase: Phase) -> str:
    seconds = phase.ended.per_second
    return f"{min(seconds):,} to {max(seconds):,}" if seconds else "n/a"


def _yes(value: bool) -> str:
    return "yes" if value else "**no**"


def rates_table(phases: Sequence[Phase]) -> list[str]:
    lines = [
        "| offered/s | placed/s | settled/s | settled in a second, min to max | backlog at open / close "
        "| drained after, s | placed-to-settled p50 ms | p99 ms | max ms | PlaceOrder p99 ms "
        f"| PlaceOrder calls not PLACED | kept up | p99 ≤ {P99_LIMIT_MS:g} ms |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|",
    ]
    for p in phases:
        lines.append(
            f"| {p.rate:g} | {_n(p.placement.per_second)} | **{_n(p.settled_per_second)}** | "
            f"{_per_second_range(p)} | {p.backlog_at_open:,} / {p.backlog_at_close:,} | {_drain(p)} | "
            f"{_ms(p.latency.p50_ms)} | {_ms(p.latency.p99_ms)} | {_ms(p.latency.max_ms)} | "
            f"{_ms(p.placement.p99_ms)} | {_errors(p)} | {_yes(p.kept_up)} | "
            f"{_yes(p.latency.p99_ms <= P99_LIMIT_MS)} |"
        )
    return lines


def saturation_table(phase: Phase) -> list[str]:
    return [
        "| in flight | placed/s | settled/s | settled in a second, min to max | backlog at open / close "
        "| drained after, s | placed-to-settled p50 ms | p99 ms | PlaceOrder p50 / p99 ms | calls not PLACED |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        f"| {phase.in_flight} | {_n(phase.placement.per_second)} | **{_n(phase.settled_per_second)}** | "
        f"{_per_second_range(phase)} | {phase.backlog_at_open:,} / {phase.backlog_at_close:,} | {_drain(phase)} | "
        f"{_ms(phase.latency.p50_ms)} | {_ms(phase.latency.p99_ms)} | {_ms(phase.placement.p50_ms)} / "
        f"{_ms(phase.placement.p99_ms)} | {_errors(phase)} |",
    ]


def other_cpu_seconds(phase: Phase) -> float:
    cpu = phase.placement.cpu_seconds
    return cpu[MACHINE_BUSY] - sum(cpu.get(g, 0.0) for g in GROUPS)


def cpu_table(phases: Sequence[Phase]) -> list[str]:
    lines = [
        "| phase | OrderService | workers | CallbackService | exchange simulator | PostgreSQL (OrderService's / "
        "workers' / CallbackService's connections) | NATS | load generator | sum of these | other | machine busy "
        "| sum per order placed in the window |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for p in phases:
        us = {g: p.cpu_us_per_order(g) for g in (*GROUPS, *PG_GROUPS)}
        pg = " / ".join(_n(us[g]) for g in PG_GROUPS)
        other = other_cpu_seconds(p) * 1e6 / max(p.ended.total, 1)
        per_placed = sum(p.placement.cpu_seconds.get(g, 0.0) for g in GROUPS) * 1e6 / max(p.latency.placed, 1)
        lines.append(
            f"| {p.name} | {_n(us['order_service'])} | {_n(us['workers'])} | {_n(us['callback_service'])} | "
            f"{_n(us['exchange'])} | {_n(us['postgres'])} ({pg}) | {_n(us['nats'])} | {_n(us['client'])} | "
            f"**{_n(sum(us[g] for g in GROUPS))}** | {_n(other)} | {p.placement.machine_busy_fraction:.0%} | "
            f"{_n(per_placed)} |"
        )
    return lines


def cores_table(phases: Sequence[Phase]) -> list[str]:
    lines = [
        "| phase | OrderService | workers | CallbackService | exchange simulator | PostgreSQL (OrderService's / "
        "workers' / CallbackService's connections) | NATS | load generator | other | machine busy |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for p in phases:
        cores = {g: p.placement.cores(g) for g in (*GROUPS, *PG_GROUPS)}
        pg = " / ".join(f"{cores[g]:.2f}" for g in PG_GROUPS)
        lines.append(
            f"| {p.name} | {cores['order_service']:.2f} | {cores['workers']:.2f} | "
            f"{cores['callback_service']:.2f} | {cores['exchange']:.2f} | {cores['postgres']:.2f} ({pg}) | "
            f"{cores['nats']:.2f} | {cores['client']:.2f} | {other_cpu_seconds(p) / p.placement.seconds:.2f} | "
            f"{p.placement.machine_busy_fraction:.0%} |"
        )
    return lines


def _labelled(counters: dict[str, float], prefix: str, part: int | None = None) -> dict[str, float]:
    """Counters named `<prefix>:<labels>`, summed by the whole label text or by one part of `a/b`."""
    found: dict[str, float] = {}
    for name, value in counters.items():
        if name.startswith(f"{prefix}:"):
            labels = name.removeprefix(f"{prefix}:")
            key = labels if part is None else labels.split("/")[part]
            found[key] = found.get(key, 0.0) + value
    return found


def _listed(found: dict[str, float]) -> str:
    return ", ".join(f"{k} {v:,.0f}" for k, v in sorted(found.items()) if v) or "none"


def report_call_ms(counters: dict[str, float]) -> float:
    """CallbackService's mean ReportExecution handling time over a phase, as it measured it."""
    calls = counters.get(f"callback_calls:{REPORT_METHOD}", 0.0)
    return counters.get(f"callback_seconds:{REPORT_METHOD}", 0.0) * 1000 / calls if calls else math.nan


def settlement_table(phases: Sequence[Phase]) -> list[str]:
    lines = [
        "| phase | orders created | reports delivered by the simulator (failed deliveries) | per order "
        "| CallbackService: reports by outcome | by type | ReportExecution mean ms | submission mean ms "
        "| worker messages done (other outcomes) | sweeper republished / status queries | WAL bytes per order "
        "| reports awaiting delivery at the window's close |",
        "|---|---:|---:|---:|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for p in phases:
        c = p.counters
        delivered = c.get("reports_delivered", 0.0)
        failures = _labelled(c, "delivery_failures")
        other_messages = {k: v for k, v in _labelled(c, "messages").items() if k != "done"}
        lines.append(
            f"| {p.name} | {p.orders_created:,} | {_n(delivered)} ({_listed(failures) if failures else 0}) | "
            f"{_n(delivered / max(p.orders_created, 1), 2)} | {_listed(_labelled(c, 'reports', 1))} | "
            f"{_listed(_labelled(c, 'reports', 0))} | {_n(report_call_ms(c), 2)} | {_n(submit_call_ms(c), 2)} | "
            f"{_n(c.get('messages:done', 0))} ({_listed(other_messages)}) | "
            f"{_n(c.get('republished_by_sweeper', 0))} / {_n(c.get('status_queries', 0))} | "
            f"{_n(c.get('wal_bytes', 0) / max(p.orders_created, 1))} | {_n(p.awaiting_delivery)} |"
        )
    return lines


def latency_notes(run: Run, options: Options) -> list[str]:
    phase = run.at_rate(options.rate)
    if phase is None:
        return []
    latency = phase.latency
    submitted = phase.submission
    return [
        f"- **Latency at {options.rate:g} orders/s**: placed to settled p50 {_ms(latency.p50_ms)} ms, p90 "
        f"{_ms(latency.p90_ms)}, p99 {_ms(latency.p99_ms)}, max {_ms(latency.max_ms)} ms over {latency.ended:,} "
        f"orders; placed to submitted p50 {_ms(submitted.p50_ms)}, p99 {_ms(submitted.p99_ms)} ms, so the way "
        f"from the exchange's acknowledgement to settlement took about {_ms(latency.p50_ms - submitted.p50_ms)} "
        f"ms at the median (the simulator's fill delay is {setting(run, 'EXCHANGE_FILL_DELAY_MS', SimulatorSettings)}"
        " ms per fill)."
    ]


def delivery_notes(run: Run) -> list[str]:
    """The simulator delivers reports with a bounded number of calls in flight: concurrency / call time is a
    ceiling on reports per second, and reports it still held at a window's close waited for it."""
    concurrency = float(setting(run, "EXCHANGE_DELIVERY_CONCURRENCY", SimulatorSettings))
    notes = []
    for p in run.phases:
        call_ms = report_call_ms(p.counters)
        per_order = p.counters.get("reports_delivered", 0.0) / max(p.orders_created, 1)
        if p.awaiting_delivery < 1 or math.isnan(call_ms) or not per_order:
            continue
        ceiling = concurrency * 1000 / call_ms
        notes.append(
            f"- **At {p.name} the simulator still held {p.awaiting_delivery:,.0f} reports undelivered** when the "
            f"window closed. It delivers with {concurrency:g} calls in flight and ReportExecution took "
            f"{_n(call_ms, 2)} ms on average in CallbackService, so at most about {_n(ceiling)} reports/s, "
            f"{_n(ceiling / per_order)} orders/s at {_n(per_order, 2)} reports per order."
        )
    return notes


def rate_notes(run: Run) -> list[str]:
    notes = []
    for p in run.open_loops:
        verdict_text = "kept up" if p.kept_up else "**did not keep up**"
        notes.append(
            f"- **{p.rate:g}/s offered**: {verdict_text}: settled {_n(p.settled_per_second)}/s, backlog "
            f"{p.backlog_at_open:,} → {p.backlog_at_close:,}, drained {_drain(p)} s after the load stopped, p99 "
            f"{_ms(p.latency.p99_ms)} ms, {p.placement.failed_window:,} PlaceOrder calls not PLACED in the window."
        )
    saturation = run.saturation
    if saturation:
        notes.append(
            f"- **Saturation, {saturation.in_flight} calls in flight**: placed {_n(saturation.placement.per_second)}/s,"
            f" settled {_n(saturation.settled_per_second)}/s; backlog {saturation.backlog_at_open:,} → "
            f"{saturation.backlog_at_close:,}, drained in {_drain(saturation)} s."
        )
    return notes


def cpu_notes(run: Run) -> list[str]:
    notes = []
    for p in run.phases:
        us = {g: p.cpu_us_per_order(g) for g in GROUPS}
        total = sum(us.values())
        if not total:
            continue
        shares = ", ".join(f"{GROUP_NAMES[g]} {us[g] / total:.0%}" for g in sorted(us, key=lambda g: -us[g]))
        pg = " / ".join(_n(p.cpu_us_per_order(g)) for g in PG_GROUPS)
        notes.append(
            f"- **CPU at {p.name}**: {_n(total)} µs per order settled ({shares}); PostgreSQL's backends for "
            f"OrderService / workers / CallbackService {pg} µs; machine {p.placement.machine_busy_fraction:.0%} busy."
        )
    return notes


def anomaly_notes(run: Run) -> list[str]:
    notes = []
    for p in run.phases:
        other = other_cpu_seconds(p) / p.placement.seconds
        if other >= SHARED_MACHINE_CORES:
            notes.append(
                f"- **At {p.name} the machine was shared**: work outside the measured groups took {other:.2f} cores "
                "on average in the window (`other`): the figures of that phase understate the mesh."
            )
        if p.latency.not_filled:
            notes.append(f"- At {p.name}, orders of the window that did not end FILLED: {p.latency.not_filled}.")
        duplicates = sum(v for k, v in _labelled(p.counters, "reports", 1).items() if k != "applied")
        if duplicates:
            notes.append(
                f"- At {p.name}, CallbackService saw {duplicates:,.0f} reports it did not apply (duplicates "
                "or breaks): the simulator re-sent reports it had already delivered."
            )
        failures = sum(_labelled(p.counters, "delivery_failures").values())
        if failures:
            notes.append(f"- At {p.name}, {failures:,.0f} report deliveries failed and were retried.")
        if p.counters.get("republished_by_sweeper", 0):
            notes.append(f"- At {p.name}, the sweeper republished {p.counters['republished_by_sweeper']:,.0f} orders.")
        if p.placement.late_start:
            notes.append(f"- At {p.name}, the load generator started after the window opened: lengthen --warmup.")
    return notes or [
        "- Nothing unusual: every order of every window was FILLED; no duplicate, failed delivery, sweeper "
        "republish or unrelated load on the machine."
    ]


def record_lines(run: Run) -> list[str]:
    statuses = ", ".join(f"{k} {v:,}" for k, v in run.orders_by_status.items()) or "none"
    breaks = ", ".join(f"{k} {v:,}" for k, v in run.breaks.items()) or "none"
    lines = [f"- Orders at the end, by status: {statuses}. Breaks (reports never applied): {breaks}."]
    rec = run.reconciliation
    if rec is not None:
        verdict_text = {0: "clean", 1: "**discrepancies found**"}.get(rec.returncode, "**could not run**")
        lines.append(f"- Reconciliation (`python -m brokerage.reconcile`, with the drop copy): {verdict_text}:")
        lines += ["", "```", *rec.output.splitlines()[:40], "```", ""]
    for p in run.phases:
        bad = {k: v for k, v in p.placement.outcomes_all.items() if k != "ORDER_STATUS_PLACED"}
        if bad:
            lines.append(f"- PlaceOrder calls not PLACED at {p.name} (warm-up and drain included): {bad}.")
    return lines + complaint_lines(run.complaints)


def markdown(run: Run, options: Options, started: float, host: dict[str, Any], result: dict[str, Any]) -> str:
    latency_phase = run.at_rate(options.rate)
    lines = [
        *header_lines(run, options, started, host),
        "",
        "## Verdict",
        "",
        *verdict_lines(result),
        "",
        "## Notes",
        "",
        *latency_notes(run, options),
        *rate_notes(run),
        *delivery_notes(run),
        *cpu_notes(run),
        *anomaly_notes(run),
        "",
    ]
    if latency_phase:
        lines += [f"## Latency at {options.rate:g} orders/s (open loop)", "", *latency_table(latency_phase), ""]
    lines += [
        "## Offered rates (open loop)",
        "",
        "Placed/s: calls answered PLACED in the window. Settled/s: orders ended (terminal event) in the window. "
        "Latency is over the orders placed in the window, once all had ended.",
        "",
        *rates_table(run.open_loops),
        "",
    ]
    if run.saturation:
        lines += [f"## Saturation: {run.saturation.in_flight} calls in flight", "", *saturation_table(run.saturation)]
        lines += [""]
    lines += [
        "## CPU per order settled (µs, measured window)",
        "",
        "Per order ended in the window (at a steady rate, as many as were placed in it; in a phase that fell "
        "behind, the window's CPU also placed orders it did not settle: the last column divides by those placed). "
        "PostgreSQL is the "
        "postmaster and all its processes, also those that exited; in brackets, the backends of each service's "
        "connections within it. `other` is the rest of the machine's busy time (the kernel, this script, "
        "unrelated processes).",
        "",
        *cpu_table(run.phases),
        "",
        "Average cores in the window (a Python service near 1.0 is saturated, whatever the machine has left):",
        "",
        *cores_table(run.phases),
        "",
        "## Settlement, the exchange and the workers (each phase, warm-up and drain included)",
        "",
        "The services' Prometheus counters: the simulator's report deliveries, CallbackService's "
        "`settlement_reports_total` by outcome (applied, duplicate, break) and by exec type, its own mean handling "
        "time of ReportExecution, the workers' mean submission on their SubmitOrders stream; WAL from pg_stat_wal.",
        "",
        *settlement_table(run.phases),
        "",
        "## The record and the logs",
        "",
        *record_lines(run),
        "",
    ]
    return "\n".join(lines)


def as_json(run: Run, options: Options, started: float, host: dict[str, Any], result: dict[str, Any]) -> str:
    data = {
        "date": datetime.fromtimestamp(started, UTC).isoformat(),
        "command": options.command,
        "commit": commit(),
        "machine": host,
        "versions": run.versions,
        "options": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(options).items()},
        "bench_settings": SETTLEMENT_BENCH_SETTINGS,
        "verdict": result,
        **run.as_json(),
    }
    return json.dumps(_clean(data), indent=2) + "\n"


def write(run: Run, options: Options, started: float) -> list[Path]:
    """Writes <results_dir>/settlement.md and .json; returns their paths."""
    host = machine()
    result = verdict(run, options)
    options.results_dir.mkdir(parents=True, exist_ok=True)
    md = options.results_dir / f"{NAME}.md"
    js = options.results_dir / f"{NAME}.json"
    md.write_text(markdown(run, options, started, host, result))
    js.write_text(as_json(run, options, started, host, result))
    print(md.read_text(), file=sys.stderr)
    return [md, js]
