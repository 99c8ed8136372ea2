"""The local mesh's processes: which services run, how many replicas of each, on which ports, with which settings.

`make run` lays it out on fixed ports; the end-to-end tests on free ones. Both start exactly these processes, so
what the tests prove is what a developer runs. Sized for a 2-core machine: one OrderService, one CallbackService,
the exchange simulator reporting to it, two worker clusters (shards 0-7 and 8-15 of 16) of two replicas each, and
the operations service (brokerctl's). With dev certificates (devtools.tls), every link is mutual TLS: each service
presents its own certificate and admits only the identities it serves, and answers health in plaintext on a probe
port of its own, as kubelet asks.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace

import grpc

from brokerage.domain.sharding import format_shard_set
from brokerage.proto import exchange_pb2, exchange_pb2_grpc
from brokerage.storage.grants import BY_NAME, SERVICE_ROLES
from devtools.tls import DevCertificates, identity

# Seconds, short, for the mesh under test (tests/e2e, the chaos suite): AckWait is how soon a dead or paused
# replica's shards move to another, the republish windows how soon the sweeper re-drives a lost wake-up.
FAST_TIMINGS = {
    "BROKER_CONSUMER_ACK_WAIT_SECONDS": "2",
    "BROKER_FETCH_TIMEOUT_SECONDS": "0.5",
    "BROKER_RETRY_INITIAL_SECONDS": "0.05",
    "BROKER_RETRY_MAX_SECONDS": "1",
    "BROKER_SWEEP_INTERVAL_SECONDS": "0.5",
    "BROKER_REPUBLISH_AFTER_SECONDS": "3",
    "BROKER_REPUBLISH_BUSY_AFTER_SECONDS": "10",
    "BROKER_SHARD_REFRESH_SECONDS": "0.25",
    "BROKER_SHUTDOWN_GRACE_SECONDS": "5",
}
SHARD_COUNT = 16
CLUSTER_COUNT = 2
REPLICAS_PER_CLUSTER = 2
# The secret the simulator presents to CallbackService on this machine; a deployment's comes from a Secret.
LOCAL_CALLBACK_TOKEN = "local-callback-secret"


@dataclass(frozen=True)
class ServicePlan:
    """One service process: `python -m module` listening on port, with these environment overrides."""

    name: str
    module: str
    port: int
    metrics_port: int
    env: Mapping[str, str] = field(default_factory=dict)
    probe_port: int = 0  # with TLS: health in plaintext here
    # The PostgreSQL user it logs in as where the launcher makes the users (brokerage.storage.grants): a member of
    # its service's role. None: no database, or whichever user BROKER_DATABASE_URL names.
    database_user: str | None = None

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def health_target(self) -> str:
        """Where a probe asks for health without a certificate: the probe port under TLS, else the service's."""
        return f"127.0.0.1:{self.probe_port or self.port}"

    def environment(self, env: Mapping[str, str], *, own_database_user: bool = False) -> dict[str, str]:
        """env under the plan's own settings; with own_database_user, BROKER_DATABASE_URL names its user."""
        merged = {**env, **self.env}
        if own_database_user and self.database_user and "BROKER_DATABASE_URL" in merged:
            merged["BROKER_DATABASE_URL"] = database_url_as(merged["BROKER_DATABASE_URL"], self.database_user)
        return merged


@dataclass(frozen=True)
class MeshPlan:
    order_service: ServicePlan
    callback_service: ServicePlan
    exchange: ServicePlan
    workers: tuple[ServicePlan, ...]
    operations: ServicePlan

    @property
    def services(self) -> tuple[ServicePlan, ...]:
        """In start order: where reports go, then the exchange, so the workers' first calls find both."""
        return (self.callback_service, self.exchange, self.order_service, *self.workers, self.operations)


def plan_mesh(
    ports: Iterator[int],
    *,
    shard_count: int = SHARD_COUNT,
    exchange_env: Mapping[str, str] | None = None,
    tls: DevCertificates | None = None,
    probe_ports: Iterator[int] | None = None,
) -> MeshPlan:
    """The mesh with its ports taken from `ports` in turn (a gRPC port, then its metrics port); the shards split
    evenly between the clusters. With tls, mutual TLS everywhere, each service's probe port from probe_ports."""
    plan = _plan(ports, shard_count, exchange_env)
    if tls is None:
        return plan
    if probe_ports is None:
        raise ValueError("TLS needs probe ports: kubelet's and make run's health checks present no certificate")
    return MeshPlan(
        _secured(plan.order_service, tls, next(probe_ports)),
        _secured(plan.callback_service, tls, next(probe_ports)),
        _secured(plan.exchange, tls, next(probe_ports)),
        tuple(_secured(w, tls, next(probe_ports)) for w in plan.workers),
        _secured(plan.operations, tls, next(probe_ports)),
    )


# Whom each of our services admits, by its module: OrderService the API layer, the operators' services brokerctl,
# CallbackService the venue (by the venue's own CA).
ADMITTED = {
    "order_service": ("api",),
    "execution_service": ("brokerctl",),
    "operations_service": ("brokerctl",),
    "callback_service": ("exchange",),
}
CERTIFICATE_OF = {
    "order_service": "order-service",
    "execution_service": "execution-service",
    "operations_service": "operations-service",
    "callback_service": "callback-service",
}


def _secured(service: ServicePlan, tls: DevCertificates, probe_port: int) -> ServicePlan:
    if service.module == "exchange_simulator":
        venue = tls.files("exchange")
        env = {
            "EXCHANGE_TLS_CERT_FILE": str(venue.cert),
            "EXCHANGE_TLS_KEY_FILE": str(venue.key),
            "EXCHANGE_TLS_CA_FILE": str(tls.ca()),  # its clients, and CallbackService, carry our certificates
            "EXCHANGE_TLS_ORDER_ENTRY_PEERS": identity("execution-service"),
            "EXCHANGE_TLS_READER_PEERS": f"{identity('operations-service')},{identity('reconcile')}",
            "EXCHANGE_PROBE_PORT": str(probe_port),
        }
    else:
        env = tls.broker_env(CERTIFICATE_OF[service.module], ADMITTED[service.module])
        env["BROKER_PROBE_PORT"] = str(probe_port)
        if service.module == "callback_service":
            env["BROKER_TLS_CA_FILE"] = str(tls.ca("venue-ca"))  # only the venue's certificates are admitted
    return replace(service, env={**service.env, **env}, probe_port=probe_port)  # its database user kept


def _plan(ports: Iterator[int], shard_count: int, exchange_env: Mapping[str, str] | None) -> MeshPlan:
    count = {"BROKER_SHARD_COUNT": str(shard_count)}
    callback = broker_service(
        "callback-service", "callback_service", next(ports), next(ports), BROKER_CALLBACK_TOKEN=LOCAL_CALLBACK_TOKEN
    )
    exchange_port, exchange_metrics = next(ports), next(ports)
    env = {
        "EXCHANGE_GRPC_PORT": str(exchange_port),
        "EXCHANGE_METRICS_PORT": str(exchange_metrics),
        "EXCHANGE_CALLBACK_TARGET": callback.target,
        "EXCHANGE_CALLBACK_TOKEN": LOCAL_CALLBACK_TOKEN,
        **(exchange_env or {}),
    }
    exchange = ServicePlan("exchange-simulator", "exchange_simulator", exchange_port, exchange_metrics, env)
    order_service = broker_service("order-service", "order_service", next(ports), next(ports), **count)
    workers = tuple(
        broker_service(
            f"execution-{cluster}-{replica}",
            "execution_service",
            next(ports),
            next(ports),
            BROKER_SHARDS=cluster,
            BROKER_EXCHANGE_TARGET=exchange.target,
            **count,
        )
        for cluster in split_shards(shard_count, CLUSTER_COUNT)
        for replica in range(1, REPLICAS_PER_CLUSTER + 1)
    )
    operations = broker_service(
        "operations-service",
        "operations_service",
        next(ports),
        next(ports),
        BROKER_EXCHANGE_TARGET=exchange.target,
        **count,
    )
    return MeshPlan(order_service, callback, exchange, workers, operations)


def split_shards(shard_count: int, clusters: int) -> list[str]:
    """Contiguous shard ranges, one per cluster, as BROKER_SHARDS reads them: 16 in 2 -> ["0-7", "8-15"]."""
    bounds = [shard_count * i // clusters for i in range(clusters + 1)]
    return [format_shard_set(tuple(range(low, high))) for low, high in itertools.pairwise(bounds) if high > low]


def local_ports() -> Iterator[int]:
    """`make run`'s fixed ports, in plan_mesh's order: CallbackService on 15070, the exchange on 15060, OrderService
    on 15051, workers from 15061, the operations service on 15080; their metrics on 9475, 9470, 9464, from 9471 and
    9480. All below 32768, where no
    outgoing connection gets its local port (Linux hands those out from 32768 up, macOS from 49152): a service
    started after others have connected to PostgreSQL once found its port taken by one of their connections."""
    grpc_ports = iter([15070, 15060, 15051, 15061, 15062, 15063, 15064, 15080])
    metrics_ports = iter([9475, 9470, 9464, 9471, 9472, 9473, 9474, 9480])
    for grpc_port, metrics_port in zip(grpc_ports, metrics_ports, strict=True):
        yield grpc_port
        yield metrics_port


def local_probe_ports() -> Iterator[int]:
    """`make run TLS=1`'s plaintext health ports, in plan_mesh's order of services: OrderService 16051, CallbackService
    16070, the exchange 16060, workers from 16061, the operations service 16080 (each its gRPC port + 1000)."""
    return iter([16051, 16070, 16060, 16061, 16062, 16063, 16064, 16080])


def broker_service(name: str, module: str, port: int, metrics_port: int, **env: str) -> ServicePlan:
    """One of our services (BROKER_* settings) listening on 127.0.0.1:port, logging in to PostgreSQL as its role's
    user."""
    return ServicePlan(
        name,
        module,
        port,
        metrics_port,
        {
            "BROKER_GRPC_HOST": "127.0.0.1",
            "BROKER_GRPC_PORT": str(port),
            "BROKER_METRICS_PORT": str(metrics_port),
            **env,
        },
        database_user=BY_NAME[SERVICE_ROLES[module]].login,
    )


def database_url_as(database_url: str, user: str) -> str:
    """The same database's URL for another user, without a password (a private cluster trusts local users)."""
    scheme, rest = database_url.split("://", 1)
    return f"{scheme}://{user}@{rest.rpartition('@')[2]}"


def read_drop_copy(exchange: str) -> list[exchange_pb2.DropCopyEntry]:
    """Today's drop copy of the venue at exchange (host:port, plaintext), every page of it."""
    entries: list[exchange_pb2.DropCopyEntry] = []
    request = exchange_pb2.GetDropCopyRequest()
    with grpc.insecure_channel(exchange) as channel:
        stub = exchange_pb2_grpc.ExchangeServiceStub(channel)
        while True:
            page = stub.GetDropCopy(request, timeout=30)
            entries += page.executions
            if not page.next_page_token:
                return entries
            request.page_token = page.next_page_token
