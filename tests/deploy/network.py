"""NetworkPolicy semantics, enough to ask of the rendered policies "may this pod reach that one on this port?".

A connection is allowed when the source's egress and the destination's ingress both allow it; a pod that no
policy of a direction selects is open in that direction. Peers are podSelector and namespaceSelector by
matchLabels (what the manifests use: policy_problems refuses anything else), or ipBlock for addresses outside the
cluster.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Any

from tests.deploy.manifests import Manifest, labels_match, of_kind, workloads

SUPPORTED_SELECTOR_KEYS = {"matchLabels"}


@dataclass(frozen=True)
class Endpoint:
    """A pod (namespace, its labels and named ports) or an address outside the cluster (ip)."""

    name: str
    namespace: str = ""
    labels: dict[str, str] = field(default_factory=dict)
    ports: dict[str, int] = field(default_factory=dict)
    ip: str | None = None

    @property
    def namespace_labels(self) -> dict[str, str]:
        return {"kubernetes.io/metadata.name": self.namespace}


def pod(name: str, namespace: str, labels: dict[str, str], **ports: int) -> Endpoint:
    return Endpoint(name, namespace, labels, {k.replace("_", "-"): v for k, v in ports.items()})


def address(name: str, ip: str) -> Endpoint:
    return Endpoint(name, ip=ip)


def workload_pods(docs: list[Manifest], namespace: str) -> dict[str, Endpoint]:
    """The pods of each rendered Deployment and Job, by workload name."""
    return {
        w.name: Endpoint(
            w.name,
            namespace,
            w.pod_labels,
            {p["name"]: p["containerPort"] for c in w.containers for p in c.get("ports", []) if "name" in p},
        )
        for w in workloads(docs)
    }


def _peer_matches(peer: dict[str, Any], policy_namespace: str, other: Endpoint) -> bool:
    if "ipBlock" in peer:
        if other.ip is None:
            return False
        block = peer["ipBlock"]
        ip = ipaddress.ip_address(other.ip)
        inside = ip in ipaddress.ip_network(block["cidr"])
        return inside and not any(ip in ipaddress.ip_network(e) for e in block.get("except", []))
    if other.ip is not None:
        return False
    if "namespaceSelector" in peer:
        if not labels_match(peer["namespaceSelector"].get("matchLabels"), other.namespace_labels):
            return False
    elif other.namespace != policy_namespace:
        return False
    return labels_match(peer.get("podSelector", {}).get("matchLabels"), other.labels)


def _port_matches(rule_ports: list[dict[str, Any]] | None, port: int, protocol: str, target: Endpoint) -> bool:
    if not rule_ports:
        return True
    for rule_port in rule_ports:
        if rule_port.get("protocol", "TCP") != protocol:
            continue
        wanted = rule_port.get("port")
        if wanted is None or wanted == port or (isinstance(wanted, str) and target.ports.get(wanted) == port):
            return True
    return False


def _direction_allows(
    policies: list[Manifest], subject: Endpoint, other: Endpoint, port: int, protocol: str, direction: str
) -> bool:
    """Whether the policies selecting `subject` let it talk to `other` (egress) or hear from it (ingress)."""
    if subject.ip is not None:
        return True  # outside the cluster: no policy of ours applies
    key, peers_key = ("egress", "to") if direction == "Egress" else ("ingress", "from")
    selecting = [
        p
        for p in policies
        if p["metadata"]["namespace"] == subject.namespace
        and direction in p["spec"].get("policyTypes", ["Ingress"])
        and labels_match(p["spec"]["podSelector"].get("matchLabels"), subject.labels)
    ]
    if not selecting:
        return True
    target = other if direction == "Egress" else subject  # named ports are the destination's
    for policy in selecting:
        for rule in policy["spec"].get(key, []):
            peers = rule.get(peers_key)
            peer_ok = not peers or any(_peer_matches(p, subject.namespace, other) for p in peers)
            if peer_ok and _port_matches(rule.get("ports"), port, protocol, target):
                return True
    return False


def allowed(
    policies: list[Manifest], source: Endpoint, destination: Endpoint, port: int, protocol: str = "TCP"
) -> bool:
    """Whether source may open a connection to destination's port."""
    return _direction_allows(policies, source, destination, port, protocol, "Egress") and _direction_allows(
        policies, destination, source, port, protocol, "Ingress"
    )


def policy_problems(docs: list[Manifest]) -> list[str]:
    """A default deny of both directions for the whole namespace, and only selectors this module understands."""
    problems = []
    policies = of_kind(docs, "NetworkPolicy")
    if not any(
        p["spec"]["podSelector"] == {}
        and set(p["spec"].get("policyTypes", [])) == {"Ingress", "Egress"}
        and not p["spec"].get("ingress")
        and not p["spec"].get("egress")
        for p in policies
    ):
        problems.append("no default-deny NetworkPolicy (podSelector {}, Ingress and Egress, no rules)")
    for policy in policies:
        selectors = [policy["spec"]["podSelector"]]
        for rule in [*policy["spec"].get("ingress", []), *policy["spec"].get("egress", [])]:
            for peer in [*rule.get("from", []), *rule.get("to", [])]:
                selectors += [peer[k] for k in ("podSelector", "namespaceSelector") if k in peer]
            if any("endPort" in p for p in rule.get("ports", [])):
                problems.append(f"NetworkPolicy/{policy['metadata']['name']}: endPort is not understood here")
        if any(set(s) - SUPPORTED_SELECTOR_KEYS for s in selectors):
            problems.append(f"NetworkPolicy/{policy['metadata']['name']}: a selector other than matchLabels")
    return problems
