"""The custom resources (CloudNativePG Cluster, ServiceMonitor, PrometheusRule) have no schema here: these tests
check the fields the project relies on. They were not validated against the operators' CRDs. Also the NATS Helm
values, which no chart renders here."""

from __future__ import annotations

import pytest
import yaml

from tests.deploy.checks import alert_problems
from tests.deploy.manifests import (
    K8S,
    Manifest,
    SecretValue,
    container_env,
    container_port,
    containers,
    labels_match,
    of_kind,
    workloads,
)

pytestmark = pytest.mark.deploy

REQUIRED_ALERTS = {
    "ShardLagging",
    "ShardBacklogHigh",
    "OrdersStuckPlaced",
    "ShardsWithoutWorkers",
    "ReconcileFailed",
    "GrpcServerErrorRatioHigh",
    "CallbackRefused",
    "SettlementBreak",
    "KillSwitchEngaged",
    "ExecutionFeedPublishFailing",
}
NATS_VALUES = K8S / "nats" / "values.yaml"


def database_secret_names(docs: list[Manifest]) -> set[str]:
    urls = {container_env(docs, c).get("BROKER_DATABASE_URL") for _, c in containers(docs)} - {None}
    return {url.secret if isinstance(url, SecretValue) else "(not a Secret)" for url in urls}


def test_postgresql_is_one_cloudnativepg_cluster_whose_owner_secret_only_the_setup_reads(
    overlay: list[Manifest],
) -> None:
    (cluster,) = of_kind(overlay, "Cluster")
    initdb = cluster["spec"]["bootstrap"]["initdb"]

    assert cluster["apiVersion"] == "postgresql.cnpg.io/v1"
    # CloudNativePG's app Secret (the owner's), and the services' own users (database_problems: no Secret in a URL)
    assert database_secret_names(overlay) == {f"{cluster['metadata']['name']}-app", "(not a Secret)"}
    assert initdb["database"] == "brokerage" and initdb["owner"] == "brokerage"
    assert cluster["spec"]["postgresql"]["parameters"]["synchronous_commit"] == "on"
    assert int(cluster["spec"]["postgresql"]["parameters"]["max_connections"]) >= 100


def test_prod_postgresql_is_three_instances_with_synchronous_replication_across_zones(prod: list[Manifest]) -> None:
    (cluster,) = of_kind(prod, "Cluster")
    spec = cluster["spec"]

    assert spec["instances"] == 3
    assert spec["postgresql"]["synchronous"] == {
        "method": "any",
        "number": 1,
        "dataDurability": "required",
        "failoverQuorum": True,
    }
    assert spec["affinity"]["topologyKey"] == "topology.kubernetes.io/zone"
    assert spec["affinity"]["podAntiAffinityType"] == "required"
    assert spec["enablePDB"] is True


def test_dev_postgresql_is_a_single_instance_without_a_standby_to_wait_for(dev: list[Manifest]) -> None:
    (cluster,) = of_kind(dev, "Cluster")

    assert cluster["spec"]["instances"] == 1
    assert "synchronous" not in cluster["spec"]["postgresql"]


def test_the_service_monitor_scrapes_every_pod_with_metrics_on_its_metrics_port(prod: list[Manifest]) -> None:
    """Every pod exporting metrics is behind a Service the ServiceMonitor selects, and every such Service has a
    metrics port (a Service for the venue alone, without one, is not selected: docs/operations.md)."""
    (monitor,) = of_kind(prod, "ServiceMonitor")
    selector = monitor["spec"]["selector"]["matchLabels"]
    scraped = [s for s in of_kind(prod, "Service") if labels_match(selector, s["metadata"].get("labels", {}))]
    exporting = [w for w in workloads(prod) if any(container_port(c, "metrics") for c in w.containers)]

    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert [e["port"] for e in monitor["spec"]["endpoints"]] == ["metrics"]
    assert scraped and all("metrics" in {p["name"] for p in s["spec"]["ports"]} for s in scraped)
    selectors = [s["spec"]["selector"] for s in scraped]
    unscraped = [w.name for w in exporting if not any(labels_match(x, w.pod_labels) for x in selectors)]
    assert len(exporting) >= 4 and unscraped == []


def test_the_alerts_exist_and_read_metrics_the_services_export(prod: list[Manifest]) -> None:
    (rule,) = of_kind(prod, "PrometheusRule")

    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    assert alert_problems(prod, REQUIRED_ALERTS) == []


def test_the_reconcile_alert_watches_the_cronjob_named_reconcile(prod: list[Manifest]) -> None:
    (rule,) = of_kind(prod, "PrometheusRule")
    rules = {r["alert"]: r["expr"] for group in rule["spec"]["groups"] for r in group["rules"]}

    assert 'owner_kind="CronJob", owner_name="reconcile"' in rules["ReconcileFailed"]
    assert 'cronjob="reconcile"' in rules["ReconcileNotSucceeding"]


def test_nats_values_give_three_jetstream_servers_on_file_storage_syncing_always(prod: list[Manifest]) -> None:
    values = yaml.safe_load(NATS_VALUES.read_text())
    jetstream = values["config"]["jetstream"]
    replicas = {container_env(prod, c).get("BROKER_STREAM_REPLICAS") for _, c in containers(prod)}

    assert values["config"]["cluster"] == {"enabled": True, "replicas": 3}
    assert jetstream["enabled"] and jetstream["fileStore"]["enabled"] and jetstream["fileStore"]["pvc"]["enabled"]
    assert jetstream["memoryStore"]["enabled"] is False
    assert jetstream["merge"]["sync_interval"] == "always"
    assert replicas == {str(values["config"]["cluster"]["replicas"])}  # the ORDERS stream on every server
    spread = set(values["podTemplate"]["topologySpreadConstraints"])
    assert spread == {"topology.kubernetes.io/zone", "kubernetes.io/hostname"}


def test_the_services_reach_nats_as_the_release_named_in_the_values(overlay: list[Manifest]) -> None:
    urls = {container_env(overlay, c).get("BROKER_NATS_URL") for _, c in containers(overlay)} - {None}

    assert urls == {"nats://nats:4222"}
    assert "helm upgrade --install nats nats/nats" in NATS_VALUES.read_text()
