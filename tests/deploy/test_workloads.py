"""The Deployments, the Job and the CronJob: probes, shutdown, shards, CallbackService's secret and who reports
to it, reconciliation's schedule, hardening, references, replicas, the database's connection budget and the user each
logs in to it as."""

from __future__ import annotations

import pytest

from tests.deploy.checks import (
    WORKER_MODULE,
    callback_problems,
    connection_problems,
    database_problems,
    high_availability_problems,
    pool_problems,
    probe_problems,
    reconcile_problems,
    reference_problems,
    security_problems,
    shard_problems,
    shutdown_problems,
    single_replica_problems,
)
from tests.deploy.manifests import Manifest, container_env, containers, image_uid, module_of, named, of_kind

pytestmark = pytest.mark.deploy


def test_probes_are_grpc_health_checks_on_the_grpc_port_with_the_right_names(overlay: list[Manifest]) -> None:
    assert probe_problems(overlay) == []


def test_the_grace_period_outlasts_the_servers_shutdown(overlay: list[Manifest]) -> None:
    assert shutdown_problems(overlay) == []


def test_the_worker_clusters_own_every_shard_exactly_once(overlay: list[Manifest]) -> None:
    assert shard_problems(overlay) == []


def test_there_are_two_worker_clusters_each_its_own_deployment(overlay: list[Manifest]) -> None:
    clusters = {w.name for w, c in containers(overlay) if module_of(c) == WORKER_MODULE}

    assert clusters == {"execution-service-a", "execution-service-b"}


def test_callback_service_takes_its_token_from_a_secret_and_the_simulator_reports_to_it(
    overlay: list[Manifest],
) -> None:
    assert callback_problems(overlay) == []
    assert named(overlay, "Deployment", "callback-service") is not None


def test_reconciliation_is_a_daily_cronjob_after_the_close_whose_failures_stay(overlay: list[Manifest]) -> None:
    assert reconcile_problems(overlay) == []


def test_pods_are_locked_down_as_the_images_user(overlay: list[Manifest]) -> None:
    assert security_problems(overlay, image_uid()) == []


def test_each_process_logs_in_to_postgresql_as_its_own_role_and_only_the_setup_as_the_owner(
    overlay: list[Manifest],
) -> None:
    assert database_problems(overlay) == []


def test_references_between_objects_resolve(overlay: list[Manifest]) -> None:
    assert reference_problems(overlay) == []


def test_prod_is_highly_available(prod: list[Manifest]) -> None:
    assert high_availability_problems(prod) == []


def test_dev_runs_one_replica_of_everything_and_the_exchange_simulator(dev: list[Manifest]) -> None:
    assert single_replica_problems(dev) == []
    assert named(dev, "Deployment", "exchange-simulator") is not None


def test_prod_trades_with_the_venue_not_the_simulator(prod: list[Manifest]) -> None:
    targets = {container_env(prod, c).get("BROKER_EXCHANGE_TARGET") for _, c in containers(prod)}

    assert not [d for d in of_kind(prod, "Deployment") if "simulator" in d["metadata"]["name"]]
    assert len(targets - {None}) == 1 and not any("simulator" in str(t) for t in targets)


def test_prod_stream_is_replicated_on_three_servers_and_orders_follow_the_nyse(prod: list[Manifest]) -> None:
    settings = [container_env(prod, c) for _, c in containers(prod)]

    assert {s.get("BROKER_STREAM_REPLICAS") for s in settings} == {"3"}
    assert {s.get("BROKER_MARKET_HOURS") for s in settings} == {"nyse"}


def test_the_database_pools_fit_in_max_connections(overlay: list[Manifest]) -> None:
    assert connection_problems(overlay) == []


def test_each_pool_holds_its_group_commits_transactions_and_the_readiness_ping(overlay: list[Manifest]) -> None:
    assert pool_problems(overlay) == []
