"""The NetworkPolicies open exactly the paths the order flow, settlement and reconciliation need: each path below
is allowed, and each stranger's attempt is refused. The engines' pods are stood in for with the labels their
charts and operators give them (nats Helm chart release "nats", CloudNativePG Cluster brokerage-db)."""

from __future__ import annotations

import ipaddress

import pytest

from tests.deploy.manifests import Manifest, container_env, containers, named, namespace_of, of_kind
from tests.deploy.network import Endpoint, address, allowed, pod, policy_problems, workload_pods

pytestmark = pytest.mark.deploy

NATS_SERVER = {
    "app.kubernetes.io/name": "nats",
    "app.kubernetes.io/instance": "nats",
    "app.kubernetes.io/component": "nats",
}
DNS, PROMETHEUS, API_LAYER, OPERATORS = "kube-system", "monitoring", "mobile-api", "ops"


def endpoints(docs: list[Manifest]) -> dict[str, Endpoint]:
    namespace = namespace_of(docs)
    (cluster,) = of_kind(docs, "Cluster")
    found = workload_pods(docs, namespace)
    found.update(
        postgres=pod("postgres", namespace, {"cnpg.io/cluster": cluster["metadata"]["name"]}, postgresql=5432),
        nats=pod("nats", namespace, NATS_SERVER, nats=4222, cluster=6222),
        dns=pod("coredns", DNS, {"k8s-app": "kube-dns"}, dns=53),
        prometheus=pod("prometheus", PROMETHEUS, {"app.kubernetes.io/name": "prometheus"}),
        cnpg_operator=pod("cnpg", "cnpg-system", {"app.kubernetes.io/name": "cloudnative-pg"}),
        api_layer=pod("api", API_LAYER, {"brokerage.io/order-client": "true"}),
        operator_toolbox=pod("toolbox", OPERATORS, {"brokerage.io/operator": "true"}),
        stranger=pod("stranger", "elsewhere", {"app": "curious"}),
        neighbour=pod("neighbour", namespace, {"app": "debug"}),
        internet=address("internet", "203.0.113.7"),
    )
    return found


def venue(docs: list[Manifest], pods: dict[str, Endpoint]) -> tuple[Endpoint, int]:
    """Where the workers' BROKER_EXCHANGE_TARGET points: the simulator's pod in dev, the venue's addresses in prod
    (the first address of the exchange-clients policy's ipBlock, on the target's port)."""
    (target,) = {container_env(docs, c).get("BROKER_EXCHANGE_TARGET") for _, c in containers(docs)} - {None}
    host, _, port = str(target).rpartition(":")
    if host == "exchange-simulator":
        return pods["exchange-simulator"], int(port)
    policy = named(docs, "NetworkPolicy", "exchange-clients")
    assert policy is not None
    (block,) = [p["ipBlock"]["cidr"] for r in policy["spec"]["egress"] for p in r.get("to", []) if "ipBlock" in p]
    return address("venue", str(next(ipaddress.ip_network(block).hosts()))), int(port)


def identity_provider(docs: list[Manifest]) -> Endpoint | None:
    """Where the identity providers' JWKS are read from, when the overlay reads them over the network: the first
    address of the identity-provider policy's ipBlock."""
    policy = named(docs, "NetworkPolicy", "identity-provider")
    if policy is None:
        return None
    (block,) = [p["ipBlock"]["cidr"] for r in policy["spec"]["egress"] for p in r.get("to", []) if "ipBlock" in p]
    return address("identity-provider", str(next(ipaddress.ip_network(block).hosts())))


def exchange_side(docs: list[Manifest], pods: dict[str, Endpoint]) -> Endpoint:
    """Who reports executions to CallbackService: the simulator's pod in dev, the venue's address in prod (the
    one the workers trade with)."""
    return venue(docs, pods)[0]


def test_the_namespace_starts_from_default_deny(overlay: list[Manifest]) -> None:
    assert policy_problems(overlay) == []


def test_the_order_flow_is_open(overlay: list[Manifest]) -> None:
    policies = of_kind(overlay, "NetworkPolicy")
    pods = endpoints(overlay)
    exchange, exchange_port = venue(overlay, pods)
    workers = [pods["execution-service-a"], pods["execution-service-b"]]
    app_pods = [p for name, p in pods.items() if p.labels.get("app.kubernetes.io/part-of") == "brokerage"]
    paths = [
        (pods["api_layer"], pods["order-service"], 50051),
        (pods["order-service"], pods["postgres"], 5432),
        (pods["order-service"], pods["nats"], 4222),
        (pods["brokerage-setup"], pods["postgres"], 5432),
        (pods["brokerage-setup"], pods["nats"], 4222),
        *[(worker, pods[engine], port) for worker in workers for engine, port in (("postgres", 5432), ("nats", 4222))],
        *[(worker, exchange, exchange_port) for worker in workers],
        *[(pods["operator_toolbox"], worker, 50051) for worker in workers],
        *[(pods["prometheus"], p, p.ports["metrics"]) for p in app_pods if "metrics" in p.ports],
        (pods["nats"], pods["nats"], 6222),
        (pods["postgres"], pods["postgres"], 5432),
        (pods["cnpg_operator"], pods["postgres"], 8000),
        # settlement: the exchange reports to CallbackService, which books in PostgreSQL and rings NATS
        (exchange_side(overlay, pods), pods["callback-service"], 50051),
        (pods["callback-service"], pods["postgres"], 5432),
        (pods["callback-service"], pods["nats"], 4222),
        # reconciliation: one snapshot of PostgreSQL, the exchange's drop copy
        (pods["reconcile"], pods["postgres"], 5432),
        (pods["reconcile"], exchange, exchange_port),
    ]

    identity = identity_provider(overlay)
    if identity is not None:  # prod: the JWKS over HTTPS (dev has its keys inline)
        paths += [
            (pods[name], identity, 443) for name in ("order-service", "execution-service-a", "operations-service")
        ]

    assert [(s.name, d.name, port) for s, d, port in paths if not allowed(policies, s, d, port)] == []
    in_namespace = [p for p in pods.values() if p.namespace == pods["postgres"].namespace]
    assert all(allowed(policies, p, pods["dns"], 53, "UDP") for p in in_namespace)
    assert len([p for p in app_pods if "metrics" in p.ports]) >= 3


def test_nothing_else_is_open(overlay: list[Manifest]) -> None:
    policies = of_kind(overlay, "NetworkPolicy")
    pods = endpoints(overlay)
    exchange, exchange_port = venue(overlay, pods)
    order_service, worker, callback = pods["order-service"], pods["execution-service-a"], pods["callback-service"]
    refused = [
        (pods["stranger"], order_service, 50051),
        (pods["stranger"], pods["postgres"], 5432),
        (pods["stranger"], pods["nats"], 4222),
        (pods["neighbour"], pods["postgres"], 5432),
        (pods["neighbour"], pods["nats"], 4222),
        (pods["neighbour"], worker, 50051),
        (pods["api_layer"], worker, 50051),
        (pods["prometheus"], pods["postgres"], 5432),
        (order_service, exchange, exchange_port),
        (order_service, worker, 50051),
        (order_service, pods["internet"], 443),
        (worker, order_service, 50051),
        (worker, pods["internet"], 443),
        (pods["brokerage-setup"], exchange, exchange_port),
        # CallbackService hears from the exchange side alone, and calls nothing but its engines
        *[
            (source, callback, 50051)
            for source in (
                pods["stranger"],
                pods["neighbour"],
                pods["api_layer"],
                pods["operator_toolbox"],
                pods["prometheus"],
                pods["internet"],
                order_service,
                worker,
                pods["reconcile"],
                pods["brokerage-setup"],
            )
        ],
        (callback, exchange, exchange_port),
        (callback, order_service, 50051),
        (callback, pods["internet"], 443),
        # reconciliation reads; it publishes nothing and calls no service of ours
        (pods["reconcile"], pods["nats"], 4222),
        (pods["reconcile"], order_service, 50051),
        (pods["reconcile"], worker, 50051),
        (pods["reconcile"], pods["internet"], 443),
        (pods["neighbour"], exchange, exchange_port),
    ]
    if "exchange-simulator" in pods:
        simulator = pods["exchange-simulator"]
        refused += [
            (simulator, pods["postgres"], 5432),
            (simulator, pods["nats"], 4222),
            (simulator, order_service, 50051),
            (simulator, worker, 50051),
            (simulator, pods["internet"], 443),
            (pods["stranger"], simulator, 50060),
            (order_service, simulator, 50060),
            (callback, simulator, 50060),
        ]

    assert [(s.name, d.name, port) for s, d, port in refused if allowed(policies, s, d, port)] == []
