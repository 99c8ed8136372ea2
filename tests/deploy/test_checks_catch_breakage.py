"""The checks fail when the manifests break: each test below breaks a rendered overlay the way a careless edit
would and expects the check that guards it to say so."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

from tests.deploy.checks import (
    alert_problems,
    callback_problems,
    connection_problems,
    database_problems,
    entry_point_problems,
    high_availability_problems,
    identity_problems,
    pool_problems,
    probe_problems,
    reconcile_problems,
    reference_problems,
    schema_problems,
    security_problems,
    settings_problems,
    shard_problems,
    shutdown_problems,
)
from tests.deploy.manifests import K8S, Manifest, RenderError, image_uid, named, of_kind, render
from tests.deploy.network import allowed, policy_problems
from tests.deploy.test_network_policies import endpoints

pytestmark = pytest.mark.deploy


def deployment(docs: list[Manifest], name: str) -> dict[str, Any]:
    found = named(docs, "Deployment", name)
    assert found is not None
    return found


def drop(docs: list[Manifest], kind: str, name: str) -> None:
    found = named(docs, kind, name)
    assert found is not None
    docs.remove(found)


def container(docs: list[Manifest], name: str) -> dict[str, Any]:
    return deployment(docs, name)["spec"]["template"]["spec"]["containers"][0]  # type: ignore[no-any-return]


def set_env(docs: list[Manifest], name: str, key: str, value: str) -> None:
    env = container(docs, name)["env"]
    env[:] = [e for e in env if e["name"] != key] + [{"name": key, "value": value}]


def test_a_broken_kustomization_does_not_render(tmp_path: Path) -> None:
    copy = tmp_path / "k8s"
    shutil.copytree(K8S, copy)
    (copy / "base" / "order-service" / "service.yaml").unlink()

    with pytest.raises(RenderError, match=r"service\.yaml"):
        render(copy / "overlays" / "prod")


def test_a_misspelt_field_fails_the_schema(prod: list[Manifest]) -> None:
    container(prod, "order-service")["readinessProbe"]["grpc"]["servce"] = "readiness"

    assert schema_problems(prod, "1.27.0")


def test_a_field_newer_than_the_oldest_supported_kubernetes_fails_its_schema(prod: list[Manifest]) -> None:
    # Pod-level resources came with Kubernetes 1.32.
    deployment(prod, "order-service")["spec"]["template"]["spec"]["resources"] = {"requests": {"cpu": "1"}}

    assert schema_problems(prod, "1.27.0")


def test_a_command_that_is_no_entry_point_fails(dev: list[Manifest]) -> None:
    container(dev, "order-service")["command"] = ["python", "-m", "order_servce"]

    assert entry_point_problems(dev)


def test_a_misspelt_or_invalid_setting_fails(dev: list[Manifest]) -> None:
    set_env(dev, "order-service", "BROKER_GRPC_HSOT", "0.0.0.0")
    set_env(dev, "execution-service-a", "BROKER_MARKET_HOURS", "lse")

    assert len(settings_problems(dev)) == 2


def test_a_server_without_its_identity_provider_fails(prod: list[Manifest]) -> None:
    set_env(prod, "order-service", "BROKER_CUSTOMER_JWKS", "")

    assert identity_problems(prod)


def test_liveness_on_the_readiness_name_fails(prod: list[Manifest]) -> None:
    container(prod, "order-service")["livenessProbe"]["grpc"]["service"] = "readiness"

    assert probe_problems(prod)


def test_a_probe_on_another_port_or_a_server_on_localhost_fails(prod: list[Manifest]) -> None:
    container(prod, "execution-service-b")["readinessProbe"]["grpc"]["port"] = 9464
    set_env(prod, "order-service", "BROKER_GRPC_HOST", "127.0.0.1")

    assert len(probe_problems(prod)) == 2


def test_a_grace_period_shorter_than_the_shutdown_fails(prod: list[Manifest]) -> None:
    set_env(prod, "order-service", "BROKER_SHUTDOWN_GRACE_SECONDS", "20")

    assert shutdown_problems(prod)


@pytest.mark.parametrize(("shards_a", "shards_b"), [("0-6", "8-15"), ("0-8", "8-15"), ("0-7", ""), ("0-7", "8-16")])
def test_worker_clusters_that_miss_or_share_a_shard_fail(prod: list[Manifest], shards_a: str, shards_b: str) -> None:
    set_env(prod, "execution-service-a", "BROKER_SHARDS", shards_a)
    set_env(prod, "execution-service-b", "BROKER_SHARDS", shards_b)

    assert shard_problems(prod)


def test_a_writable_root_filesystem_or_a_missing_limit_fails(dev: list[Manifest]) -> None:
    container(dev, "order-service")["securityContext"]["readOnlyRootFilesystem"] = False
    del container(dev, "execution-service-a")["resources"]["limits"]

    assert len(security_problems(dev, image_uid())) == 2


def test_a_service_selecting_nothing_fails(dev: list[Manifest]) -> None:
    service = named(dev, "Service", "order-service")
    assert service is not None
    service["spec"]["selector"]["app.kubernetes.io/name"] = "order-servce"

    assert reference_problems(dev)


def test_prod_without_its_budget_or_zone_spread_fails(prod: list[Manifest]) -> None:
    drop(prod, "PodDisruptionBudget", "execution-service-a")
    del deployment(prod, "order-service")["spec"]["template"]["spec"]["topologySpreadConstraints"]

    assert len(high_availability_problems(prod)) >= 3


def test_prod_without_callback_services_budget_autoscaler_or_spread_fails(prod: list[Manifest]) -> None:
    drop(prod, "PodDisruptionBudget", "callback-service")
    drop(prod, "HorizontalPodAutoscaler", "callback-service")
    del deployment(prod, "callback-service")["spec"]["template"]["spec"]["topologySpreadConstraints"]

    # no budget, no autoscaler (and so 1 replica), not spread over zones nor nodes
    assert len(high_availability_problems(prod)) == 5


def test_pools_larger_than_the_database_allows_fail(prod: list[Manifest]) -> None:
    scaler = named(prod, "HorizontalPodAutoscaler", "callback-service")
    assert scaler is not None
    scaler["spec"]["maxReplicas"] = 40

    assert connection_problems(prod)


def test_a_pool_too_small_for_its_group_commit_fails(dev: list[Manifest]) -> None:
    set_env(dev, "callback-service", "BROKER_SETTLEMENT_FLUSHERS", "4")

    assert pool_problems(dev)


def test_a_callback_token_in_plain_text_or_a_simulator_reporting_elsewhere_fails(dev: list[Manifest]) -> None:
    set_env(dev, "callback-service", "BROKER_CALLBACK_TOKEN", "hunter2")
    config = next(c for c in of_kind(dev, "ConfigMap") if c["metadata"]["name"].startswith("exchange-simulator"))
    config["data"]["EXCHANGE_CALLBACK_TARGET"] = "callback-service:9464"  # the metrics port

    # the token in plain text; so the simulator's is not CallbackService's; the target is not its gRPC port
    assert len(callback_problems(dev)) == 3


def test_reconciliation_retried_on_a_discrepancy_or_not_run_daily_fails(prod: list[Manifest]) -> None:
    cronjob = named(prod, "CronJob", "reconcile")
    assert cronjob is not None
    cronjob["spec"]["schedule"] = "30 17 * * 1-5"
    cronjob["spec"]["concurrencyPolicy"] = "Allow"
    del cronjob["spec"]["jobTemplate"]["spec"]["podFailurePolicy"]

    assert len(reconcile_problems(prod)) == 3
    cronjob["metadata"]["name"] = "reconciliation"  # the alerts watch "reconcile"
    assert reconcile_problems(prod)


def test_an_alert_on_a_metric_nobody_exports_fails(prod: list[Manifest]) -> None:
    (rule,) = of_kind(prod, "PrometheusRule")
    rule["spec"]["groups"][0]["rules"][0]["expr"] = "max(execution_shard_lag_seconds) > 30"

    assert alert_problems(prod, set())


def test_removing_a_path_or_the_default_deny_is_seen(dev: list[Manifest]) -> None:
    pods = endpoints(dev)
    drop(dev, "NetworkPolicy", "postgres-clients")
    assert not allowed(of_kind(dev, "NetworkPolicy"), pods["order-service"], pods["postgres"], 5432)

    drop(dev, "NetworkPolicy", "callback-service")
    assert not allowed(of_kind(dev, "NetworkPolicy"), pods["exchange-simulator"], pods["callback-service"], 50051)

    drop(dev, "NetworkPolicy", "default-deny")
    assert policy_problems(dev)


def test_a_callback_policy_open_to_every_namespace_is_seen(prod: list[Manifest]) -> None:
    pods = endpoints(prod)
    policy = named(prod, "NetworkPolicy", "callback-service")
    assert policy is not None
    assert not allowed(of_kind(prod, "NetworkPolicy"), pods["stranger"], pods["callback-service"], 50051)

    policy["spec"]["ingress"][0]["from"].append({"namespaceSelector": {}})

    assert allowed(of_kind(prod, "NetworkPolicy"), pods["stranger"], pods["callback-service"], 50051)


def test_a_service_as_the_owner_or_with_another_s_password_fails(prod: list[Manifest]) -> None:
    order_service = named(prod, "Deployment", "order-service")
    reconcile = named(prod, "CronJob", "reconcile")
    assert order_service is not None and reconcile is not None
    (container,) = order_service["spec"]["template"]["spec"]["containers"]
    container["env"] = [
        {"name": "BROKER_DATABASE_URL", "valueFrom": {"secretKeyRef": {"name": "brokerage-db-app", "key": "uri"}}}
        if v["name"] == "BROKER_DATABASE_URL"
        else v
        for v in container["env"]
    ]
    for volume in reconcile["spec"]["jobTemplate"]["spec"]["template"]["spec"]["volumes"]:
        if "secret" in volume:
            volume["secret"]["secretName"] = "brokerage-db-operations-service"

    problems = database_problems(prod)
    assert any("order-service" in p and "not its own user's" in p for p in problems), problems
    assert any("reconcile" in p and "not the password of brokerage-db-reconcile" in p for p in problems), problems
