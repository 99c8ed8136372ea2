"""PlaceOrder throughput and latency against funded customers, beside a bare grpc.aio echo server: `make bench`.

`python -m benchmarks.place_order [--customers N] [--levels 8,16,32,64,128] [--warmup S] [--duration S] [--reps R]`

Starts its own PostgreSQL and NATS (free ports, data in a temporary directory, removed at the end), migrates,
funds the customers, starts OrderService (`python -m order_service`, twice: logging at WARNING and at INFO) and the
echo server (`benchmarks.echo_server`) as processes. After an unmeasured database warm-up it keeps, at each level,
that many calls in flight from load generator processes (`benchmarks.loadgen`): PlaceOrder, then (at one level)
PlaceOrder on the INFO service, then echo, each for a warm-up and a measured window. CPU time of the server,
PostgreSQL, NATS, the clients and the whole machine is read from /proc at the window's edges, with WAL and outbox
relay counters; the database's connections are sampled during it. Results go to benchmarks/results/place_order.md
and .json. Every process it started is stopped, also on Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import grpc
import psycopg
from grpc_health.v1 import health_pb2, health_pb2_grpc

from benchmarks import report
from benchmarks.counters import CounterSource, differences, postgres_counters, read_all, relay_counters
from benchmarks.cpu import (
    CpuSource,
    of_stats,
    of_tree,
    pids_with_argument,
    process_stat,
    sample,
    thread_stat,
    used_between,
)
from benchmarks.pgwaits import WaitSampler, backend_pids
from benchmarks.stats import Measurement, measurement
from brokerage.storage import migrate
from brokerage.storage.seed import seed
from devtools.stack import NatsServer, PostgresCluster, free_port, port_open, spawn, stop_processes, wait_until
from devtools.token import DevIdentity

ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = ROOT / "benchmarks" / "results"
DATABASE = "brokerage"
ORDER_SERVICE = "broker.v1.OrderService"
READY_TIMEOUT_SECONDS = 60.0
STOP_TIMEOUT_SECONDS = 15.0
SEED_WARN_SECONDS = 120.0
DB_WARMUP_CONCURRENCY = 32


@dataclass(frozen=True)
class Options:
    customers: int
    levels: tuple[int, ...]
    warmup: float
    duration: float
    reps: int
    clients: int
    deadline: float
    info_level: int
    db_warmup: float
    seed: int | None
    results_dir: Path
    command: str


@dataclass(frozen=True)
class Served:
    """A server process we started and the gRPC address it listens on."""

    process: subprocess.Popen[bytes]
    address: str
    name: str
    metrics_port: int | None = None


@dataclass
class Target:
    """A server under load: what the results call it, its gRPC address, its CPU groups (the client is added)."""

    kind: str  # place, place-info or echo
    address: str
    groups: dict[str, CpuSource]
    counters: dict[str, CounterSource] = field(default_factory=dict)
    database_url: str | None = None  # set for PlaceOrder: its backends are sampled during the window
    application_name: str = ""  # the server's PostgreSQL application_name, which tells its backends apart
    identity_dir: Path | None = None  # PlaceOrder: the development keys its load generators sign calls with

    def wait_sampler(self) -> WaitSampler | None:
        return WaitSampler(self.database_url, self.application_name) if self.database_url else None

    @property
    def method(self) -> str:
        """The load generator's --kind: place or echo."""
        return "echo" if self.kind == "echo" else "place"


@dataclass
class Run:
    """What one benchmark run measured and how long its set-up took."""

    measurements: list[Measurement] = field(default_factory=list)
    seed_seconds: float = 0.0
    database_orders: dict[str, int] = field(default_factory=dict)
    db_warmup: Measurement | None = None  # the unmeasured warm-up load, kept for its counters
    versions: dict[str, str] = field(default_factory=dict)


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


class Stack:
    """The private servers and child processes of a run; close() stops them in reverse order of start."""

    def __init__(self, prefix: str = "bench-place-order-") -> None:
        self._exit = ExitStack()
        self.work_dir = Path(tempfile.mkdtemp(prefix=prefix))
        self._exit.callback(_remove_tree, self.work_dir)
        self._identity: DevIdentity | None = None

    @property
    def identity(self) -> DevIdentity:
        """The run's development issuers, whose keys sign its load generators' calls."""
        if self._identity is None:
            self._identity = DevIdentity(self.work_dir / "identity").ensure()
        return self._identity

    def postgres(self) -> PostgresCluster:
        cluster = PostgresCluster(self.work_dir / "pg", free_port())
        self._exit.enter_context(cluster)
        return cluster

    def nats(self) -> NatsServer:
        server = NatsServer(self.work_dir / "nats", free_port())
        self._exit.enter_context(server)
        return server

    def process(self, name: str, args: Sequence[str], env: Mapping[str, str] | None = None) -> subprocess.Popen[bytes]:
        """`python <args>` in the repository root, output to <work_dir>/<name>.log, stopped by close()."""
        with (self.work_dir / f"{name}.log").open("ab") as out:
            child = spawn(
                [sys.executable, *args],
                cwd=ROOT,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        self._exit.callback(stop_processes, [child], STOP_TIMEOUT_SECONDS)
        return child

    def log_tail(self, name: str, lines: int = 30) -> str:
        path = self.work_dir / f"{name}.log"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""

    def close(self) -> None:
        self._exit.close()


def _remove_tree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


def prepare_database(cluster: PostgresCluster, customers: int) -> tuple[str, float]:
    """Creates and migrates the database and funds the customers; returns its URL and the seeding time."""
    cluster.create_database(DATABASE)
    url = cluster.url(DATABASE)
    migrate.apply(url)
    started = time.monotonic()
    seed(url, customers)
    seconds = time.monotonic() - started
    log(f"funded {customers:,} customers in {seconds:.1f} s")
    if seconds > SEED_WARN_SECONDS:
        log(f"WARNING: seeding took longer than {SEED_WARN_SECONDS:.0f} s")
    return url, seconds


def order_service_env(
    database_url: str, nats_url: str, ports: tuple[int, int], log_level: str, application_name: str
) -> dict[str, str]:
    """The process environment without inherited BROKER_* variables, plus the benchmark's settings, plus any
    BENCH_BROKER_* variables as BROKER_* ones (to measure the service under other settings)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("BROKER_")}
    env.update(
        {
            "BROKER_DATABASE_URL": f"{database_url}?application_name={application_name}",
            "BROKER_NATS_URL": nats_url,
            "BROKER_GRPC_HOST": "127.0.0.1",
            "BROKER_GRPC_PORT": str(ports[0]),
            "BROKER_METRICS_PORT": str(ports[1]),
            "BROKER_QUOTE_MAX_AGE_SECONDS": "86400",  # nothing refreshes the seeded quotes
            "BROKER_LOG_LEVEL": log_level,
            "BROKER_SHUTDOWN_READINESS_DELAY_SECONDS": "0",
        }
    )
    env.update({k.removeprefix("BENCH_"): v for k, v in os.environ.items() if k.startswith("BENCH_BROKER_")})
    return env


def start_order_service(stack: Stack, database_url: str, nats_url: str, log_level: str) -> Served:
    """Starts OrderService and returns once its health says SERVING."""
    port, metrics_port = free_port(), free_port()
    name = f"order-service-{log_level.lower()}"
    env = order_service_env(database_url, nats_url, (port, metrics_port), log_level, application_name=name)
    env.update(stack.identity.settings_env())
    child = stack.process(name, ["-m", "order_service"], env)
    served = Served(child, f"127.0.0.1:{port}", name, metrics_port)
    try:
        wait_serving(served)
    except (TimeoutError, RuntimeError) as error:
        raise RuntimeError(f"{error}\n--- {name} log ---\n{stack.log_tail(name)}") from error
    return served


def wait_serving(served: Served, health_name: str = ORDER_SERVICE) -> None:
    """Polls grpc.health.v1 for health_name (by default the OrderService) until SERVING; fails if the process
    exits."""
    child, address = served.process, served.address
    with grpc.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        request = health_pb2.HealthCheckRequest(service=health_name)

        def serving() -> bool:
            if child.poll() is not None:
                raise RuntimeError(f"{served.name} exited with {child.returncode}")
            try:
                return stub.Check(request, timeout=1.0).status == health_pb2.HealthCheckResponse.SERVING
            except grpc.RpcError:
                return False

        wait_until(serving, READY_TIMEOUT_SECONDS, f"{health_name} SERVING on {address}")


def start_echo_server(stack: Stack) -> Served:
    """Starts the echo server; returns once it accepts connections."""
    port = free_port()
    child = stack.process("echo-server", ["-m", "benchmarks.echo_server", "--port", str(port)])
    wait_until(lambda: child.poll() is not None or port_open(port), READY_TIMEOUT_SECONDS, "the echo server")
    if child.poll() is not None:
        raise RuntimeError(f"echo server exited with {child.returncode}:\n{stack.log_tail('echo-server')}")
    return Served(child, f"127.0.0.1:{port}", "echo-server")


def shares(total: int, parts: int) -> list[int]:
    """total split into at most `parts` near-equal positive shares."""
    parts = max(1, min(parts, total))
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


def start_loadgens(
    target: Target, concurrency: int, window: tuple[float, float], options: Options, rep: int
) -> list[subprocess.Popen[bytes]]:
    """Starts the load generator processes (not in the Stack: each is awaited by collect_loadgens)."""
    children = []
    for index, share in enumerate(shares(concurrency, options.clients)):
        args = [
            "--kind",
            target.method,
            "--target",
            target.address,
            "--concurrency",
            str(share),
            "--measure-from",
            repr(window[0]),
            "--measure-until",
            repr(window[1]),
            "--deadline",
            str(options.deadline),
            "--customers",
            str(options.customers),
        ]
        if target.identity_dir is not None:
            args += ["--identity-dir", str(target.identity_dir)]
        if options.seed is not None:
            args += ["--seed", str(options.seed * 1_000_003 + rep * 10_007 + concurrency * 101 + index)]
        children.append(
            spawn(
                [sys.executable, "-m", "benchmarks.loadgen", *args],
                cwd=ROOT,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            )
        )
    return children


def collect_loadgens(children: Sequence[subprocess.Popen[bytes]], timeout: float) -> list[dict[str, Any]]:
    """Waits for the load generators and parses their JSON; raises if one failed."""
    outputs = []
    for child in children:
        out, err = child.communicate(timeout=timeout)
        if child.returncode != 0:
            raise RuntimeError(f"load generator exited with {child.returncode}:\n{err.decode(errors='replace')}")
        outputs.append(json.loads(out))
    return outputs


def sleep_until(moment: float) -> None:
    time.sleep(max(0.0, moment - time.monotonic()))


@dataclass
class WindowView:
    """What was observed during a window besides the calls themselves."""

    cpu: dict[str, float]  # CPU seconds per group, and the machine's
    counters: dict[str, float]  # differences of the target's counters
    backends: dict[str, float]  # average database connections per state
    outbox_unpublished: int | None  # messages waiting for the relay at the end


def observe_window(target: Target, groups: Mapping[str, CpuSource], opens: float, closes: float) -> WindowView:
    """Samples CPU and counters at the window's edges and, for PlaceOrder, the database during and at its end."""
    sleep_until(opens)
    sampler = target.wait_sampler()
    if sampler:
        sampler.start()
    cpu_before, counters_before = sample(groups), read_all(target.counters)
    sleep_until(closes)
    cpu_after, counters_after = sample(groups), read_all(target.counters)
    backends = sampler.stop() if sampler else {}
    unpublished = outbox_unpublished(target.database_url) if target.database_url else None
    return WindowView(
        used_between(cpu_before, cpu_after), differences(counters_before, counters_after), backends, unpublished
    )


def measure(
    target: Target, concurrency: int, options: Options, rep: int, *, warmup: float, duration: float
) -> Measurement:
    """One level: warm-up, then the measured window."""
    opens = time.monotonic() + warmup
    closes = opens + duration
    children = start_loadgens(target, concurrency, (opens, closes), options, rep)
    try:
        groups = {**target.groups, "client": of_stats(lambda: [process_stat(c.pid) for c in children])}
        view = observe_window(target, groups, opens, closes)
        outputs = collect_loadgens(children, timeout=options.deadline + 60)
    finally:
        stop_processes(children, timeout=5)
    result = measurement(target.kind, concurrency, rep, duration, outputs, view.cpu)
    result.counters = view.counters
    result.outbox_unpublished = view.outbox_unpublished
    result.pg_backends = view.backends
    result.late_start = any(float(out["first_call_at"]) > opens for out in outputs)
    log(
        f"{target.kind:>10} c={concurrency:<4} {result.per_second:8.1f}/s p50 {result.p50_ms:6.2f} ms "
        f"p99 {result.p99_ms:6.2f} ms failed {result.failed_all} busy {result.machine_busy_fraction:.0%}"
    )
    return result


def outbox_unpublished(database_url: str) -> int:
    """How many outbox messages wait to be published (does the relay keep up?)."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        row = conn.execute("SELECT count(*) FROM outbox").fetchone()
    return int(row[0]) if row else 0


def orders_by_status(database_url: str) -> dict[str, int]:
    with psycopg.connect(database_url, autocommit=True) as conn:
        rows = conn.execute("SELECT status, count(*) FROM orders GROUP BY status ORDER BY status").fetchall()
    return {str(status): int(n) for status, n in rows}


def server_groups(child: subprocess.Popen[bytes]) -> dict[str, CpuSource]:
    """A Python server's CPU: the whole process, and its main thread (the asyncio loop, which holds the GIL)."""
    return {
        "server": of_stats(lambda: [process_stat(child.pid)]),
        "server_loop": of_stats(lambda: [thread_stat(child.pid)]),
    }


def place_target(
    order_service: Served, cluster: PostgresCluster, nats: NatsServer, identity_dir: Path, kind: str = "place"
) -> Target:
    """PlaceOrder on the OrderService; CPU of the service, PostgreSQL (all of it, and the service's own
    connections) and NATS."""
    url = cluster.url(DATABASE)
    groups = {
        **server_groups(order_service.process),
        "postgres": of_tree(lambda: cluster.pid),
        "pg_service": of_stats(lambda: map(process_stat, backend_pids(url, order_service.name))),
        "nats": of_stats(lambda: map(process_stat, pids_with_argument(str(nats.store_dir)))),
    }
    counters = {"postgres": postgres_counters(url)}
    if order_service.metrics_port:
        counters["relay"] = relay_counters(order_service.metrics_port)
    return Target(kind, order_service.address, groups, counters, url, order_service.name, identity_dir)


def run_levels(targets: Sequence[Target], options: Options) -> list[Measurement]:
    """Every repetition of every level: PlaceOrder, then (at --info-level only) PlaceOrder with INFO logs, then echo.

    The INFO service runs beside the WARNING one the whole time, so the two are measured back to back.
    """
    results = []
    for rep in range(1, options.reps + 1):
        for concurrency in options.levels:
            for target in targets:
                if target.kind == "place-info" and concurrency != options.info_level:
                    continue
                results.append(
                    measure(target, concurrency, options, rep, warmup=options.warmup, duration=options.duration)
                )
    return results


def settle_database(database_url: str) -> float:
    """VACUUM ANALYZE and CHECKPOINT after seeding, so the first level does not pay for the bulk load."""
    started = time.monotonic()
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("VACUUM (ANALYZE)")
        conn.execute("CHECKPOINT")
    return time.monotonic() - started


def benchmark(stack: Stack, options: Options) -> Run:
    """Starts everything, measures every level, and returns what was measured."""
    run = Run()
    cluster, nats = stack.postgres(), stack.nats()
    log(f"PostgreSQL on {cluster.port}, NATS on {nats.port}, work dir {stack.work_dir}")
    database_url, run.seed_seconds = prepare_database(cluster, options.customers)
    log(f"VACUUM ANALYZE and CHECKPOINT took {settle_database(database_url):.1f} s")
    urls = (database_url, nats.url)
    identity_dir = stack.identity.directory
    targets = [place_target(start_order_service(stack, *urls, log_level="WARNING"), cluster, nats, identity_dir)]
    if options.info_level in options.levels:
        info = start_order_service(stack, *urls, log_level="INFO")
        targets.append(place_target(info, cluster, nats, identity_dir, kind="place-info"))
    echo = start_echo_server(stack)
    targets.append(Target("echo", echo.address, server_groups(echo.process)))
    if options.db_warmup:
        log(f"database warm-up: {options.db_warmup:g} s of PlaceOrder at {DB_WARMUP_CONCURRENCY} in flight")
        run.db_warmup = measure(targets[0], DB_WARMUP_CONCURRENCY, options, 0, warmup=0, duration=options.db_warmup)
    run.measurements = run_levels(targets, options)
    run.database_orders = orders_by_status(database_url)
    run.versions = report.versions(database_url, nats)
    return run


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def parse_args(argv: Sequence[str] | None = None) -> Options:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--customers", type=int, default=1_000_000, help="funded customers (default 1,000,000)")
    parser.add_argument("--levels", type=_levels, default=(8, 16, 32, 64, 128), help="calls in flight, comma-separated")
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds of load before each window")
    parser.add_argument("--duration", type=float, default=15.0, help="seconds measured per level")
    parser.add_argument("--reps", type=int, default=1, help="repetitions; the report shows medians")
    parser.add_argument("--clients", type=int, default=1, help="load generator processes sharing each level")
    parser.add_argument("--deadline", type=float, default=5.0, help="per-call deadline, seconds")
    parser.add_argument(
        "--info-level",
        type=int,
        default=64,
        help="at this level (one of --levels) also measure an OrderService logging at INFO (0: skip)",
    )
    parser.add_argument(
        "--db-warmup",
        type=float,
        default=30.0,
        help="seconds of unmeasured PlaceOrder load after seeding, so the first level does not pay alone for the "
        "first write of each page after the checkpoint (0: none)",
    )
    parser.add_argument("--seed", type=int, default=None, help="random seed of the requests")
    parser.add_argument("--results-dir", type=Path, default=RESULTS_DIR)
    args = parser.parse_args(argv)
    command = " ".join(["python -m benchmarks.place_order", *map(shlex.quote, sys.argv[1:] if argv is None else argv)])
    return Options(
        customers=args.customers,
        levels=args.levels,
        warmup=args.warmup,
        duration=args.duration,
        reps=args.reps,
        clients=args.clients,
        deadline=args.deadline,
        info_level=args.info_level,
        db_warmup=args.db_warmup,
        seed=args.seed,
        results_dir=args.results_dir,
        command=command,
    )


def _levels(text: str) -> tuple[int, ...]:
    levels = tuple(int(x) for x in text.split(",") if x.strip())
    if not levels or min(levels) < 1:
        raise argparse.ArgumentTypeError("levels are positive integers, e.g. 8,32,64,128")
    return levels


def main(argv: Iterable[str] | None = None) -> int:
    options = parse_args(None if argv is None else list(argv))
    signal.signal(signal.SIGTERM, _on_sigterm)
    started = time.time()
    stack = Stack()
    try:
        run = benchmark(stack, options)
    except KeyboardInterrupt:
        log("interrupted: stopping everything")
        return 130
    finally:
        stack.close()
    paths = report.write(run, options, started)
    log(f"results: {', '.join(str(p) for p in paths)}")
    return 1 if any(m.failed_all for m in run.measurements) else 0


if __name__ == "__main__":
    sys.exit(main())
