"""The results of a PlaceOrder benchmark run: a markdown report and the same figures as JSON."""

from __future__ import annotations

import json
import math
import os
import platform
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import asdict
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psycopg

from benchmarks.stats import Summary, summarize
from devtools.stack import PG_SETTINGS, NatsServer, nats_server_binary

if TYPE_CHECKING:
    from benchmarks.place_order import Options, Run

NAME = "place_order"
FLOOR_PER_SECOND = 1_000
GOAL_PER_SECOND = 1_500
P99_LIMIT_MS = 50.0
PLACE_GROUPS = ("server", "postgres", "nats", "client")
ECHO_GROUPS = ("server", "client")
PACKAGES = ("grpcio", "protobuf", "psycopg", "psycopg-pool", "nats-py", "structlog", "prometheus-client")


def versions(database_url: str, nats: NatsServer) -> dict[str, str]:
    """Python, the client libraries, PostgreSQL and nats-server."""
    found = {"python": platform.python_version()}
    for package in PACKAGES:
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            found[package] = "absent"
    with psycopg.connect(database_url) as conn:
        row = conn.execute("SHOW server_version").fetchone()
    found["postgresql"] = str(row[0]) if row else "unknown"
    out = subprocess.run([str(nats_server_binary()), "--version"], capture_output=True, text=True, check=False)
    found["nats-server"] = out.stdout.strip() or out.stderr.strip()
    return found


def machine() -> dict[str, Any]:
    """nproc, CPU model, memory and kernel of this machine."""
    cpuinfo = Path("/proc/cpuinfo").read_text()
    model = next(
        (line.split(":", 1)[1].strip() for line in cpuinfo.splitlines() if line.startswith("model name")),
        platform.processor(),
    )
    meminfo = Path("/proc/meminfo").read_text().split()
    mem_gib = int(meminfo[meminfo.index("MemTotal:") + 1]) / 1024 / 1024
    return {
        "nproc": len(os.sched_getaffinity(0)),
        "cpu": model,
        "memory_gib": round(mem_gib, 1),
        "kernel": platform.release(),
    }


def commit() -> str:
    """HEAD's commit (read only; the working tree may hold uncommitted changes)."""
    out = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True, text=True, check=False
    )
    return out.stdout.strip() or "unknown"


def summaries(run: Run, kind: str) -> list[Summary]:
    """The medians of each level of one kind, in level order."""
    groups = ECHO_GROUPS if kind == "echo" else PLACE_GROUPS
    levels = sorted({m.concurrency for m in run.measurements if m.kind == kind})
    return [summarize([m for m in run.measurements if m.kind == kind and m.concurrency == c], groups) for c in levels]


def _n(value: float, digits: int = 0) -> str:
    return "n/a" if value is None or math.isnan(value) else f"{value:,.{digits}f}"


def _failures(summary: Summary) -> str:
    return f"**{summary.failed_all}**" if summary.failed_all else "0"


def throughput_table(places: Sequence[Summary], echoes: Sequence[Summary]) -> list[str]:
    echo_at = {s.concurrency: s for s in echoes}
    lines = [
        "| in flight | orders/s | p50 ms | p99 ms | not PLACED or error | echo calls/s | echo p50 ms | echo p99 ms "
        "| orders/s ÷ echo calls/s |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for s in places:
        e = echo_at.get(s.concurrency)
        echo_cells = [_n(e.per_second), _n(e.p50_ms, 2), _n(e.p99_ms, 2)] if e else ["", "", ""]
        ratio = f"{s.per_second / e.per_second:.2f}" if e and e.per_second else ""
        lines.append(
            f"| {s.concurrency} | {_n(s.per_second)} | {_n(s.p50_ms, 2)} | {_n(s.p99_ms, 2)} | "
            f"{_failures(s)} | {' | '.join(echo_cells)} | {ratio} |"
        )
    return lines


def verdict(places: Sequence[Summary]) -> dict[str, Any]:
    """The best throughput among levels whose p99 is within the limit, against the floor and the goal."""
    within = [s for s in places if s.p99_ms <= P99_LIMIT_MS and s.failed_window == 0]
    best = max(within, key=lambda s: s.per_second, default=None)
    per_second = best.per_second if best else 0.0
    return {
        "best_within_p99": per_second,
        "at_concurrency": best.concurrency if best else None,
        "floor_met": per_second >= FLOOR_PER_SECOND,
        "goal_met": per_second >= GOAL_PER_SECOND,
    }


def verdict_lines(result: dict[str, Any]) -> list[str]:
    best = (
        f"{_n(result['best_within_p99'])} orders/s at {result['at_concurrency']} in flight"
        if result["at_concurrency"]
        else "no level"
    )
    return [
        f"- Best level with p99 ≤ {P99_LIMIT_MS:g} ms and no failures: {best}.",
        f"- Floor ({FLOOR_PER_SECOND:,} orders/s, p99 ≤ {P99_LIMIT_MS:g} ms): "
        f"**{'met' if result['floor_met'] else 'NOT met'}**. "
        f"Goal ({GOAL_PER_SECOND:,}): **{'met' if result['goal_met'] else 'not met'}**.",
    ]


def cpu_table(places: Sequence[Summary]) -> list[str]:
    lines = [
        "| in flight | OrderService | PostgreSQL (its connections) | NATS | load generator | sum of these | other "
        "| machine busy | OrderService cores (its asyncio thread) | PostgreSQL cores | load generator cores |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for s in places:
        cpu, cores = s.cpu_us, s.cores
        lines.append(
            f"| {s.concurrency} | {_n(cpu['server'])} | {_n(cpu['postgres'])} ({_n(cpu['pg_service'])}) | "
            f"{_n(cpu['nats'])} | {_n(cpu['client'])} | {_n(sum(cpu[g] for g in PLACE_GROUPS))} | "
            f"{_n(cpu['other'])} | {s.machine_busy:.0%} | {cores['server']:.2f} ({cores['server_loop']:.2f}) | "
            f"{cores['postgres']:.2f} | {cores['client']:.2f} |"
        )
    return lines


def echo_cpu_table(echoes: Sequence[Summary]) -> list[str]:
    lines = [
        "| in flight | echo server | load generator | other | machine busy | server cores (its asyncio thread) "
        "| client cores |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for s in echoes:
        lines.append(
            f"| {s.concurrency} | {_n(s.cpu_us['server'])} | {_n(s.cpu_us['client'])} | "
            f"{_n(s.cpu_us['other'])} | {s.machine_busy:.0%} | {s.cores['server']:.2f} "
            f"({s.cores['server_loop']:.2f}) | {s.cores['client']:.2f} |"
        )
    return lines


def counter_lines(places: Sequence[Summary]) -> list[str]:
    """WAL and relay work per order: what PostgreSQL and the relay did for each order placed."""
    lines = [
        "| in flight | WAL bytes | WAL records | full-page images | checkpoints in window | relay batches "
        "| messages per batch | outbox backlog at end |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for s in places:
        per, total = s.per_call, s.counters
        batches = total.get("relay_batches", 0.0)
        per_batch = total.get("relay_messages", 0.0) / batches if batches else math.nan
        backlog = "" if s.outbox_unpublished is None else str(s.outbox_unpublished)
        lines.append(
            f"| {s.concurrency} | {_n(per.get('wal_bytes', math.nan))} | {_n(per.get('wal_records', math.nan), 1)} | "
            f"{_n(per.get('wal_fpi', math.nan), 2)} | {_n(total.get('checkpoints', math.nan))} | "
            f"{_n(per.get('relay_batches', math.nan), 2)} | {_n(per_batch, 1)} | {backlog} |"
        )
    return lines


def warmup_lines(run: Run) -> list[str]:
    m = run.db_warmup
    if m is None:
        return ["- No database warm-up (--db-warmup 0): the first level pays for the first write of each page."]
    fpi = m.counters.get("wal_fpi", 0.0) / max(m.succeeded, 1)
    return [
        f"- Database warm-up before the levels (not in the tables): {m.seconds:g} s at {m.concurrency} in flight, "
        f"{_n(m.per_second)} orders/s, {fpi:.2f} full-page images per order (the first change of each page after "
        "the post-seed checkpoint writes the whole page to WAL; later levels see fewer)."
    ]


def backend_lines(places: Sequence[Summary]) -> list[str]:
    """The database's client backends by state during the window: are they busy, waiting (on what), or idle?"""
    lines = [
        "| in flight | backends | idle | running (CPU) | waiting, by wait event (average backends) |",
        "|---:|---:|---:|---:|---|",
    ]
    for s in places:
        states = s.pg_backends
        waits = {k: v for k, v in states.items() if ":" in k and v >= 0.05}
        waits_text = ", ".join(f"{k} {v:.1f}" for k, v in list(waits.items())[:6]) or "none"
        lines.append(
            f"| {s.concurrency} | {sum(states.values()):.1f} | {states.get('idle', 0.0):.1f} | "
            f"{states.get('CPU', 0.0):.1f} | {waits_text} |"
        )
    return lines


def failure_lines(run: Run) -> list[str]:
    """Every call that did not succeed, by kind, level and outcome (warm-up and drain included)."""
    failures = []
    for m in run.measurements:
        bad = {k: v for k, v in m.outcomes_all.items() if k not in {"ORDER_STATUS_PLACED", "ECHOED"}}
        if bad:
            failures.append(f"- **{m.kind} at {m.concurrency} in flight (rep {m.rep}): {bad}**")
    late = [
        f"- Warning: at {m.concurrency} in flight ({m.kind}, rep {m.rep}) a load generator started after the "
        "window opened: lengthen --warmup."
        for m in run.measurements
        if m.late_start
    ]
    return (
        failures
        or [
            "- None: every PlaceOrder call answered ORDER_STATUS_PLACED and every echo came back "
            "intact (warm-up and drain included)."
        ]
    ) + late


def info_lines(run: Run, options: Options, places: Sequence[Summary]) -> list[str]:
    """INFO against WARNING logging at the same level, measured back to back in each repetition."""
    infos = summaries(run, "place-info")
    if not infos:
        return [f"Not measured (--info-level {options.info_level} is not one of --levels)."]
    info = infos[0]
    line = (
        f"At {info.concurrency} in flight, an OrderService with BROKER_LOG_LEVEL=INFO (a JSON line per order, "
        f"to a file) placed {_n(info.per_second)} orders/s, p50 {_n(info.p50_ms, 2)} ms, "
        f"p99 {_n(info.p99_ms, 2)} ms, with {_n(info.cpu_us['server'])} µs of OrderService CPU per order"
    )
    base = next((s for s in places if s.concurrency == info.concurrency), None)
    if base is None:
        return [line + " (no WARNING run at that level to compare)."]
    change = info.per_second / base.per_second - 1
    extra = info.cpu_us["server"] - base.cpu_us["server"]
    return [
        line + f". The WARNING service, measured just before it: {_n(base.per_second)} orders/s and "
        f"{_n(base.cpu_us['server'])} µs. INFO logging: throughput **{change:+.0%}**, "
        f"OrderService CPU **{extra:+,.0f} µs per order** ({extra / base.cpu_us['server']:+.0%})."
    ]


def header_lines(run: Run, options: Options, started: float, host: dict[str, Any]) -> list[str]:
    date = datetime.fromtimestamp(started, UTC).strftime("%Y-%m-%d %H:%M UTC")
    minutes = (datetime.now(UTC).timestamp() - started) / 60
    versions_text = ", ".join(f"{k} {v}" for k, v in run.versions.items())
    pg = ", ".join(f"{k}={v}" for k, v in PG_SETTINGS.items() if k != "listen_addresses")
    return [
        f"# PlaceOrder benchmark ({date})",
        "",
        f"- **Command:** `{options.command}` (from the repository root; `make bench` runs the defaults). "
        f"Took {minutes:.1f} min. Commit {commit()[:12]} (the working tree may hold uncommitted changes).",
        f"- **Machine:** nproc={host['nproc']}, {host['cpu']}, {host['memory_gib']} GiB, Linux {host['kernel']}. "
        "Shared: PostgreSQL, NATS, OrderService, the echo server and the load generator all run on it, and so "
        "may unrelated work (the `other` CPU column), so figures are noisy.",
        f"- **Versions:** {versions_text}.",
        f"- **Set-up:** {options.customers:,} customers funded (in {run.seed_seconds:.1f} s) in a private "
        f"PostgreSQL ({pg}) and a private NATS JetStream; one OrderService process (BROKER_LOG_LEVEL=WARNING, "
        "other settings default, so a 4 to 16 connection pool), its outbox relay publishing to JetStream, no workers "
        "consuming; a second OrderService logging at INFO idles beside it except in its own window (see INFO logging).",
        f"- **Load:** {options.clients} load generator process(es), one grpc.aio channel each; per level "
        f"{options.warmup:g} s warm-up then {options.duration:g} s measured; {options.reps} repetition(s), "
        f"medians shown; per-call deadline {options.deadline:g} s. Each call buys 1 share of AAPL, MSFT, GOOGL, "
        "AMZN or TSLA for a random customer with a new client_order_id. The echo server is bare grpc.aio "
        "(generic handler, bytes in and out) sent the same serialized PlaceOrderRequest by the same generator. "
        "Latency is from the client, over calls completed inside the window.",
    ]


def markdown(run: Run, options: Options, started: float, host: dict[str, Any], result: dict[str, Any]) -> str:
    places, echoes = summaries(run, "place"), summaries(run, "echo")
    orders = ", ".join(f"{k} {v:,}" for k, v in run.database_orders.items()) or "none"
    lines = [
        *header_lines(run, options, started, host),
        "",
        "## Throughput and latency",
        "",
        *throughput_table(places, echoes),
        "",
        *verdict_lines(result),
        "",
        "### Calls that did not succeed",
        "",
        *failure_lines(run),
        f"- Orders in the database at the end, by status: {orders}.",
        "",
        "## CPU per order (µs, measured window; whole machine = 1,000,000 µs per second per core)",
        "",
        "PostgreSQL is the postmaster and all its processes, also those that exited in the window (autovacuum "
        "workers, the other service's connections, the samplers'); in brackets, the backends of the measured "
        "OrderService's own connections. `other` is the rest of the machine's busy time (the kernel, this script, "
        "unrelated processes). Cores are average CPU use in the window; a Python "
        "server's asyncio thread holds the GIL, so near 1.0 there it is saturated whatever the machine has left.",
        "",
        *cpu_table(places),
        "",
        "Echo server, CPU per call (µs):",
        "",
        *echo_cpu_table(echoes),
        "",
        "## PostgreSQL backends during the window",
        "",
        "OrderService's pool connections, sampled from pg_stat_activity every 50 ms: how many were idle, running "
        "or waiting, on average.",
        "",
        *backend_lines(places),
        "",
        "## Database and relay work per order",
        "",
        *counter_lines(places),
        "",
        *warmup_lines(run),
        "",
        "## INFO logging",
        "",
        *info_lines(run, options, places),
        "",
    ]
    return "\n".join(lines)


def _clean(value: Any) -> Any:
    """NaN to null, recursively, so the JSON is standard."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    return value


def as_json(run: Run, options: Options, started: float, host: dict[str, Any], result: dict[str, Any]) -> str:
    data = {
        "date": datetime.fromtimestamp(started, UTC).isoformat(),
        "command": options.command,
        "commit": commit(),
        "machine": host,
        "versions": run.versions,
        "options": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(options).items()},
        "seed_seconds": round(run.seed_seconds, 2),
        "verdict": result,
        "summary": {kind: [asdict(s) for s in summaries(run, kind)] for kind in ("place", "echo", "place-info")},
        "database_orders": run.database_orders,
        "db_warmup": run.db_warmup.as_json() if run.db_warmup else None,
        "measurements": [m.as_json() for m in run.measurements],
    }
    return json.dumps(_clean(data), indent=2) + "\n"


def write(run: Run, options: Options, started: float) -> list[Path]:
    """Writes <results_dir>/place_order.md and .json; returns their paths."""
    host = machine()
    result = verdict(summaries(run, "place"))
    options.results_dir.mkdir(parents=True, exist_ok=True)
    md = options.results_dir / f"{NAME}.md"
    js = options.results_dir / f"{NAME}.json"
    md.write_text(markdown(run, options, started, host, result))
    js.write_text(as_json(run, options, started, host, result))
    print(md.read_text(), file=sys.stderr)
    return [md, js]
