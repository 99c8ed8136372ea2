"""Orders from placement to the exchange through the whole mesh, at several shard counts: `make bench-execution`.

`python -m benchmarks.execution [--shards 4,16,64] [--rate 200] [--in-flight 64] [--warmup S] [--duration S]
[--customers N] [--drain-timeout S] [--keep-logs DIR] [--pg-setting NAME=VALUE ...]`

For each shard count it starts what `make run` starts (devtools.mesh.plan_mesh: the exchange simulator with no
callback target, one OrderService, two worker clusters of two replicas each) on a fresh private PostgreSQL
(migrated, customers funded) and NATS (no streams: the ORDERS stream is created with that shard count), then
measures two phases, each a warm-up and a measured window of PlaceOrder load from a load generator process
(benchmarks.loadgen), buying 1 share of a few symbols for random customers:

- steady: an open loop at --rate orders/s. Once every order has left PLACED: the placed-to-submitted latency of
  the orders placed in the window, from the record (their `submitted` order event's occurred_at - created_at).
- saturation: --in-flight PlaceOrder calls back to back. Orders recorded SUBMITTED per second in the window, the
  placement rate, the backlog still PLACED when the load stops and the time to drain it, and the latency as above.

CPU of each process group is read from /proc at the windows' edges, the services' counters at the phases' edges,
and the services' logs for warnings and errors once they have stopped. Results go to
benchmarks/results/execution.md and .json. Every process it started is stopped after each shard count, and also on
Ctrl-C, SIGTERM or an error.
"""

from __future__ import annotations

import argparse
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks import execution_report, report
from benchmarks.counters import CounterSource, differences, read_all
from benchmarks.cpu import CpuSource, of_stats, process_stat
from benchmarks.mesh import (
    Complaints,
    RunningMesh,
    cpu_groups,
    keep_logs,
    log_complaints,
    mesh_counters,
    start_mesh,
)
from benchmarks.phases import (
    OPEN_LOOP_MAX_IN_FLIGHT,
    Calibration,
    calibrate,
    name_value,
    observe_window,
    on_sigterm,
    set_database_settings,
)
from benchmarks.phases import start_loadgen as start_phase_loadgen
from benchmarks.place_order import (
    ROOT,
    STOP_TIMEOUT_SECONDS,
    Stack,
    collect_loadgens,
    log,
    prepare_database,
    settle_database,
)
from benchmarks.stats import Measurement, measurement
from benchmarks.submissions import (
    SubmissionLatency,
    Window,
    backlog,
    orders_by_status,
    orders_created,
    submission_latency,
    submitted_between,
    wait_for_drain,
)
from devtools.stack import stop_processes

RESULTS_DIR = ROOT / "benchmarks" / "results"
STEADY = "steady"
SATURATION = "saturation"
PHASES = (STEADY, SATURATION)


@dataclass(frozen=True)
class Options:
    shards: tuple[int, ...]
    rate: float
    in_flight: int
    warmup: float
    duration: float
    customers: int
    deadline: float
    drain_timeout: float
    seed: int | None
    results_dir: Path
    keep_logs: Path | None
    pg_settings: dict[str, str]  # set on the benchmark's database (ALTER DATABASE), to measure other settings
    command: str


@dataclass
class Phase:
    """One load phase at one shard count, and what reaching the exchange made of its orders."""

    kind: str  # steady or saturation
    window: Window  # the measured window, wall clock
    placement: Measurement  # PlaceOrder as the load generator saw it, and the CPU of each group in the window
    latency: SubmissionLatency  # of the orders placed in the window
    submitted_in_window: int  # orders recorded SUBMITTED in the window, whenever placed
    backlog_seen: list[int]  # orders PLACED, sampled every 0.5 s through the window
    backlog_at_close: int  # orders PLACED when the window closed
    drain_seconds: float | None  # from the window's close until nothing was PLACED or being placed; None: timed out
    counters: dict[str, float]  # the services' counters over the phase, its warm-up and drain included
    orders_created: int  # orders the record gained over the phase, its warm-up and drain included

    @property
    def submitted_per_second(self) -> float:
        return self.submitted_in_window / self.window.seconds

    @property
    def placed_per_second(self) -> float:
        """PlaceOrder calls answered PLACED in the window, per second (the load generator's count)."""
        return self.placement.per_second

    @property
    def answered(self) -> int:
        """PlaceOrder calls answered with an order (PLACED or REJECTED), warm-up and drain included."""
        return sum(n for outcome, n in self.placement.outcomes_all.items() if outcome.startswith("ORDER_STATUS_"))

    @property
    def created_unanswered(self) -> int:
        """Orders created whose caller never heard of them: it had given up (deadline) before OrderService answered."""
        return self.orders_created - self.answered

    def cpu_us_per_order(self, group: str) -> float:
        """CPU µs of a group in the window per order placed in it and submitted (at a steady rate, the two match)."""
        return self.placement.cpu_seconds.get(group, 0.0) * 1e6 / max(self.latency.submitted, 1)

    def cpu_us_per_submission(self, group: str) -> float:
        """CPU µs of a group in the window per order recorded SUBMITTED in it."""
        return self.placement.cpu_seconds.get(group, 0.0) * 1e6 / max(self.submitted_in_window, 1)

    def as_json(self) -> dict[str, Any]:
        placement = self.placement.as_json()
        placement.pop("counters")  # unused: the phase's counters are below
        return {
            "kind": self.kind,
            "window": {"opens": self.window.opens, "closes": self.window.closes, "seconds": self.window.seconds},
            "placement": placement,
            "placed_per_second": self.placed_per_second,
            "latency": self.latency.as_json(),
            "submitted_in_window": self.submitted_in_window,
            "submitted_per_second": self.submitted_per_second,
            "backlog_seen": self.backlog_seen,
            "backlog_at_close": self.backlog_at_close,
            "drain_seconds": self.drain_seconds,
            "counters": self.counters,
            "orders_created": self.orders_created,
            "created_unanswered": self.created_unanswered,
        }


@dataclass
class Level:
    """Everything measured at one shard count."""

    shard_count: int
    seed_seconds: float
    start_seconds: float  # from starting the services to all of them ready
    clusters: list[str]  # each worker cluster's shards
    phases: dict[str, Phase] = field(default_factory=dict)
    orders_by_status: dict[str, int] = field(default_factory=dict)  # every order, once the services stopped
    complaints: Complaints = field(default_factory=dict)  # the services' log warnings and errors, by period

    @property
    def steady(self) -> Phase:
        return self.phases[STEADY]

    @property
    def saturation(self) -> Phase:
        return self.phases[SATURATION]

    def as_json(self) -> dict[str, Any]:
        return {
            "shard_count": self.shard_count,
            "seed_seconds": self.seed_seconds,
            "start_seconds": self.start_seconds,
            "clusters": self.clusters,
            "phases": {kind: phase.as_json() for kind, phase in self.phases.items()},
            "orders_by_status": self.orders_by_status,
            "log_complaints": self.complaints,
        }


@dataclass
class Run:
    levels: list[Level] = field(default_factory=list)
    versions: dict[str, str] = field(default_factory=dict)
    calibration: Calibration | None = None  # the machine's speed just before the run

    @property
    def failed(self) -> bool:
        """A PlaceOrder call that failed, or an order that never left PLACED."""
        phases = [phase for level in self.levels for phase in level.phases.values()]
        return any(p.placement.failed_all or p.drain_seconds is None for p in phases)


def start_loadgen(
    kind: str, mesh: RunningMesh, opens: float, closes: float, options: Options
) -> subprocess.Popen[bytes]:
    """The load generator of a phase: an open loop at --rate (steady) or --in-flight calls back to back."""
    return start_phase_loadgen(
        mesh.order_service.address,
        (opens, closes),
        rate=options.rate if kind == STEADY else None,
        in_flight=options.in_flight,
        deadline=options.deadline,
        customers=options.customers,
        seed=None if options.seed is None else options.seed + PHASES.index(kind),
        identity_dir=mesh.identity_dir,
    )


def run_phase(
    kind: str,
    mesh: RunningMesh,
    groups: Mapping[str, CpuSource],
    counters: Mapping[str, CounterSource],
    database_url: str,
    options: Options,
) -> Phase:
    """Warm-up and window of load, then the wait until every order has left PLACED, then the figures."""
    counters_before, created_before = read_all(counters), orders_created(database_url)
    opens = time.monotonic() + options.warmup
    closes = opens + options.duration
    wall_minus_monotonic = time.time() - time.monotonic()
    loadgen = start_loadgen(kind, mesh, opens, closes, options)
    try:
        with_client = {**groups, "client": of_stats(lambda: [process_stat(loadgen.pid)])}
        cpu, backlog_seen = observe_window(with_client, database_url, opens, closes)
        backlog_at_close = backlog(database_url)
        outputs = collect_loadgens([loadgen], timeout=options.deadline + 60)
    finally:
        stop_processes([loadgen], timeout=5)
    drain_seconds = wait_for_drain(database_url, closes, options.drain_timeout)
    window = Window(opens + wall_minus_monotonic, closes + wall_minus_monotonic)
    concurrency = OPEN_LOOP_MAX_IN_FLIGHT if kind == STEADY else options.in_flight
    placement = measurement("place", concurrency, 1, options.duration, outputs, cpu)
    placement.late_start = any(float(out["first_call_at"]) > opens for out in outputs)
    phase = Phase(
        kind=kind,
        window=window,
        placement=placement,
        latency=submission_latency(database_url, window),
        submitted_in_window=submitted_between(database_url, window),
        backlog_seen=backlog_seen,
        backlog_at_close=backlog_at_close,
        drain_seconds=drain_seconds,
        counters=differences(counters_before, read_all(counters)),
        orders_created=orders_created(database_url) - created_before,
    )
    log_phase(phase)
    return phase


def log_phase(phase: Phase) -> None:
    latency = phase.latency
    drained = "not drained" if phase.drain_seconds is None else f"drained in {phase.drain_seconds:.1f} s"
    log(
        f"{phase.kind:>10}: placed {phase.placed_per_second:7.1f}/s, submitted {phase.submitted_per_second:7.1f}/s, "
        f"placed-to-submitted p50 {latency.p50_ms:8.1f} ms p99 {latency.p99_ms:8.1f} ms, backlog at close "
        f"{phase.backlog_at_close}, {drained}; PlaceOrder failures {phase.placement.failed_all}, machine busy "
        f"{phase.placement.machine_busy_fraction:.0%}"
    )


def measure_level(shard_count: int, options: Options, run: Run) -> Level:
    """One shard count on fresh servers; everything it started is stopped and removed before it returns."""
    stack = Stack(prefix=f"bench-execution-{shard_count}-")
    try:
        return measure_on(stack, shard_count, options, run)
    finally:
        if options.keep_logs:
            keep_logs(stack, options.keep_logs / f"shards-{shard_count}")
        stack.close()


def measure_calibration() -> Calibration:
    stack = Stack(prefix="bench-execution-calibration-")
    try:
        calibration = calibrate(stack)
    finally:
        stack.close()
    log(f"calibration: {calibration.describe()}")
    return calibration


def measure_on(stack: Stack, shard_count: int, options: Options, run: Run) -> Level:
    cluster, nats = stack.postgres(), stack.nats()
    log(f"{shard_count} shards: PostgreSQL on {cluster.port}, NATS on {nats.port}, work dir {stack.work_dir}")
    database_url, seed_seconds = prepare_database(cluster, options.customers)
    set_database_settings(database_url, options.pg_settings)
    settle_database(database_url)
    starting = time.monotonic()
    mesh = start_mesh(stack, database_url, nats.url, shard_count)
    clusters = sorted({worker.env["BROKER_SHARDS"] for worker in mesh.plan.workers})
    level = Level(shard_count, seed_seconds, time.monotonic() - starting, clusters)
    log(f"{len(mesh.services)} services ready in {level.start_seconds:.1f} s; worker clusters {', '.join(clusters)}")
    groups = cpu_groups(mesh, cluster, nats, database_url)
    counters = mesh_counters(mesh)
    load_from = time.time()
    for kind in PHASES:
        level.phases[kind] = run_phase(kind, mesh, groups, counters, database_url, options)
    if not run.versions:
        run.versions = report.versions(database_url, nats)
    level.orders_by_status = orders_by_status(database_url)
    load_until = time.time()
    stop_processes([served.process for served in mesh.services], STOP_TIMEOUT_SECONDS)
    level.complaints = log_complaints(stack, mesh, load_from, load_until)
    return level


def parse_args(argv: Sequence[str] | None = None) -> Options:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shards", type=_counts, default=(4, 16, 64), help="shard counts, comma-separated")
    parser.add_argument("--rate", type=float, default=200.0, help="orders/s offered in the steady phase")
    parser.add_argument("--in-flight", type=int, default=64, help="PlaceOrder calls in flight in the saturation phase")
    parser.add_argument("--warmup", type=float, default=5.0, help="seconds of load before each window")
    parser.add_argument("--duration", type=float, default=30.0, help="seconds measured per phase")
    parser.add_argument("--customers", type=int, default=10_000, help="funded customers (default 10,000)")
    parser.add_argument("--deadline", type=float, default=5.0, help="per-call deadline of PlaceOrder, seconds")
    parser.add_argument(
        "--drain-timeout", type=float, default=600.0, help="longest wait, seconds, for the backlog after a window"
    )
    parser.add_argument("--seed", type=int, default=None, help="random seed of the requests")
    parser.add_argument("--results-dir", type=Path, default=RESULTS_DIR)
    parser.add_argument("--keep-logs", type=Path, default=None, help="copy every process's log here (per shard count)")
    parser.add_argument(
        "--pg-setting",
        action="append",
        type=name_value,
        default=[],
        metavar="NAME=VALUE",
        help="a PostgreSQL setting for the database the services use, e.g. jit=off (repeatable; default: none)",
    )
    args = parser.parse_args(argv)
    command = " ".join(["python -m benchmarks.execution", *map(shlex.quote, sys.argv[1:] if argv is None else argv)])
    return Options(
        shards=args.shards,
        rate=args.rate,
        in_flight=args.in_flight,
        warmup=args.warmup,
        duration=args.duration,
        customers=args.customers,
        deadline=args.deadline,
        drain_timeout=args.drain_timeout,
        seed=args.seed,
        results_dir=args.results_dir,
        keep_logs=args.keep_logs,
        pg_settings=dict(args.pg_setting),
        command=command,
    )


def _counts(text: str) -> tuple[int, ...]:
    counts = tuple(int(x) for x in text.split(",") if x.strip())
    if not counts or min(counts) < 1:
        raise argparse.ArgumentTypeError("shard counts are positive integers, e.g. 4,16,64")
    return counts


def main(argv: Sequence[str] | None = None) -> int:
    options = parse_args(argv)
    signal.signal(signal.SIGTERM, on_sigterm)
    started = time.time()
    run = Run()
    try:
        run.calibration = measure_calibration()
        for shard_count in options.shards:
            run.levels.append(measure_level(shard_count, options, run))
    except KeyboardInterrupt:
        log("interrupted: everything started was stopped")
        return 130
    paths = execution_report.write(run, options, started)
    log(f"results: {', '.join(str(p) for p in paths)}")
    return 1 if run.failed else 0


if __name__ == "__main__":
    sys.exit(main())
