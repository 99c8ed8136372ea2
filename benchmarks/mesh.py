"""The mesh of `make run` (devtools.mesh) started for a benchmark on its private PostgreSQL and NATS, and what the
benchmark reads from it: each process group's CPU, the services' counters, and what their logs complained about.
"""

from __future__ import annotations

import json
import os
import shutil
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from benchmarks.counters import CounterSource, metrics_counters
from benchmarks.cpu import CpuSource, of_stats, of_tree, pids_with_argument, process_stat
from benchmarks.pgwaits import backend_pids
from benchmarks.place_order import STOP_TIMEOUT_SECONDS, Served, Stack, wait_serving
from devtools.mesh import MeshPlan, ServicePlan, plan_mesh
from devtools.stack import NatsServer, PostgresCluster, free_port, stop_processes

READINESS = "readiness"
PORT_TAKEN = ("Address already in use", "Failed to bind to address")  # in a service's log: it could not listen
START_ATTEMPTS = 3
WORKERS_APPLICATION = "execution"  # the application_name of every worker's database connections
COMPLAINT_LEVELS = frozenset({"warning", "error", "critical", "exception"})
NOT_JSON = "(line not JSON: a traceback or a library's own output)"
START_UP, LOAD, SHUTDOWN = "start-up", "load", "shutdown"
PERIODS = (START_UP, LOAD, SHUTDOWN)
Complaints = dict[str, dict[str, dict[str, int]]]  # period -> service -> "<level>: <event>" -> lines

# Every service gets these beside its plan's settings: logs at WARNING, so logging does not dominate, and no load
# balancer to wait for when stopped.
SETTLEMENT_BENCH_SETTINGS = {
    "BROKER_LOG_LEVEL": "WARNING",
    "EXCHANGE_LOG_LEVEL": "WARNING",
    "BROKER_SHUTDOWN_READINESS_DELAY_SECONDS": "0",
}
# Without settlement, also the sweeper's status query as good as off: with no CallbackService nothing moves an order
# on from SUBMITTED, so after 60 s every order would look silent and be asked about, work that a venue's fills make
# needless in the real flow.
BENCH_SETTINGS = {**SETTLEMENT_BENCH_SETTINGS, "BROKER_STATUS_QUERY_AFTER_SECONDS": "86400"}
NO_CALLBACKS = {"EXCHANGE_CALLBACK_TARGET": ""}  # the simulator keeps its reports: nothing settles the orders
# Prometheus samples read at a phase's edges, by the name the results give them.
ORDER_SERVICE_SAMPLES = {
    "orders_placed_total": "placed",
    "outbox_messages_published_total": "published",
    "outbox_publish_failures_total": "publish_failures",
}
WORKER_MESSAGE_SAMPLES = {"execution_messages_total": "messages"}  # by outcome: done, retried, failed, ...
WORKER_SAMPLES = {
    "execution_orders_submitted_total": "submitted_by_workers",
    "execution_orders_refused_total": "refused_by_exchange",
    "execution_sweeper_republished_total": "republished_by_sweeper",
    "execution_sweeper_status_queries_total": "status_queries",
    "execution_exchange_errors_total": "exchange_errors",
}
WORKER_EXCHANGE_SAMPLES = {  # by method: SubmitOrder, GetQuotes, ...
    "execution_exchange_seconds_sum": "exchange_seconds",
    "execution_exchange_seconds_count": "exchange_calls",
}
EXCHANGE_SAMPLES = {
    "exchange_orders_received_total": "exchange_received",  # by outcome
    "exchange_duplicate_submits_total": "exchange_duplicate_submits",
}
EXCHANGE_DELIVERY_SAMPLES = {  # the simulator's execution reports to CallbackService; failures by reason
    "exchange_reports_delivered_total": "reports_delivered",
    "exchange_report_delivery_failures_total": "delivery_failures",
}
EXCHANGE_GAUGES = {"exchange_reports_awaiting_delivery": "reports_awaiting_delivery"}  # a level, not a counter
SETTLEMENT_SAMPLES = {"settlement_reports_total": "reports"}  # by exec_type and outcome (applied, duplicate, break)
SETTLEMENT_LABELS = ("exec_type", "outcome")
CALLBACK_HANDLING_SAMPLES = {  # by method: ReportExecution
    "grpc_server_handling_seconds_sum": "callback_seconds",
    "grpc_server_handling_seconds_count": "callback_calls",
}


@dataclass
class RunningMesh:
    """The started services of one plan."""

    plan: MeshPlan
    exchange: Served
    order_service: Served
    workers: list[Served]
    identity_dir: Path  # the development keys the run's calls are signed with
    callback: Served | None = None  # CallbackService, when the mesh settles

    @property
    def services(self) -> list[Served]:
        return [*([self.callback] if self.callback else []), self.exchange, self.order_service, *self.workers]


def start_mesh(
    stack: Stack,
    database_url: str,
    nats_url: str,
    shard_count: int,
    *,
    settlement: bool = False,
    settings: Mapping[str, str] | None = None,
) -> RunningMesh:
    """Starts the plan's services on free ports, one at a time, each once the one before is ready (readiness
    SERVING), as the end-to-end tests do. Without settlement: the exchange simulator (reporting to no one),
    OrderService and workers, with BENCH_SETTINGS. With it, the whole mesh of `make run`: CallbackService first,
    the simulator reporting to it, then the others, with SETTLEMENT_BENCH_SETTINGS. `settings` (BROKER_*,
    EXCHANGE_*) go to every service after those and any BENCH_* variables.

    One at a time because processes started together can race to record the shard count in a fresh database: the
    one that waits on another's insert sees no row, and exits. A port found free when planning can be taken before
    its service binds it (by any process's outgoing connection: both come from the ephemeral range); then the
    services started are stopped and a new plan tried, up to START_ATTEMPTS times."""
    exchange_env = None if settlement else NO_CALLBACKS
    base = SETTLEMENT_BENCH_SETTINGS if settlement else BENCH_SETTINGS
    for attempt in range(1, START_ATTEMPTS + 1):
        plan = plan_mesh(iter(free_port, None), shard_count=shard_count, exchange_env=exchange_env)
        order = plan.services if settlement else (plan.exchange, plan.order_service, *plan.workers)
        identity = {**stack.identity.settings_env(), **(settings or {})}  # the run's development issuers
        envs = [(service, service_env(service, database_url, nats_url, base, identity)) for service in order]
        try:
            started = start_in_turn(stack, envs)
        except PortTaken as taken:
            if attempt == START_ATTEMPTS:
                raise RuntimeError(f"{taken}: still after {START_ATTEMPTS} plans") from taken
            continue
        return RunningMesh(
            plan,
            exchange=started[plan.exchange.name],
            order_service=started[plan.order_service.name],
            workers=[started[worker.name] for worker in plan.workers],
            callback=started.get(plan.callback_service.name),
            identity_dir=stack.identity.directory,
        )
    raise AssertionError("unreachable")


class PortTaken(RuntimeError):
    """A service could not listen: its port was taken after the plan found it free."""


def start_in_turn(stack: Stack, envs: Sequence[tuple[ServicePlan, Mapping[str, str]]]) -> dict[str, Served]:
    """Starts each service once the one before is ready. On a port taken, stops those started, sets their logs
    aside (<name>.log.<n>, so the log scan does not count that failure) and raises PortTaken."""
    started: dict[str, Served] = {}
    for service, env in envs:
        started[service.name] = start_service(stack, service, env)
        try:
            wait_ready(stack, started[service.name])
        except RuntimeError as error:
            if not any(sign in str(error) for sign in PORT_TAKEN):
                raise
            stop_processes([served.process for served in started.values()], STOP_TIMEOUT_SECONDS)
            for name in started:
                _set_aside(stack.work_dir / f"{name}.log")
            raise PortTaken(f"{service.name} found its port taken") from error
    return started


def _set_aside(log_path: Path) -> None:
    number = 1
    while log_path.with_name(f"{log_path.name}.{number}").exists():
        number += 1
    if log_path.exists():
        log_path.rename(log_path.with_name(f"{log_path.name}.{number}"))


def bench_overrides() -> dict[str, str]:
    """BENCH_BROKER_* and BENCH_EXCHANGE_* variables of this process, as the BROKER_* and EXCHANGE_* settings they
    give every service (to measure other settings)."""
    return {
        k.removeprefix("BENCH_"): v for k, v in os.environ.items() if k.startswith(("BENCH_BROKER_", "BENCH_EXCHANGE_"))
    }


def service_env(
    service: ServicePlan,
    database_url: str,
    nats_url: str,
    settings: Mapping[str, str] = BENCH_SETTINGS,
    overrides: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The environment without inherited BROKER_* or EXCHANGE_* variables, plus where the record and NATS are, the
    benchmark's settings, any BENCH_BROKER_* or BENCH_EXCHANGE_* variables, the overrides, and last the plan's own
    settings (ports, shards, where reports go)."""
    inherited = {k: v for k, v in os.environ.items() if not k.startswith(("BROKER_", "EXCHANGE_"))}
    return {
        **inherited,
        "BROKER_DATABASE_URL": f"{database_url}?application_name={application_name(service)}",
        "BROKER_NATS_URL": nats_url,
        **settings,
        **bench_overrides(),
        **(overrides or {}),
    } | dict(service.env)


def application_name(service: ServicePlan) -> str:
    """What tells a service's database connections apart: the workers share one name, so they count together."""
    return WORKERS_APPLICATION if service.module == "execution_service" else service.name


def start_service(stack: Stack, service: ServicePlan, env: Mapping[str, str]) -> Served:
    child = stack.process(service.name, ["-m", service.module], env)
    return Served(child, service.target, service.name, service.metrics_port)


def wait_ready(stack: Stack, served: Served) -> None:
    try:
        wait_serving(served, READINESS)
    except (TimeoutError, RuntimeError) as error:
        raise RuntimeError(f"{error}\n--- {served.name} log ---\n{stack.log_tail(served.name)}") from error


def cpu_groups(
    mesh: RunningMesh, cluster: PostgresCluster, nats: NatsServer, database_url: str
) -> dict[str, CpuSource]:
    """The process groups whose CPU the benchmark reports (the load generator is added per phase). PostgreSQL is
    the whole cluster; pg_order_service, pg_workers (and pg_callback_service) are the backends of those services'
    connections, within it. CallbackService's groups only when the mesh settles."""
    order_service, exchange, workers = mesh.order_service.process, mesh.exchange.process, mesh.workers
    groups = {
        "order_service": of_stats(lambda: [process_stat(order_service.pid)]),
        "exchange": of_stats(lambda: [process_stat(exchange.pid)]),
        "workers": of_stats(lambda: [process_stat(worker.process.pid) for worker in workers]),
        "postgres": of_tree(lambda: cluster.pid),
        "pg_order_service": _backends(database_url, application_name(mesh.plan.order_service)),
        "pg_workers": _backends(database_url, WORKERS_APPLICATION),
        "nats": of_stats(lambda: map(process_stat, pids_with_argument(str(nats.store_dir)))),
    }
    if mesh.callback:
        callback = mesh.callback.process
        groups["callback_service"] = of_stats(lambda: [process_stat(callback.pid)])
        groups["pg_callback_service"] = _backends(database_url, application_name(mesh.plan.callback_service))
    return groups


def _backends(database_url: str, application: str) -> CpuSource:
    """The PostgreSQL backends of the connections with that application_name."""
    return of_stats(lambda: map(process_stat, backend_pids(database_url, application)))


def mesh_counters(mesh: RunningMesh) -> dict[str, CounterSource]:
    """The services' Prometheus counters: placements and outbox publishing, the workers' messages by outcome and
    sweeps, their exchange calls by method, and what the exchange received. When the mesh settles, also the
    simulator's report deliveries and CallbackService's reports by type and outcome and its handling time."""
    worker_ports = [worker.metrics_port for worker in mesh.workers if worker.metrics_port]
    order_service_port = mesh.order_service.metrics_port
    exchange_port = mesh.exchange.metrics_port
    assert order_service_port and exchange_port
    sources = {
        "order_service": metrics_counters([order_service_port], ORDER_SERVICE_SAMPLES),
        "worker_messages": metrics_counters(worker_ports, WORKER_MESSAGE_SAMPLES, split_by="outcome"),
        "workers": metrics_counters(worker_ports, WORKER_SAMPLES),
        "worker_exchange_calls": metrics_counters(worker_ports, WORKER_EXCHANGE_SAMPLES, split_by="method"),
        "exchange": metrics_counters([exchange_port], EXCHANGE_SAMPLES, split_by="outcome"),
    }
    if mesh.callback and mesh.callback.metrics_port:
        callback_port = [mesh.callback.metrics_port]
        sources["exchange_delivery"] = metrics_counters([exchange_port], EXCHANGE_DELIVERY_SAMPLES, split_by="reason")
        sources["settlement"] = metrics_counters(callback_port, SETTLEMENT_SAMPLES, split_by=SETTLEMENT_LABELS)
        sources["callback_calls"] = metrics_counters(callback_port, CALLBACK_HANDLING_SAMPLES, split_by="grpc_method")
    return sources


def mesh_gauges(mesh: RunningMesh) -> dict[str, CounterSource]:
    """Levels read at a moment, not differences: the reports the simulator has not yet delivered."""
    port = mesh.exchange.metrics_port
    assert port
    return {"exchange": metrics_counters([port], EXCHANGE_GAUGES)}


def log_complaints(stack: Stack, mesh: RunningMesh, load_from: float, load_until: float) -> Complaints:
    """Per period (start-up, load, shutdown: split at two wall-clock times) and service, its log lines at WARNING
    or above counted by `<level>: <event>`. Lines that are not JSON (a traceback) carry no time: they count under
    load."""
    found: Complaints = {period: {} for period in PERIODS}
    for served in mesh.services:
        for period, complaints in complaints_in(stack.work_dir / f"{served.name}.log", load_from, load_until).items():
            if complaints:
                found[period][served.name] = complaints
    return found


def complaints_in(log_path: Path, load_from: float, load_until: float) -> dict[str, dict[str, int]]:
    found: dict[str, Counter[str]] = {period: Counter() for period in PERIODS}
    lines = log_path.read_text(errors="replace").splitlines() if log_path.exists() else []
    for line in filter(str.strip, lines):
        try:
            entry = json.loads(line)
        except ValueError:
            found[LOAD][NOT_JSON] += 1
            continue
        level = str(entry.get("level", "")).lower() if isinstance(entry, dict) else ""
        if level in COMPLAINT_LEVELS:
            found[_period(entry.get("timestamp"), load_from, load_until)][f"{level}: {entry.get('event', '')}"] += 1
    return {period: dict(counts.most_common()) for period, counts in found.items()}


def _period(timestamp: object, load_from: float, load_until: float) -> str:
    try:
        moment = datetime.fromisoformat(str(timestamp).replace("Z", "+00:00")).timestamp()
    except ValueError:
        return LOAD
    return START_UP if moment < load_from else SHUTDOWN if moment >= load_until else LOAD


def keep_logs(stack: Stack, destination: Path) -> None:
    """Copies the services' and servers' logs out of the work directory before it is removed."""
    destination.mkdir(parents=True, exist_ok=True)
    for path in stack.work_dir.glob("*.log"):
        shutil.copy2(path, destination / path.name)
    for server_log in (*stack.work_dir.glob("pg/postgresql.log"), *stack.work_dir.glob("nats/nats-server.log")):
        shutil.copy2(server_log, destination / server_log.name)
