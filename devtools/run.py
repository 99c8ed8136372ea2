"""`make run`: the local mesh in one command (`python -m devtools.run`).

PostgreSQL and NATS come from BROKER_DATABASE_URL and BROKER_NATS_URL when set; otherwise private servers
are started under .local/ (their data kept between runs, as are the exchange simulator's journals). Migrations are
applied and demo customers seeded (as the cluster's owner), the services started as child processes, each logged in
to a private PostgreSQL as its own role's user (their JSON logs pass through), and
grpcurl examples printed once the mesh can trade: every service ready, and a probe order placed (by a customer of
its own) and filled. With --tls (`make run TLS=1`) every link is mutual TLS, with dev CAs and certificates made
under .local/tls (devtools.tls), and the examples present the right certificate for each service.
Ctrl-C or SIGTERM stops the services (SIGTERM, then SIGKILL after 20 s), then the private servers. A service
that dies on its own stops everything with a non-zero exit.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from contextlib import ExitStack
from decimal import Decimal
from pathlib import Path
from types import FrameType
from typing import NoReturn

import grpc
import psycopg
from grpc_health.v1 import health_pb2, health_pb2_grpc

from brokerage.proto import common_pb2, orders_pb2, orders_pb2_grpc
from brokerage.rpc.tls import TlsFiles, channel_credentials
from brokerage.storage.grants import ROLES
from brokerage.storage.seed import fund_customers
from devtools.mesh import MeshPlan, ServicePlan, local_ports, local_probe_ports, plan_mesh
from devtools.stack import (
    NatsServer,
    PostgresCluster,
    port_bindable,
    port_open,
    spawn,
    stop_processes,
    wait_until,
)
from devtools.tls import DevCertificates
from devtools.token import CUSTOMER_TTL, DevIdentity, bearer

ROOT = Path(__file__).resolve().parent.parent
LOCAL = ROOT / ".local"
EXCHANGE_JOURNALS = LOCAL / "exchange" / "journals"  # the venue remembers what the kept database recorded
OPERATOR_TOKEN_FILE = LOCAL / "identity" / "operator.token"  # where brokerctl finds an operator's token of this mesh
OPERATOR_TOKEN_REFRESH_SECONDS = 3600.0  # a fresh one (8 hours) every hour, so brokerctl never meets an expired one
PG_PORT = 15432
NATS_PORT = 14222
DATABASE = "brokerage"
SEED_CUSTOMERS = 1000
STOP_TIMEOUT_SECONDS = 20.0
READY_TIMEOUT_SECONDS = 60.0
PORT_TIMEOUT_SECONDS = 30.0
HEALTH_DEADLINE_SECONDS = 1.0
PROBE_CUSTOMER = "make-run-probe"  # buys one share each start, to prove the mesh trades; no demo customer's
PROBE_FUNDING = Decimal("1000000.00")
COMMON_ENV = {
    "BROKER_SHUTDOWN_READINESS_DELAY_SECONDS": "0",  # no load balancer to wait for
}


class LaunchError(RuntimeError):
    """The mesh could not start or a part of it died: the launcher stops everything and exits non-zero."""


class Shutdown(Exception):
    """SIGTERM or SIGHUP arrived: stop everything cleanly."""


def grpcurl_examples(plan: MeshPlan, tls: DevCertificates | None = None) -> str:
    """Ready-to-paste grpcurl commands against the running mesh, each minting the token it presents (and, under
    TLS, presenting the certificate of the caller each service admits)."""
    grpcurl = _shown(Path(sys.prefix) / "bin" / "grpcurl")
    brokerctl = _shown(Path(sys.prefix) / "bin" / "brokerctl")
    python = _shown(Path(sys.prefix) / "bin" / "python")

    def as_caller(name: str, ca: str = "ca") -> str:
        if tls is None:
            return f"{grpcurl} -plaintext"
        files = tls.files(name, trusting=ca)
        return f"{grpcurl} -cacert {_shown(files.ca)} -cert {_shown(files.cert)} -key {_shown(files.key)}"

    plain = as_caller("api")
    call = f'{plain} -H "authorization: Bearer $({python} -m devtools.token --customer 1)"'
    ops = f'{as_caller("brokerctl")} -H "authorization: Bearer $({python} -m devtools.token --operator)"'
    reader = as_caller("operations-service", ca="venue-ca")
    orders, worker, exchange = plan.order_service.target, plan.workers[0].target, plan.exchange.target
    svc = "broker.v1.OrderService"

    def place(order_id: str, symbol: str, quantity: int) -> str:
        body = (
            f'{{"customer_id":"1","client_order_id":"{order_id}","symbol":"{symbol}",'
            f'"side":"SIDE_BUY","quantity":{quantity}}}'
        )
        return f"{call} -d '{body}' {orders} {svc}/PlaceOrder"

    workers = ", ".join(f"{w.name} on {w.target}" for w in plan.workers)
    customer = '\'{"customer_id":"1"}\''
    return "\n".join(
        [
            f"OrderService on {orders}; CallbackService on {plan.callback_service.target}; "
            f"the exchange simulator on {exchange}; {workers}; the operations service on {plan.operations.target}.",
            "Try (Ctrl-C stops everything; `make demo` places and settles a few orders):",
            f"  {plain} {orders} list",
            f"  {plain} {orders} describe {svc}",
            "  # every OrderService call carries a customer's token (python -m devtools.token --customer N mints one)",
            "  # in another terminal, follow customer 1's orders as they change",
            f"  {call} -d {customer} {orders} {svc}/WatchOrders",
            "  # buy 10 AAPL for customer 1: PLACED, cash reserved; taken to the exchange, filled and settled",
            f"  {place('demo-1', 'AAPL', 10)}",
            "  # the same request again: the same order back (idempotent on client_order_id)",
            f"  {place('demo-1', 'AAPL', 10)}",
            "  # more than the customer can pay: REJECTED with a reason",
            f"  {place('demo-2', 'TSLA', 100000)}",
            f"  {call} -d {customer} {orders} {svc}/ListOrders",
            f"  {call} -d {customer} {orders} {svc}/GetAccount",
            f"  {call} -d {customer} {orders} {svc}/ListPositions",
            "  # malformed (quantity 0): INVALID_ARGUMENT",
            f"  {place('demo-3', 'AAPL', 0)}",
            "  # the worker clusters (an operator's token): shards, their backlog and order in flight; pause, resume",
            f"  {ops} {worker} broker.v1.ExecutionService/ListShards",
            f'  {ops} -d \'{{"shard":3,"reason":"maintenance"}}\' {worker} broker.v1.ExecutionService/PauseShard',
            f"  {ops} -d '{{\"shard\":3}}' {worker} broker.v1.ExecutionService/ResumeShard",
            "  # the exchange: its quotes, and every execution of the day with each order's arrival sequence",
            f"  {reader} {exchange} broker.v1.ExchangeService/GetQuotes",
            f"  {reader} {exchange} broker.v1.ExchangeService/GetDropCopy",
            f"  {plain} {orders} grpc.health.v1.Health/Check",
            "  # the operator's levers (brokerctl --help): breaks, repairs, and the books proven against the exchange",
            *_brokerctl_tls(tls),
            f"  {brokerctl} breaks list",
            f"  {brokerctl} reconcile",
            "  # the risk controls: the kill switch (its id printed), a symbol's halt, limits, the audit",
            f'  {brokerctl} halt firm --reason "kill switch drill"',
            f"  {brokerctl} halt list",
            f'  {brokerctl} resume HALT_ID --reason "drill over"',
            f'  {brokerctl} limits set 7 --max-orders-per-minute 20 --reason "new account"',
            f"  {brokerctl} risk-events",
        ]
    )


def _brokerctl_tls(tls: DevCertificates | None) -> list[str]:
    if tls is None:
        return []
    files = tls.files("brokerctl")
    return [
        f"  export BROKER_TLS_CERT_FILE={_shown(files.cert)} BROKER_TLS_KEY_FILE={_shown(files.key)}"
        f" BROKER_TLS_CA_FILE={_shown(files.ca)}"
    ]


class Mesh:
    """The servers and processes this launcher started, stopped in reverse order by close()."""

    def __init__(self) -> None:
        self._stack = ExitStack()
        self._children: dict[str, subprocess.Popen[bytes]] = {}
        self._alive: dict[str, Callable[[], bool]] = {}
        # The private cluster, where each service logs in as its role's user; None when BROKER_DATABASE_URL names a
        # database of yours, where the services all log in as its user.
        self._cluster: PostgresCluster | None = None

    def database_url(self) -> str:
        """BROKER_DATABASE_URL, or a private cluster under .local/pg with database `brokerage`."""
        if url := os.environ.get("BROKER_DATABASE_URL"):
            return url
        cluster = PostgresCluster(LOCAL / "pg", PG_PORT)
        _log(f"starting PostgreSQL on port {PG_PORT} (data and log in {_shown(cluster.data_dir)})")
        self._stack.enter_context(cluster)
        self._alive["postgres"] = lambda: cluster.pid is not None
        cluster.create_database(DATABASE, exist_ok=True)
        self._cluster = cluster
        return cluster.url(DATABASE)

    def create_service_users(self) -> None:
        """On the private cluster, a login user per service role (the migrations make the roles): each service logs
        in as its own, as in Kubernetes, and may do only what its role may (brokerage.storage.grants)."""
        if self._cluster is None:
            _log("BROKER_DATABASE_URL is set: every service logs in as its user")
            return
        for role in ROLES:
            self._cluster.create_login(role.login, role.name)

    def nats_url(self) -> str:
        """BROKER_NATS_URL, or a private JetStream server under .local/nats."""
        if url := os.environ.get("BROKER_NATS_URL"):
            return url
        server = NatsServer(LOCAL / "nats", NATS_PORT)
        _log(f"starting nats-server on port {NATS_PORT} (store and log in {_shown(server.store_dir)})")
        self._stack.enter_context(server)
        self._alive["nats-server"] = lambda: server.running
        return server.url

    def start(self, service: ServicePlan, env: Mapping[str, str]) -> None:
        """Starts `python -m service.module` with env plus the service's overrides."""
        if port_open(service.port):
            # gRPC binds with SO_REUSEPORT: a stale server would silently share the port and answer for us
            raise LaunchError(f"{service.target} is in use: is an earlier {service.name} still running?")
        _log(f"starting {service.name} (python -m {service.module})")
        process = spawn(
            [sys.executable, "-m", service.module],
            env=service.environment(env, own_database_user=self._cluster is not None),
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
        )
        self._children[service.name] = process
        self._alive[service.name] = lambda: process.poll() is None

    def check_alive(self) -> None:
        """Raises LaunchError naming the first part of the mesh that is no longer running."""
        for name, alive in self._alive.items():
            if not alive():
                child = self._children.get(name)
                how = f" with exit code {child.returncode}" if child else ""
                raise LaunchError(f"{name} exited unexpectedly{how}")

    def wait_ready(self, targets: list[str]) -> None:
        """Waits until every gRPC target reports its readiness SERVING on grpc.health.v1 (its dependencies too)."""

        def ready() -> bool:
            self.check_alive()
            return all(_serving(target) for target in targets)

        try:
            wait_until(ready, READY_TIMEOUT_SECONDS, f"gRPC readiness SERVING on {', '.join(targets)}")
        except TimeoutError as exc:
            raise LaunchError(str(exc)) from exc

    def wait_tradable(self, order_service: str, identity: DevIdentity, tls: DevCertificates | None) -> str:
        """Places probe orders until one is PLACED, then waits until it is FILLED: what a customer's order placed now
        would do (a simulator still replaying its journal, quotes not yet fresh, reject it). Returns what to say."""
        deadline = time.monotonic() + READY_TIMEOUT_SECONDS
        signed = bearer(identity.customer_token(PROBE_CUSTOMER, CUSTOMER_TTL))
        with _channel(order_service, tls.files("api") if tls else None) as channel:
            stub = orders_pb2_grpc.OrderServiceStub(channel)
            for attempt in range(1, 1_000_000):
                self.check_alive()
                if time.monotonic() > deadline:
                    raise LaunchError("no probe order was placed and filled in time")
                order = stub.PlaceOrder(_probe(attempt), timeout=5, metadata=signed)
                if order.status == common_pb2.ORDER_STATUS_PLACED:
                    return _wait_filled(stub, order, deadline, signed)
                if order.status_reason == "market closed":
                    return "The mesh is up, but the market is closed: orders are REJECTED until it opens."
                time.sleep(0.5)  # a quote not yet fresh, say: try again
        raise AssertionError("unreachable")

    def supervise(self, identity: DevIdentity) -> NoReturn:
        """Returns never: raises LaunchError when a part dies, or is interrupted by a signal. Meanwhile keeps an
        operator's token fresh where brokerctl looks for one."""
        refreshed = -OPERATOR_TOKEN_REFRESH_SECONDS
        while True:
            self.check_alive()
            if time.monotonic() - refreshed >= OPERATOR_TOKEN_REFRESH_SECONDS:
                _write_secret(OPERATOR_TOKEN_FILE, identity.operator_token(os.environ.get("USER") or "dev-operator"))
                refreshed = time.monotonic()
            time.sleep(0.5)

    def close(self) -> None:
        """Stops the services, then the private NATS and PostgreSQL (not external ones)."""
        try:
            stop_processes(self._children.values(), STOP_TIMEOUT_SECONDS)
        finally:
            self._stack.close()


def main() -> int:
    """Runs the mesh until Ctrl-C/SIGTERM (exit 0) or a failure (exit 1)."""
    tls = DevCertificates(LOCAL / "tls").ensure() if "--tls" in sys.argv[1:] else None
    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, _request_shutdown)
    mesh = Mesh()
    try:
        env = {
            **os.environ,
            **COMMON_ENV,
            "BROKER_DATABASE_URL": mesh.database_url(),
            "BROKER_NATS_URL": mesh.nats_url(),
        }
        _run_module(env, "brokerage.storage.migrate")
        _run_module(env, "brokerage.storage.seed", "--customers", str(SEED_CUSTOMERS))
        with psycopg.connect(env["BROKER_DATABASE_URL"], autocommit=True) as conn:
            fund_customers(conn, [PROBE_CUSTOMER], PROBE_FUNDING, funded_by="devtools.run")
        mesh.create_service_users()
        plan = plan_mesh(
            local_ports(),
            exchange_env={"EXCHANGE_JOURNAL_DIR": str(EXCHANGE_JOURNALS)},
            tls=tls,
            probe_ports=local_probe_ports(),
        )
        _wait_ports_free([port for s in plan.services for port in (s.port, s.metrics_port, s.probe_port) if port])
        if tls is not None:
            _log(f"mutual TLS on every link, certificates in {_shown(tls.directory)}")
        identity = DevIdentity().ensure()  # the dev issuers' keys, kept under .local/identity
        env.update(identity.settings_env())
        for service in plan.services:
            mesh.start(service, env)
        mesh.wait_ready([s.health_target for s in plan.services])
        print(mesh.wait_tradable(plan.order_service.target, identity, tls), flush=True)
        print(grpcurl_examples(plan, tls), flush=True)
        mesh.supervise(identity)
    except (KeyboardInterrupt, Shutdown):
        _log("stopping")
        return 0
    except LaunchError as exc:
        _log(f"error: {exc}; stopping")
        return 1
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(signum, signal.SIG_IGN)  # let the shutdown finish
        mesh.close()
        _log("stopped")


def _run_module(env: Mapping[str, str], module: str, *args: str) -> None:
    _log(f"running python -m {module} {' '.join(args)}".rstrip())
    result = subprocess.run([sys.executable, "-m", module, *args], env=env, cwd=ROOT, check=False)
    if result.returncode != 0:
        raise LaunchError(f"python -m {module} failed with exit code {result.returncode}")


def _wait_ports_free(ports: list[int], timeout: float = PORT_TIMEOUT_SECONDS) -> None:
    """Every fixed port must be free for its service. A mesh still stopping can hold one for a while: wait for it,
    then name it."""
    try:
        wait_until(lambda: all(port_bindable(p) for p in ports), timeout, "the mesh's ports to be free")
    except TimeoutError as exc:
        busy = [str(p) for p in ports if not port_bindable(p)]
        hint = f"`ss -tanp | grep -E ':({'|'.join(busy)})'` shows who holds them"
        raise LaunchError(f"ports {', '.join(busy)} are in use; {hint}") from exc


def _probe(attempt: int) -> orders_pb2.PlaceOrderRequest:
    return orders_pb2.PlaceOrderRequest(
        customer_id=PROBE_CUSTOMER,
        client_order_id=f"probe-{int(time.time())}-{attempt}",
        symbol="AAPL",
        side=common_pb2.SIDE_BUY,
        quantity=1,
    )


def _wait_filled(
    stub: orders_pb2_grpc.OrderServiceStub, order: orders_pb2.Order, deadline: float, signed: tuple[tuple[str, str]]
) -> str:
    started = time.monotonic()
    request = orders_pb2.GetOrderRequest(customer_id=PROBE_CUSTOMER, order_id=order.order_id)
    while time.monotonic() < deadline:
        now = stub.GetOrder(request, timeout=5, metadata=signed)
        if now.status == common_pb2.ORDER_STATUS_FILLED:
            waited = round((time.monotonic() - started) * 1000)
            return f"The mesh is up: probe order {order.order_id} was placed and filled ({waited} ms)."
        if now.status in (common_pb2.ORDER_STATUS_REJECTED, common_pb2.ORDER_STATUS_CANCELED):
            raise LaunchError(f"probe order {order.order_id} ended {now.status_reason!r}")
        time.sleep(0.1)
    raise LaunchError(f"probe order {order.order_id} was not filled in time")


def _channel(target: str, tls: TlsFiles | None) -> grpc.Channel:
    if tls is None:
        return grpc.insecure_channel(target)
    return grpc.secure_channel(target, channel_credentials(tls))


def _serving(target: str) -> bool:
    request = health_pb2.HealthCheckRequest(service="readiness")
    with grpc.insecure_channel(target) as channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(request, timeout=HEALTH_DEADLINE_SECONDS)
        except grpc.RpcError:
            return False
    return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)


def _write_secret(path: Path, text: str) -> None:
    """Written whole, readable by its owner alone."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial")
    partial.write_text(text + "\n")
    partial.chmod(0o600)
    partial.replace(path)


def _request_shutdown(signum: int, frame: FrameType | None) -> None:
    raise Shutdown(signal.Signals(signum).name)


def _shown(path: Path) -> str:
    """path relative to the working directory when below it, else absolute."""
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def _log(message: str) -> None:
    print(f"[devtools.run] {message}", file=sys.stderr, flush=True)


if __name__ == "__main__":
    sys.exit(main())
