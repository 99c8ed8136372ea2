"""Orders from placement to FILLED and settled through the whole mesh: `make bench-settlement`.

`python -m benchmarks.settlement [--rate 300] [--rates 300,400,500,600] [--in-flight 64] [--warmup S] [--duration S]
[--customers N] [--max-quantity 10] [--shards 16] [--drain-timeout S] [--keep-logs DIR] [--pg-setting NAME=VALUE ...]
[--service-setting NAME=VALUE ...]`

Starts what `make run` starts (devtools.mesh.plan_mesh: CallbackService, the exchange simulator reporting to it with
its default fill delay and partial fills, no chaos and no journal, since a real venue's memory costs us nothing; one
OrderService, two worker clusters of two replicas each) on a fresh private PostgreSQL (migrated, customers funded)
and NATS, then runs phases of PlaceOrder load from a load generator process (benchmarks.loadgen), each a warm-up
and a measured window, buying 1 to --max-quantity shares (default 10: with several shares the simulator fills some
orders in parts) of a few symbols for random customers:

- open loop at each offered rate of --rates and at --rate (a rate in both is measured once, and is the latency
  phase): once every order has ended, the placed-to-settled latency of the orders placed in the window (their
  terminal order event's occurred_at - created_at; placed-to-submitted beside it), orders ended per second in the
  window, the backlog of orders not yet ended at the window's edges and the time to drain it after the load stops,
  and the PlaceOrder calls that failed. A rate is kept up when every call in the window answered PLACED, orders
  ended in the window reached KEPT_UP of those offered, and the backlog grew by at most BACKLOG_GROWTH of them.
- saturation (unless --in-flight 0): that many PlaceOrder calls in flight back to back; the same figures.

Each phase starts once the one before has drained. CPU of each process group (CallbackService included) is read from
/proc at the windows' edges, the services' counters and PostgreSQL's WAL at the phases' edges; at the end the
reconciliation (`python -m brokerage.reconcile`, against the simulator's drop copy) and the services' logs, for
warnings and errors, once they have stopped. Results go to benchmarks/results/settlement.md and .json; the exit
status is 1 if a phase did not drain, a report became a break, or reconciliation found a discrepancy. Services take
BROKER_* and EXCHANGE_* settings from --service-setting (or BENCH_BROKER_* / BENCH_EXCHANGE_* variables, as
benchmarks.execution). Every process it started is stopped, also on Ctrl-C, SIGTERM or an error.
"""

from __future__ import annotations

import argparse
import os
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks import report, settlement_report
from benchmarks.counters import CounterSource, differences, postgres_counters, read_all
from benchmarks.cpu import CpuSource, of_stats, process_stat
from benchmarks.mesh import (
    Complaints,
    RunningMesh,
    bench_overrides,
    cpu_groups,
    keep_logs,
    log_complaints,
    mesh_counters,
    mesh_gauges,
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
    start_loadgen,
)
from benchmarks.place_order import (
    ROOT,
    STOP_TIMEOUT_SECONDS,
    Stack,
    collect_loadgens,
    log,
    prepare_database,
    settle_database,
)
from benchmarks.settlements import (
    BACKLOG_GROWTH,
    KEPT_UP,
    LATENCY_RATE,
    OPEN_STATUSES,
    P99_LIMIT_MS,
    Ended,
    SettlementLatency,
    breaks_by_kind,
    ended_between,
    settlement_latency,
)
from benchmarks.stats import Measurement, measurement
from benchmarks.submissions import (
    SubmissionLatency,
    Window,
    backlog,
    orders_by_status,
    orders_created,
    submission_latency,
    wait_for_drain,
)
from devtools.stack import stop_processes

RESULTS_DIR = ROOT / "benchmarks" / "results"
RECONCILE_TIMEOUT_SECONDS = 600.0


@dataclass(frozen=True)
class Options:
    rate: float  # the latency phase's offered rate
    rates: tuple[float, ...]
    in_flight: int  # 0: no saturation phase
    warmup: float
    duration: float
    customers: int
    max_quantity: int  # each order buys 1 to this many shares: above 1, some fill in parts
    shards: int
    deadline: float
    drain_timeout: float
    seed: int | None
    results_dir: Path
    keep_logs: Path | None
    pg_settings: dict[str, str]  # set on the benchmark's database (ALTER DATABASE), to measure other settings
    service_settings: dict[str, str]  # BROKER_* and EXCHANGE_* settings for every service
    command: str

    @property
    def open_rates(self) -> tuple[float, ...]:
        """Every offered rate measured in an open loop, ascending: --rates and --rate."""
        return tuple(sorted({self.rate, *self.rates}))


@dataclass
class Phase:
    """One phase of load, and what settlement made of its orders."""

    rate: float | None  # offered orders/s of an open loop; None: a closed loop of in_flight calls
    in_flight: int
    window: Window  # the measured window, wall clock
    placement: Measurement  # PlaceOrder as the load generator saw it, and the CPU of each group in the window
    latency: SettlementLatency  # placed to settled, of the orders placed in the window
    submission: SubmissionLatency  # placed to submitted, of the same orders
    ended: Ended  # terminal events in the window, whenever their orders were placed
    backlog_seen: list[int]  # orders not yet ended, sampled every 0.5 s through the window
    backlog_at_close: int
    awaiting_delivery: float  # execution reports the simulator had not yet delivered when the window closed
    drain_seconds: float | None  # from the window's close until every order had ended; None: timed out
    counters: dict[str, float]  # the services' counters and WAL over the phase, its warm-up and drain included
    orders_created: int  # orders the record gained over the phase, its warm-up and drain included

    @property
    def name(self) -> str:
        return f"{self.rate:g}/s" if self.rate is not None else f"{self.in_flight} in flight"

    @property
    def settled_per_second(self) -> float:
        return self.ended.total / self.window.seconds

    @property
    def backlog_at_open(self) -> int:
        return self.backlog_seen[0] if self.backlog_seen else 0

    @property
    def backlog_growth(self) -> int:
        return self.backlog_at_close - self.backlog_at_open

    @property
    def offered(self) -> float:
        """Orders offered in the window by an open loop (NaN for a closed loop)."""
        return self.rate * self.window.seconds if self.rate is not None else float("nan")

    @property
    def kept_up(self) -> bool:
        """An open loop whose every call in the window answered PLACED, whose orders ended at (nearly) the offered
        rate, with no backlog building up, and which drained."""
        return (
            self.rate is not None
            and self.placement.failed_window == 0
            and self.ended.total >= KEPT_UP * self.offered
            and self.backlog_growth <= BACKLOG_GROWTH * self.offered
            and self.drain_seconds is not None
        )

    @property
    def within_p99(self) -> bool:
        return self.kept_up and self.latency.p99_ms <= P99_LIMIT_MS

    def cpu_us_per_order(self, group: str) -> float:
        """CPU µs of a group in the window per order ended in it (at a steady rate, as many as were placed)."""
        return self.placement.cpu_seconds.get(group, 0.0) * 1e6 / max(self.ended.total, 1)

    def as_json(self) -> dict[str, Any]:
        placement = self.placement.as_json()
        placement.pop("counters")  # unused: the phase's counters are below
        return {
            "name": self.name,
            "rate": self.rate,
            "in_flight": self.in_flight,
            "window": {"opens": self.window.opens, "closes": self.window.closes, "seconds": self.window.seconds},
            "placement": placement,
            "latency": self.latency.as_json(),
            "submission": self.submission.as_json(),
            "ended": self.ended.as_json(),
            "settled_per_second": self.settled_per_second,
            "backlog_seen": self.backlog_seen,
            "backlog_at_open": self.backlog_at_open,
            "backlog_at_close": self.backlog_at_close,
            "awaiting_delivery_at_close": self.awaiting_delivery,
            "drain_seconds": self.drain_seconds,
            "kept_up": self.kept_up,
            "within_p99": self.within_p99,
            "counters": self.counters,
            "orders_created": self.orders_created,
        }


@dataclass(frozen=True)
class Reconciliation:
    returncode: int  # 0 clean, 1 discrepancies, 2 could not run
    output: str


@dataclass
class Run:
    phases: list[Phase] = field(default_factory=list)
    versions: dict[str, str] = field(default_factory=dict)
    seed_seconds: float = 0.0
    start_seconds: float = 0.0  # from starting the services to all of them ready
    clusters: list[str] = field(default_factory=list)  # each worker cluster's shards
    settings: dict[str, str] = field(default_factory=dict)  # the BROKER_* / EXCHANGE_* overrides the services had
    orders_by_status: dict[str, int] = field(default_factory=dict)  # every order, at the end
    breaks: dict[str, int] = field(default_factory=dict)  # by kind, at the end
    reconciliation: Reconciliation | None = None
    complaints: Complaints = field(default_factory=dict)  # the services' log warnings and errors, by period
    calibration: Calibration | None = None  # the machine's speed just before the run

    @property
    def open_loops(self) -> list[Phase]:
        return [phase for phase in self.phases if phase.rate is not None]

    @property
    def saturation(self) -> Phase | None:
        return next((phase for phase in self.phases if phase.rate is None), None)

    def at_rate(self, rate: float) -> Phase | None:
        return next((phase for phase in self.open_loops if phase.rate == rate), None)

    @property
    def failed(self) -> bool:
        """A phase that did not drain, a break, or a reconciliation that was not clean."""
        undrained = any(phase.drain_seconds is None for phase in self.phases)
        unreconciled = self.reconciliation is not None and self.reconciliation.returncode != 0
        return undrained or bool(self.breaks) or unreconciled

    def as_json(self) -> dict[str, Any]:
        return {
            "calibration": self.calibration.as_json() if self.calibration else None,
            "seed_seconds": self.seed_seconds,
            "start_seconds": self.start_seconds,
            "clusters": self.clusters,
            "service_settings": self.settings,
            "phases": [phase.as_json() for phase in self.phases],
            "orders_by_status": self.orders_by_status,
            "breaks": self.breaks,
            "reconciliation": (
                {"returncode": self.reconciliation.returncode, "output": self.reconciliation.output}
                if self.reconciliation
                else None
            ),
            "log_complaints": self.complaints,
        }


@dataclass(frozen=True)
class Bench:
    """What every phase measures with: the mesh, its CPU groups and counters, the record."""

    mesh: RunningMesh
    groups: Mapping[str, CpuSource]
    counters: Mapping[str, CounterSource]
    gauges: Mapping[str, CounterSource]
    database_url: str


def run_phase(bench: Bench, rate: float | None, index: int, options: Options) -> Phase:
    """Warm-up and window of load, then the wait until every order has ended, then the figures."""
    database_url = bench.database_url
    counters_before, created_before = read_all(bench.counters), orders_created(database_url)
    opens = time.monotonic() + options.warmup
    closes = opens + options.duration
    wall_minus_monotonic = time.time() - time.monotonic()
    seed = None if options.seed is None else options.seed + index
    loadgen = start_loadgen(
        bench.mesh.order_service.address,
        (opens, closes),
        rate=rate,
        in_flight=options.in_flight,
        deadline=options.deadline,
        customers=options.customers,
        seed=seed,
        identity_dir=bench.mesh.identity_dir,
        max_quantity=options.max_quantity,
    )
    try:
        with_client = {**bench.groups, "client": of_stats(lambda: [process_stat(loadgen.pid)])}
        cpu, backlog_seen = observe_window(with_client, database_url, opens, closes, OPEN_STATUSES)
        backlog_at_close = backlog(database_url, OPEN_STATUSES)
        gauges = read_all(bench.gauges)
        outputs = collect_loadgens([loadgen], timeout=options.deadline + 60)
    finally:
        stop_processes([loadgen], timeout=5)
    drain_seconds = wait_for_drain(database_url, closes, options.drain_timeout, OPEN_STATUSES)
    window = Window(opens + wall_minus_monotonic, closes + wall_minus_monotonic)
    concurrency = OPEN_LOOP_MAX_IN_FLIGHT if rate is not None else options.in_flight
    placement = measurement("place", concurrency, 1, options.duration, outputs, cpu)
    placement.late_start = any(float(out["first_call_at"]) > opens for out in outputs)
    phase = Phase(
        rate=rate,
        in_flight=concurrency,
        window=window,
        placement=placement,
        latency=settlement_latency(database_url, window),
        submission=submission_latency(database_url, window),
        ended=ended_between(database_url, window),
        backlog_seen=backlog_seen,
        backlog_at_close=backlog_at_close,
        awaiting_delivery=gauges.get("reports_awaiting_delivery", 0.0),
        drain_seconds=drain_seconds,
        counters=differences(counters_before, read_all(bench.counters)),
        orders_created=orders_created(database_url) - created_before,
    )
    log_phase(phase)
    return phase


def log_phase(phase: Phase) -> None:
    latency = phase.latency
    drained = "not drained" if phase.drain_seconds is None else f"drained in {phase.drain_seconds:.1f} s"
    log(
        f"{phase.name:>12}: placed {phase.placement.per_second:7.1f}/s, settled {phase.settled_per_second:7.1f}/s, "
        f"placed-to-settled p50 {latency.p50_ms:7.1f} ms p99 {latency.p99_ms:7.1f} ms, backlog "
        f"{phase.backlog_at_open} -> {phase.backlog_at_close}, {drained}; PlaceOrder failures in window "
        f"{phase.placement.failed_window}, machine busy {phase.placement.machine_busy_fraction:.0%}"
    )


def measure(options: Options, run: Run) -> None:
    """Everything on fresh servers; everything it started is stopped and removed before it returns."""
    stack = Stack(prefix="bench-settlement-")
    try:
        measure_on(stack, options, run)
    finally:
        if options.keep_logs:
            keep_logs(stack, options.keep_logs)
        stack.close()


def measure_on(stack: Stack, options: Options, run: Run) -> None:
    run.calibration = calibrate(stack)
    log(f"calibration: {run.calibration.describe()}")
    cluster, nats = stack.postgres(), stack.nats()
    log(f"PostgreSQL on {cluster.port}, NATS on {nats.port}, work dir {stack.work_dir}")
    database_url, run.seed_seconds = prepare_database(cluster, options.customers)
    set_database_settings(database_url, options.pg_settings)
    settle_database(database_url)
    run.settings = {**bench_overrides(), **options.service_settings}
    starting = time.monotonic()
    mesh = start_mesh(stack, database_url, nats.url, options.shards, settlement=True, settings=options.service_settings)
    run.start_seconds = time.monotonic() - starting
    run.clusters = sorted({worker.env["BROKER_SHARDS"] for worker in mesh.plan.workers})
    log(f"{len(mesh.services)} services ready in {run.start_seconds:.1f} s; worker clusters {', '.join(run.clusters)}")
    counters = {**mesh_counters(mesh), "postgres": postgres_counters(database_url)}
    groups = cpu_groups(mesh, cluster, nats, database_url)
    bench = Bench(mesh, groups, counters, mesh_gauges(mesh), database_url)
    load_from = time.time()
    loads: list[float | None] = [*options.open_rates, *([None] if options.in_flight else [])]
    for index, rate in enumerate(loads):
        run.phases.append(run_phase(bench, rate, index, options))
    run.versions = report.versions(database_url, nats)
    run.orders_by_status = orders_by_status(database_url)
    run.breaks = breaks_by_kind(database_url)
    run.reconciliation = reconcile(database_url, mesh)
    load_until = time.time()
    stop_processes([served.process for served in mesh.services], STOP_TIMEOUT_SECONDS)
    run.complaints = log_complaints(stack, mesh, load_from, load_until)


def reconcile(database_url: str, mesh: RunningMesh) -> Reconciliation:
    """`python -m brokerage.reconcile` against the record and the simulator's drop copy, once everything ended."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("BROKER_")}
    env |= {
        "BROKER_DATABASE_URL": database_url,
        "BROKER_EXCHANGE_TARGET": mesh.exchange.address,
        "BROKER_LOG_LEVEL": "WARNING",
    }
    done = subprocess.run(
        [sys.executable, "-m", "brokerage.reconcile"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=RECONCILE_TIMEOUT_SECONDS,
        check=False,
    )
    output = (done.stdout + done.stderr).strip()
    log(f"reconciliation exited {done.returncode}: {output.splitlines()[-1] if output else '(no output)'}")
    return Reconciliation(done.returncode, output)


def parse_args(argv: Sequence[str] | None = None) -> Options:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", type=float, default=LATENCY_RATE, help="orders/s offered in the latency phase")
    parser.add_argument(
        "--rates", type=_rates, default=(300.0, 400.0, 500.0, 600.0), help="offered orders/s, comma-separated"
    )
    parser.add_argument(
        "--in-flight", type=int, default=64, help="PlaceOrder calls in flight at saturation (0: no saturation phase)"
    )
    parser.add_argument("--warmup", type=float, default=10.0, help="seconds of load before each window")
    parser.add_argument("--duration", type=float, default=60.0, help="seconds measured per phase")
    parser.add_argument("--customers", type=int, default=10_000, help="funded customers (default 10,000)")
    parser.add_argument(
        "--max-quantity", type=int, default=10, help="each order buys 1 to this many shares (1: never partly filled)"
    )
    parser.add_argument("--shards", type=int, default=16, help="the shard count (default 16, as `make run`)")
    parser.add_argument("--deadline", type=float, default=5.0, help="per-call deadline of PlaceOrder, seconds")
    parser.add_argument(
        "--drain-timeout",
        type=float,
        default=300.0,
        help="longest wait, seconds, for every order to end after a window",
    )
    parser.add_argument("--seed", type=int, default=None, help="random seed of the requests")
    parser.add_argument("--results-dir", type=Path, default=RESULTS_DIR)
    parser.add_argument("--keep-logs", type=Path, default=None, help="copy every process's log here")
    parser.add_argument(
        "--pg-setting",
        action="append",
        type=name_value,
        default=[],
        metavar="NAME=VALUE",
        help="a PostgreSQL setting for the database the services use, e.g. jit=off (repeatable; default: none)",
    )
    parser.add_argument(
        "--service-setting",
        action="append",
        type=_service_setting,
        default=[],
        metavar="NAME=VALUE",
        help="a BROKER_* or EXCHANGE_* setting for every service, e.g. BROKER_SETTLEMENT_FLUSHERS=2 (repeatable)",
    )
    args = parser.parse_args(argv)
    if args.in_flight < 0 or args.max_quantity < 1 or min(args.warmup, args.duration, args.rate) <= 0:
        parser.error("--rate, --warmup, --duration and --max-quantity must be positive, --in-flight at least 0")
    command = " ".join(["python -m benchmarks.settlement", *map(shlex.quote, sys.argv[1:] if argv is None else argv)])
    return Options(
        rate=args.rate,
        rates=args.rates,
        in_flight=args.in_flight,
        warmup=args.warmup,
        duration=args.duration,
        customers=args.customers,
        max_quantity=args.max_quantity,
        shards=args.shards,
        deadline=args.deadline,
        drain_timeout=args.drain_timeout,
        seed=args.seed,
        results_dir=args.results_dir,
        keep_logs=args.keep_logs,
        pg_settings=dict(args.pg_setting),
        service_settings=dict(args.service_setting),
        command=command,
    )


def _rates(text: str) -> tuple[float, ...]:
    rates = tuple(float(x) for x in text.split(",") if x.strip())
    if not rates or min(rates) <= 0:
        raise argparse.ArgumentTypeError("rates are positive orders/s, e.g. 300,400,500,600")
    return rates


def _service_setting(text: str) -> tuple[str, str]:
    name, value = name_value(text)
    if not name.startswith(("BROKER_", "EXCHANGE_")):
        raise argparse.ArgumentTypeError("a service setting is a BROKER_* or EXCHANGE_* variable")
    return name, value


def main(argv: Sequence[str] | None = None) -> int:
    options = parse_args(argv)
    signal.signal(signal.SIGTERM, on_sigterm)
    started = time.time()
    run = Run()
    try:
        measure(options, run)
    except KeyboardInterrupt:
        log("interrupted: everything started was stopped")
        return 130
    paths = settlement_report.write(run, options, started)
    log(f"results: {', '.join(str(p) for p in paths)}")
    return 1 if run.failed else 0


if __name__ == "__main__":
    sys.exit(main())
