"""Production's mutual TLS (components/mutual-tls): every server and client of ours runs with a certificate
cert-manager issues, the identities each server admits are ones a Certificate names (or the venue's), kubelet probes
the plaintext probe port, and CallbackService trusts the venue's CA alone; PostgreSQL is verify-full everywhere, and
each NATS user a service logs in as (over TLS) is one of the users the servers are configured with."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from brokerage.rpc.tls import peers_from
from tests.deploy.checks import configured
from tests.deploy.manifests import K8S, Manifest, Workload, of_kind

pytestmark = pytest.mark.deploy

VENUE_CA = "/etc/brokerage/venue-ca/ca.crt"
NATS_VALUES = K8S / "nats" / "values.yaml"


def certificates(docs: list[Manifest]) -> dict[str, Any]:
    """Each Certificate's Secret, with the URI SANs it names."""
    return {c["spec"]["secretName"]: set(c["spec"].get("uris", [])) for c in of_kind(docs, "Certificate")}


def mounted_secret(workload: Workload, container: dict[str, Any], path: str) -> str:
    pod = workload.pod_spec
    directory = path.rpartition("/")[0]
    (volume_name,) = [m["name"] for m in container.get("volumeMounts", []) if m["mountPath"] == directory]
    (volume,) = [v for v in pod["volumes"] if v["name"] == volume_name]
    return str(volume["secret"]["secretName"])


def test_every_process_of_ours_presents_a_certificate_cert_manager_issues(prod: list[Manifest]) -> None:
    issued = certificates(prod)
    unsecured = []
    for workload, container, entry, settings in configured(prod):
        if entry.module == "brokerage.storage.migrate" or entry.module == "brokerage.messaging.setup":
            continue  # the setup Job talks to PostgreSQL and NATS only
        if not settings.tls_cert_file:
            unsecured.append(workload.name)
            continue
        assert mounted_secret(workload, container, settings.tls_cert_file) in issued

    assert unsecured == []


def test_servers_admit_only_identities_that_exist_and_probes_skip_tls(prod: list[Manifest]) -> None:
    named = set().union(*certificates(prod).values())
    for workload, container, entry, settings in configured(prod):
        if not entry.serves:
            continue
        admitted = peers_from(settings.tls_peers)
        where = workload.name
        assert admitted, where
        if entry.module == "callback_service":
            assert settings.tls_ca_file == VENUE_CA  # only the venue's certificates get through the handshake
            assert not admitted & named  # and no identity of ours is admitted
        else:
            assert admitted <= named, where
        assert settings.probe_port and all(
            container[probe]["grpc"]["port"] == settings.probe_port
            for probe in ("startupProbe", "readinessProbe", "livenessProbe")
        ), where


def test_the_venues_certificate_is_checked_against_its_own_ca(prod: list[Manifest]) -> None:
    callers = [s for _, _, e, s in configured(prod) if e.module in ("execution_service", "operations_service")]

    assert callers and all(s.exchange_tls_ca_file == VENUE_CA for s in callers)


def test_every_database_connection_verifies_the_servers_certificate(prod: list[Manifest]) -> None:
    unverified = [
        f"{workload.name} {container['name']}"
        for workload, container, _, _ in configured(prod)
        if {e["name"]: e.get("value") for e in container.get("env", [])}.get("PGSSLMODE") != "verify-full"
        and container["name"] != "stream-setup"  # NATS alone
    ]

    assert unverified == []


def test_each_nats_user_a_service_logs_in_as_is_one_the_servers_know(prod: list[Manifest]) -> None:
    users = {u["user"] for u in yaml.safe_load(NATS_VALUES.read_text())["config"]["merge"]["authorization"]["users"]}
    logged_in = {s.nats_user for _, _, _, s in configured(prod) if s.nats_user}
    without_tls = [s.nats_user for _, _, _, s in configured(prod) if s.nats_user and not s.nats_tls_ca_file]

    assert logged_in == users  # every user is someone's, and nobody logs in as a user the servers do not know
    assert without_tls == []


def test_postgresql_refuses_a_connection_without_tls(overlay: list[Manifest]) -> None:
    (cluster,) = of_kind(overlay, "Cluster")

    assert cluster["spec"]["postgresql"]["pg_hba"][0] == "hostnossl all all all reject"
