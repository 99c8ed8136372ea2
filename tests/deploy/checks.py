"""What the rendered manifests must hold, as functions that return the problems they find (empty: none).

The tests run them on every overlay; tests/deploy/test_checks_catch_breakage.py runs them on broken copies to
show each one fails when it should.
"""

from __future__ import annotations

import importlib
import importlib.util
import posixpath
import re
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import kubernetes_validate
from kubernetes_validate.utils import major_minor
from prometheus_client import REGISTRY
from pydantic import ValidationError
from pydantic_settings import BaseSettings

from brokerage.domain.sharding import parse_shard_set
from brokerage.rpc.health import LIVENESS, READINESS
from brokerage.rpc.identity import Kind, verifier_for
from brokerage.settings import Settings
from brokerage.storage.grants import BY_NAME, SERVICE_ROLES
from exchange_simulator.settings import SimulatorSettings
from tests.deploy.manifests import (
    Manifest,
    SecretValue,
    Workload,
    container_env,
    container_port,
    containers,
    labels_match,
    module_of,
    named,
    of_kind,
    workloads,
)

Problems = list[str]


@dataclass(frozen=True)
class EntryPoint:
    """A command the image runs: `python -m module`, configured by one settings class."""

    module: str
    settings: type[BaseSettings]
    serves: bool  # a gRPC server (a Deployment with probes) rather than a command that runs to its end


# Every command the manifests may run.
ENTRY_POINTS = {
    e.module: e
    for e in (
        EntryPoint("order_service", Settings, serves=True),
        EntryPoint("callback_service", Settings, serves=True),
        EntryPoint("operations_service", Settings, serves=True),
        EntryPoint("execution_service", Settings, serves=True),
        EntryPoint("exchange_simulator", SimulatorSettings, serves=True),
        EntryPoint("brokerage.storage.migrate", Settings, serves=False),
        EntryPoint("brokerage.messaging.setup", Settings, serves=False),
        EntryPoint("brokerage.reconcile", Settings, serves=False),
    )
}
WORKER_MODULE = "execution_service"
CALLBACK_MODULE = "callback_service"
SIMULATOR_MODULE = "exchange_simulator"
RECONCILE_MODULE = "brokerage.reconcile"
API_MODULES = {"order_service", CALLBACK_MODULE}  # stateless servers: 3 or more replicas and an HPA in prod
DATABASE_SECRET_KEY = "uri"  # CloudNativePG's <cluster>-app Secret: the connection URI
# The set-up (the Job's migrations and stream set-up) logs in as the schema's owner, with CloudNativePG's app Secret;
# every other process as its own role's user (brokerage.storage.grants), its password from a file.
SETUP_MODULES = {"brokerage.storage.migrate", "brokerage.messaging.setup"}
DATABASE_PASSWORD_KEY = "password"  # of a managed role's Secret (kubernetes.io/basic-auth)
DATABASE_SECRETS = {f"brokerage-db-{BY_NAME[role].login.replace('_', '-')}" for role in SERVICE_ROLES.values()}
# Secrets the operator makes before the first release (docs/operations.md), which an overlay may therefore not
# hold: the callback token and the database users' passwords in prod (dev generates its own).
OPERATOR_SECRETS = {"brokerage-callback", *DATABASE_SECRETS}
# Whose tokens each server admits: it refuses to start without those issuers' settings.
IDENTITIES = {
    "order_service": (Kind.CUSTOMER,),
    "execution_service": (Kind.OPERATOR,),
    "operations_service": (Kind.OPERATOR,),
}
# The group commit of each server: the setting of its transactions in flight, each holding a pooled connection,
# and how many more it may have in flight (CallbackService's lane for reports whose customer was busy).
FLUSHERS = {"order_service": ("placement_flushers", 0), CALLBACK_MODULE: ("settlement_flushers", 1)}

# Custom resources: no schema here; test_custom_resources.py checks the fields the project relies on.
CUSTOM_RESOURCES = {
    ("postgresql.cnpg.io/v1", "Cluster"),
    ("monitoring.coreos.com/v1", "ServiceMonitor"),
    ("monitoring.coreos.com/v1", "PrometheusRule"),
    ("cert-manager.io/v1", "Issuer"),
    ("cert-manager.io/v1", "Certificate"),
}


# ---------------------------------------------------------------------------------------------- schemas


def schema_problems(docs: list[Manifest], version: str) -> Problems:
    """Every built-in object validates in strict mode (no unknown field) against Kubernetes `version`."""
    problems = []
    for doc in docs:
        where = f"{doc['kind']}/{doc['metadata']['name']}"
        try:
            validated = kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.SchemaNotFoundError:
            if (doc["apiVersion"], doc["kind"]) not in CUSTOM_RESOURCES:
                problems.append(f"{where}: no {version} schema for {doc['apiVersion']} {doc['kind']}")
        except kubernetes_validate.ValidationError as error:
            path = ".".join(str(p) for p in error.path)
            problems.append(f"{where}: {path}: {error.message}")
        else:
            if validated != major_minor(version):
                problems.append(f"{where}: validated against {validated}, not {version}")
    return problems


# ---------------------------------------------------------------------------------------------- commands


def entry_point_of(container: dict[str, Any]) -> EntryPoint | None:
    module = module_of(container)
    return ENTRY_POINTS.get(module) if module else None


def entry_point_problems(docs: list[Manifest]) -> Problems:
    """Every container runs `python -m <entry point>` of the one image, and long-running servers are Deployments
    while commands that end are Jobs."""
    problems = []
    images = set()
    for workload, container in containers(docs):
        images.add(container["image"])
        command = [*container.get("command", []), *container.get("args", [])]
        entry = entry_point_of(container)
        if entry is None:
            problems.append(f"{workload} {container['name']}: runs {command}, which is no entry point")
            continue
        if entry.serves != (workload.kind == "Deployment"):
            problems.append(f"{workload} {container['name']}: {entry.module} does not belong in a {workload.kind}")
    if len(images) > 1:
        problems.append(f"one image runs every service, but the containers use {sorted(images)}")
    return problems


def module_main(module: str) -> Callable[[], object]:
    """The `main` that `python -m module` runs: the package's main.main, or the module's own main."""
    spec = importlib.util.find_spec(module)
    if spec is None:
        raise ModuleNotFoundError(module)
    if spec.submodule_search_locations is not None:  # a package: __main__.py calls <package>.main.main()
        if importlib.util.find_spec(f"{module}.__main__") is None:
            raise ModuleNotFoundError(f"{module}.__main__")
        return importlib.import_module(f"{module}.main").main  # type: ignore[no-any-return]
    return importlib.import_module(module).main  # type: ignore[no-any-return]


# ---------------------------------------------------------------------------------------------- settings


def settings_env(docs: list[Manifest], container: dict[str, Any]) -> dict[str, str]:
    """The container's settings, secrets replaced by a stand-in of the right shape (a mounted password file too)."""
    values = {}
    for key, value in container_env(docs, container).items():
        if isinstance(value, SecretValue):
            value = "postgresql://app:secret@db:5432/app" if value.key == DATABASE_SECRET_KEY else "secret"
        elif key == "BROKER_DATABASE_PASSWORD_FILE":
            value = str(_password_stand_in())  # database_problems checks that the real path is a mounted Secret's
        values[key] = value
    return values


@cache
def _password_stand_in() -> Path:
    path = Path(tempfile.mkdtemp(prefix="deploy-checks-")) / "password"
    path.write_text("secret\n")
    return path


def load(entry: EntryPoint, env: dict[str, str]) -> BaseSettings:
    """The settings object the process would build from env (and nothing from this test's own environment);
    raises pydantic's ValidationError for a bad or unknown setting."""

    class FromManifest(entry.settings):  # type: ignore[name-defined,misc]
        @classmethod
        def settings_customise_sources(cls, settings_cls: Any, init_settings: Any, **others: Any) -> Any:
            return (init_settings,)

    prefix = entry.settings.model_config.get("env_prefix", "")
    fields = {key.removeprefix(prefix).lower(): value for key, value in env.items() if key.startswith(prefix)}
    return FromManifest(**fields)  # type: ignore[no-any-return]


def configured(docs: list[Manifest]) -> Iterator[tuple[Workload, dict[str, Any], EntryPoint, Any]]:
    """Each container running an entry point, with the settings it starts with (invalid ones skipped here:
    settings_problems names them)."""
    for workload, container in containers(docs):
        entry = entry_point_of(container)
        if entry is None:
            continue
        try:
            settings = load(entry, settings_env(docs, container))
        except ValidationError:
            continue
        yield workload, container, entry, settings


def settings_problems(docs: list[Manifest]) -> Problems:
    """Every setting a container gets is one its process knows and accepts (a typo is not silently ignored),
    and PostgreSQL is reached as database_problems says, not at the default of 127.0.0.1."""
    problems = []
    for workload, container in containers(docs):
        entry = entry_point_of(container)
        if entry is None:
            continue
        env = container_env(docs, container)
        try:
            load(entry, settings_env(docs, container))
        except ValidationError as error:
            for e in error.errors():
                problems.append(f"{workload} {container['name']}: {e['loc']}: {e['msg']}")
        if entry.settings is Settings and "BROKER_DATABASE_URL" not in env:
            problems.append(f"{workload} {container['name']}: no BROKER_DATABASE_URL")
    return problems


def database_problems(docs: list[Manifest]) -> Problems:
    """Each process logs in to PostgreSQL as whom it should (docs/operations.md, "PostgreSQL roles"): the set-up as
    the schema's owner, with CloudNativePG's app Secret, which nothing else reads or mounts; every other process as
    its own role's user (brokerage.storage.grants), a managed role of the Cluster in that (managed, login-less) group
    role, with no password in its URL but a file of exactly the Secret the Cluster gives that user."""
    problems = []
    (cluster,) = of_kind(docs, "Cluster")
    owner_secret = f"{cluster['metadata']['name']}-app"
    managed = {role["name"]: role for role in cluster["spec"].get("managed", {}).get("roles", [])}
    for workload, container in containers(docs):
        entry = entry_point_of(container)
        where = f"{workload} {container['name']}"
        env = container_env(docs, container)
        mounted = _mounted_secrets(workload, container)
        if entry is None or entry.settings is not Settings:
            if owner_secret in mounted.values() or any(
                isinstance(v, SecretValue) and v.secret == owner_secret for v in env.values()
            ):
                problems.append(f"{where}: reads the owner's Secret {owner_secret}")
            continue
        url = env.get("BROKER_DATABASE_URL")
        if entry.module in SETUP_MODULES:
            if url != SecretValue(owner_secret, DATABASE_SECRET_KEY):
                problems.append(f"{where}: the set-up does not log in as the owner ({owner_secret})")
            continue
        if isinstance(url, SecretValue) or url is None:
            problems.append(f"{where}: BROKER_DATABASE_URL is not its own user's (the owner's Secret?)")
            continue
        parts = urlsplit(url)
        group = SERVICE_ROLES[entry.module]
        login = BY_NAME[group].login
        if parts.username != login or parts.password is not None:
            problems.append(f"{where}: logs in as {parts.username!r}, not as {login} without a password in the URL")
        user, role = managed.get(login), managed.get(group)
        if user is None or not user.get("login") or user.get("inRoles") != [group]:
            problems.append(f"{where}: the Cluster has no managed login {login} in {group}")
            continue
        if role is None or role.get("login", False):
            problems.append(f"{where}: the Cluster does not manage the group role {group} (without a login)")
        secret = user.get("passwordSecret", {}).get("name")
        password_file = env.get("BROKER_DATABASE_PASSWORD_FILE")
        if not isinstance(password_file, str) or mounted.get(password_file) != secret:
            problems.append(f"{where}: BROKER_DATABASE_PASSWORD_FILE is not the password of {secret}, mounted")
        if others := (set(mounted.values()) & (DATABASE_SECRETS | {owner_secret})) - {secret}:
            problems.append(f"{where}: mounts another's database Secret: {sorted(others)}")
        if any(isinstance(v, SecretValue) and v.secret in DATABASE_SECRETS | {owner_secret} for v in env.values()):
            problems.append(f"{where}: a database Secret in its environment")
    return problems


def _mounted_secrets(workload: Workload, container: dict[str, Any]) -> dict[str, str]:
    """The database passwords a container has as files: each file's path and the Secret it is, for Secret volumes
    mounted whole or by key (items); other Secret volumes by mount path."""
    volumes = {v["name"]: v["secret"] for v in workload.pod_spec.get("volumes", []) if "secret" in v}
    files = {}
    for mount in container.get("volumeMounts", []):
        secret = volumes.get(mount["name"])
        if secret is None:
            continue
        items = secret.get("items") or [{"key": DATABASE_PASSWORD_KEY, "path": DATABASE_PASSWORD_KEY}]
        for item in items:
            if item["key"] == DATABASE_PASSWORD_KEY:
                files[posixpath.join(mount["mountPath"], item["path"])] = secret["secretName"]
        files.setdefault(mount["mountPath"], secret["secretName"])
    return files


def identity_problems(docs: list[Manifest]) -> Problems:
    """Every server that admits tokens is told whose (issuer, audience, JWKS): without them it refuses to start."""
    problems = []
    for workload, container in containers(docs):
        entry = entry_point_of(container)
        if entry is None or entry.module not in IDENTITIES:
            continue
        settings = load(entry, settings_env(docs, container))
        try:
            verifier_for(settings, *IDENTITIES[entry.module])  # type: ignore[arg-type]
        except ValueError as error:
            problems.append(f"{workload} {container['name']}: {error}")
    return problems


# ---------------------------------------------------------------------------------------------- probes


def probe_problems(docs: list[Manifest]) -> Problems:
    """Servers listen on all interfaces, and their startup, readiness and liveness probes are gRPC health checks
    on the numeric gRPC port: readiness on the "readiness" name, which follows the dependencies, and startup and
    liveness on "", the process alone (a database failover makes pods unready, it restarts none)."""
    problems = []
    expected = {"startupProbe": LIVENESS, "readinessProbe": READINESS, "livenessProbe": LIVENESS}
    for workload, container, entry, settings in configured(docs):
        if not entry.serves:
            continue
        where = f"{workload} {container['name']}"
        if settings.grpc_host not in ("0.0.0.0", "::", "[::]"):
            problems.append(f"{where}: gRPC listens on {settings.grpc_host}, which the kubelet cannot reach")
        for port_name, port in (("grpc", settings.grpc_port), ("metrics", settings.metrics_port)):
            if container_port(container, port_name) != port:
                problems.append(f"{where}: containerPort {port_name} is not the configured {port}")
        for probe_name, health_name in expected.items():
            grpc = container.get(probe_name, {}).get("grpc")
            if grpc is None:
                problems.append(f"{where}: no gRPC {probe_name}")
                continue
            probe_port = settings.probe_port or settings.grpc_port  # under TLS, the plaintext probe port
            if grpc.get("port") != probe_port or not isinstance(grpc.get("port"), int):
                problems.append(f"{where}: {probe_name} checks port {grpc.get('port')!r}, not {probe_port}")
            if grpc.get("service", "") != health_name:
                problems.append(f"{where}: {probe_name} asks for {grpc.get('service')!r}, not {health_name!r}")
    return problems


def shutdown_problems(docs: list[Manifest]) -> Problems:
    """terminationGracePeriodSeconds outlasts the server's whole shutdown: the readiness delay, then
    server.stop(grace), then up to the grace again for the background work (brokerage/rpc/server.py)."""
    problems = []
    for workload, _container, entry, settings in configured(docs):
        if not entry.serves:
            continue
        period = workload.pod_spec.get("terminationGracePeriodSeconds", 30)
        needed = settings.shutdown_readiness_delay_seconds + 2 * settings.shutdown_grace_seconds
        if period <= needed:
            problems.append(
                f"{workload}: terminationGracePeriodSeconds {period} does not exceed the shutdown's {needed:g} s "
                f"(readiness delay {settings.shutdown_readiness_delay_seconds:g} + 2 x grace "
                f"{settings.shutdown_grace_seconds:g})"
            )
    return problems


# ---------------------------------------------------------------------------------------------- callbacks


def callback_problems(docs: list[Manifest]) -> Problems:
    """CallbackService gets its bearer token from a Secret (it refuses to start without one), and an exchange
    simulator in the overlay reports to it: EXCHANGE_CALLBACK_TARGET names a Service that sends its port to
    CallbackService's gRPC port, and EXCHANGE_CALLBACK_TOKEN comes from the same Secret and key."""
    problems = []
    servers = [(w, c, s) for w, c, e, s in configured(docs) if e.module == CALLBACK_MODULE]
    tokens = set()
    for workload, container, _settings in servers:
        token = container_env(docs, container).get("BROKER_CALLBACK_TOKEN")
        if isinstance(token, SecretValue):
            tokens.add(token)
        else:
            problems.append(f"{workload}: BROKER_CALLBACK_TOKEN does not come from a Secret")
    for workload, container in containers(docs):
        if module_of(container) != SIMULATOR_MODULE or not servers:
            continue
        env = container_env(docs, container)
        if env.get("EXCHANGE_CALLBACK_TOKEN") not in tokens:
            problems.append(f"{workload}: EXCHANGE_CALLBACK_TOKEN is not CallbackService's Secret")
        target = str(env.get("EXCHANGE_CALLBACK_TARGET", ""))
        if not any(service_reaches(docs, target, w, c, s.grpc_port) for w, c, s in servers):
            problems.append(f"{workload}: EXCHANGE_CALLBACK_TARGET {target!r} does not reach CallbackService")
    return problems


def service_reaches(
    docs: list[Manifest], target: str, workload: Workload, container: dict[str, Any], port: int
) -> bool:
    """Whether host:port names a Service of the namespace that sends that port to the container's `port`."""
    host, _, service_port = target.rpartition(":")
    service = named(docs, "Service", host)
    if service is None or not labels_match(service["spec"].get("selector"), workload.pod_labels):
        return False
    for entry in service["spec"]["ports"]:
        if str(entry["port"]) != service_port:
            continue
        target_port = entry.get("targetPort", entry["port"])
        resolved = container_port(container, target_port) if isinstance(target_port, str) else target_port
        if resolved == port:
            return True
    return False


# ---------------------------------------------------------------------------------------------- reconciliation


def reconcile_problems(docs: list[Manifest]) -> Problems:
    """Reconciliation is the CronJob "reconcile" (the alerts watch that name), one run at a time, every day (the
    ReconcileNotSucceeding alert expects a success within 26 hours) in the exchange's time zone, after the NYSE
    close so that the default --day is the day just traded. A discrepancy (exit 1) fails the Job at once rather
    than being retried, and a failed Job stays until an operator deletes it (ReconcileFailed holds until then)."""
    jobs = [w for w, c in containers(docs) if module_of(c) == RECONCILE_MODULE]
    if [(w.kind, w.name) for w in jobs] != [("CronJob", "reconcile")]:
        return [f"reconciliation runs in {[str(w) for w in jobs]}, not in the one CronJob/reconcile"]
    cronjob = named(docs, "CronJob", "reconcile")
    assert cronjob is not None
    spec, job = cronjob["spec"], cronjob["spec"]["jobTemplate"]["spec"]
    problems = []
    if spec.get("concurrencyPolicy") != "Forbid":
        problems.append("CronJob/reconcile: concurrencyPolicy is not Forbid")
    _minute, hour, day_of_month, month, day_of_week = spec["schedule"].split()
    if (day_of_month, month, day_of_week) != ("*", "*", "*"):
        problems.append(f"CronJob/reconcile: {spec['schedule']!r} does not run every day")
    if spec.get("timeZone") != "America/New_York" or not (hour.isdigit() and 16 <= int(hour) <= 22):
        problems.append(f"CronJob/reconcile: {spec['schedule']!r} {spec.get('timeZone')} is not after the NYSE close")
    if spec.get("failedJobsHistoryLimit", 1) < 1 or "ttlSecondsAfterFinished" in job:
        problems.append("CronJob/reconcile: a failed run is deleted before anyone investigates it")
    fails_on_one = any(
        rule["action"] == "FailJob" and rule.get("onExitCodes", {}).get("values") == [1]
        for rule in job.get("podFailurePolicy", {}).get("rules", [])
    )
    if not fails_on_one:
        problems.append("CronJob/reconcile: a discrepancy (exit 1) is retried instead of failing the run")
    return problems


# ---------------------------------------------------------------------------------------------- shards


def shard_problems(docs: list[Manifest]) -> Problems:
    """Every process agrees on the shard count, and the worker clusters own every shard exactly once."""
    problems = []
    counts = {s.shard_count for _, _, entry, s in configured(docs) if entry.settings is Settings}
    if len(counts) != 1:
        return [f"the containers disagree on BROKER_SHARD_COUNT: {sorted(counts)}"]
    (count,) = counts
    owners: dict[int, list[str]] = {shard: [] for shard in range(count)}
    for workload, container in containers(docs):
        if module_of(container) != WORKER_MODULE:
            continue
        text = container_env(docs, container).get("BROKER_SHARDS", "")
        if not isinstance(text, str) or not text:
            problems.append(f"{workload}: BROKER_SHARDS is empty, which means every shard")
            continue
        try:
            for shard in parse_shard_set(text, count):
                owners[shard].append(workload.name)
        except ValueError as error:
            problems.append(f"{workload}: BROKER_SHARDS={text!r}: {error}")
    for shard, clusters in owners.items():
        if len(clusters) != 1:
            problems.append(f"shard {shard} is owned by {len(clusters)} worker clusters {clusters}, not one")
    return problems


# ---------------------------------------------------------------------------------------------- pods


def security_problems(docs: list[Manifest], image_uid: int) -> Problems:
    """Online Boutique's hardening: non-root (the image's user), seccomp RuntimeDefault, no privilege
    escalation, a read-only root filesystem, every capability dropped, requests and a memory limit, a
    ServiceAccount of its own without an API token."""
    problems = []
    accounts = {sa["metadata"]["name"] for sa in of_kind(docs, "ServiceAccount")}
    used_accounts: dict[str, str] = {}
    for workload in workloads(docs):
        pod = workload.pod_spec
        context = pod.get("securityContext", {})
        if context.get("runAsNonRoot") is not True or context.get("runAsUser") != image_uid:
            problems.append(f"{workload}: must run as non-root user {image_uid}, the image's")
        if context.get("seccompProfile", {}).get("type") != "RuntimeDefault":
            problems.append(f"{workload}: seccompProfile is not RuntimeDefault")
        account = str(pod.get("serviceAccountName"))
        if account not in accounts:
            problems.append(f"{workload}: ServiceAccount {account!r} is not in the manifests")
        elif account in used_accounts:
            problems.append(f"{workload}: shares ServiceAccount {account} with {used_accounts[account]}")
        else:
            used_accounts[account] = str(workload)
        if pod.get("automountServiceAccountToken") is not False:
            problems.append(f"{workload}: mounts an API token it does not need")
        for container in workload.containers:
            where = f"{workload} {container['name']}"
            security = container.get("securityContext", {})
            if security.get("allowPrivilegeEscalation") is not False:
                problems.append(f"{where}: allowPrivilegeEscalation is not false")
            if security.get("readOnlyRootFilesystem") is not True:
                problems.append(f"{where}: the root filesystem is writable")
            if security.get("privileged", False) or security.get("capabilities", {}).get("add"):
                problems.append(f"{where}: privileged or adds capabilities")
            if "ALL" not in security.get("capabilities", {}).get("drop", []):
                problems.append(f"{where}: does not drop ALL capabilities")
            resources = container.get("resources", {})
            if not {"cpu", "memory"} <= set(resources.get("requests", {})):
                problems.append(f"{where}: no cpu and memory requests")
            if "memory" not in resources.get("limits", {}):
                problems.append(f"{where}: no memory limit")
    return problems


def reference_problems(docs: list[Manifest]) -> Problems:
    """Names that point at other objects point at objects that exist: Services and PodDisruptionBudgets select
    pods, Service target ports exist, ConfigMaps and Secrets are there (the database Secret is made by
    CloudNativePG for its Cluster, OPERATOR_SECRETS by the operator; the Secrets of the Cluster's managed roles too),
    autoscalers scale a Deployment."""
    problems = []
    pods = [(w, w.pod_labels) for w in workloads(docs)]
    made_secrets = {f"{c['metadata']['name']}-app" for c in of_kind(docs, "Cluster")} | OPERATOR_SECRETS
    for service in of_kind(docs, "Service"):
        selected = [w for w, labels in pods if labels_match(service["spec"].get("selector"), labels)]
        if not selected:
            problems.append(f"Service/{service['metadata']['name']} selects no pods")
        for port in service["spec"]["ports"]:
            target = port.get("targetPort", port["port"])
            for workload in selected:
                names = {p.get("name") for c in workload.containers for p in c.get("ports", [])}
                numbers = {p["containerPort"] for c in workload.containers for p in c.get("ports", [])}
                if target not in names | numbers:
                    problems.append(f"Service/{service['metadata']['name']}: {workload} has no port {target}")
    for budget in of_kind(docs, "PodDisruptionBudget"):
        if not any(labels_match(budget["spec"]["selector"]["matchLabels"], labels) for _, labels in pods):
            problems.append(f"PodDisruptionBudget/{budget['metadata']['name']} selects no pods")
    for scaler in of_kind(docs, "HorizontalPodAutoscaler"):
        target = scaler["spec"]["scaleTargetRef"]
        if named(docs, target["kind"], target["name"]) is None:
            problems.append(f"HorizontalPodAutoscaler/{scaler['metadata']['name']}: no {target['kind']} to scale")
    for workload, container in containers(docs):
        for source in container.get("envFrom", []):
            if named(docs, "ConfigMap", source["configMapRef"]["name"]) is None:
                problems.append(f"{workload}: no ConfigMap {source['configMapRef']['name']}")
        for variable in container.get("env", []):
            secret = variable.get("valueFrom", {}).get("secretKeyRef", {}).get("name")
            if secret and secret not in made_secrets and named(docs, "Secret", secret) is None:
                problems.append(f"{workload}: no Secret {secret} (nor a Cluster that makes it)")
    for cluster in of_kind(docs, "Cluster"):
        for role in cluster["spec"].get("managed", {}).get("roles", []):
            secret = role.get("passwordSecret", {}).get("name")
            if secret and secret not in OPERATOR_SECRETS and named(docs, "Secret", secret) is None:
                problems.append(f"Cluster/{cluster['metadata']['name']}: no Secret {secret} for {role['name']}")
    return problems


# ---------------------------------------------------------------------------------------------- overlays


def autoscaler_of(docs: list[Manifest], workload: Workload) -> Manifest | None:
    return next(
        (h for h in of_kind(docs, "HorizontalPodAutoscaler") if h["spec"]["scaleTargetRef"]["name"] == workload.name),
        None,
    )


def high_availability_problems(docs: list[Manifest]) -> Problems:
    """prod: the API services at least 3 replicas (their autoscaler's minimum) and every worker cluster at least 2;
    each Deployment with a PodDisruptionBudget, a rolling update that keeps every pod until its replacement is
    ready, and its pods spread strictly across zones and, as far as possible, across nodes."""
    problems = []
    budgets = of_kind(docs, "PodDisruptionBudget")
    for workload in workloads(docs):
        if workload.kind != "Deployment":
            continue
        module = module_of(workload.pod_spec["containers"][0])
        scaler = autoscaler_of(docs, workload)
        floor = scaler["spec"]["minReplicas"] if scaler else workload.replicas
        needed = 3 if module in API_MODULES else 2
        if floor < needed:
            problems.append(f"{workload}: {floor} replicas, fewer than {needed}")
        if module in API_MODULES and scaler is None:
            problems.append(f"{workload}: no HorizontalPodAutoscaler")
        if scaler and "replicas" in workload.manifest["spec"]:
            problems.append(f"{workload}: sets replicas, which every apply would reset under the autoscaler")
        if not any(labels_match(b["spec"]["selector"]["matchLabels"], workload.pod_labels) for b in budgets):
            problems.append(f"{workload}: no PodDisruptionBudget")
        if workload.manifest["spec"].get("strategy", {}).get("rollingUpdate", {}).get("maxUnavailable") != 0:
            problems.append(f"{workload}: a rolling update may take a pod away before its replacement is ready")
        spread = {
            c["topologyKey"]: c
            for c in workload.pod_spec.get("topologySpreadConstraints", [])
            if labels_match(c["labelSelector"]["matchLabels"], workload.pod_labels)
            and c["labelSelector"]["matchLabels"]
        }
        zone = spread.get("topology.kubernetes.io/zone", {})
        if zone.get("whenUnsatisfiable") != "DoNotSchedule" or zone.get("nodeTaintsPolicy") != "Honor":
            problems.append(f"{workload}: not spread strictly across zones (lost zones' nodes not ignored)")
        if "kubernetes.io/hostname" not in spread:
            problems.append(f"{workload}: not spread across nodes")
    return problems


def single_replica_problems(docs: list[Manifest]) -> Problems:
    """dev: one replica of everything, nothing that expects more (budgets, autoscalers, zone spread)."""
    problems = [f"{w}: {w.replicas} replicas" for w in workloads(docs) if w.kind == "Deployment" and w.replicas != 1]
    problems += [
        f"{d['kind']}/{d['metadata']['name']} in dev"
        for d in of_kind(docs, "PodDisruptionBudget", "HorizontalPodAutoscaler")
    ]
    problems += [f"{w}: topology spread in dev" for w in workloads(docs) if w.pod_spec.get("topologySpreadConstraints")]
    return problems


def pool_problems(docs: list[Manifest]) -> Problems:
    """A server's pool holds its group commit's transactions in flight and one more for the readiness ping:
    otherwise a full group commit makes the readiness check, and the pod, fail."""
    problems = []
    for workload, container, entry, settings in configured(docs):
        if entry.module not in FLUSHERS:
            continue
        flushers_setting, more = FLUSHERS[entry.module]
        transactions = getattr(settings, flushers_setting) + more
        if settings.database_pool_max < transactions + 1:
            problems.append(
                f"{workload} {container['name']}: a pool of {settings.database_pool_max} cannot hold "
                f"{transactions} transactions of its group commit ({flushers_setting} and {more} more) "
                "and the readiness ping"
            )
    return problems


def connection_problems(docs: list[Manifest], share: float = 0.8) -> Problems:
    """Every process's pool at its most (an autoscaler's maximum, plus a rolling update's surge) fits in
    PostgreSQL's max_connections, with room left for CloudNativePG, operators and what is still to come."""
    (cluster,) = of_kind(docs, "Cluster")
    limit = int(cluster["spec"]["postgresql"]["parameters"]["max_connections"])
    total = 0
    for workload, _container, entry, settings in configured(docs):
        if entry.settings is not Settings:
            continue
        replicas = workload.replicas
        scaler = autoscaler_of(docs, workload)
        if scaler:
            replicas = scaler["spec"]["maxReplicas"]
        surge = workload.manifest["spec"].get("strategy", {}).get("rollingUpdate", {}).get("maxSurge", 0)
        total += (replicas + int(surge)) * settings.database_pool_max
    if total > share * limit:
        return [f"the pools may open {total} connections, over {share:.0%} of max_connections {limit}"]
    return []


# ---------------------------------------------------------------------------------------------- monitoring

OUR_METRIC = re.compile(r"\b(?:execution|grpc_server|outbox|orders|service_ready|settlement)[a-z0-9_]*\b")


def exported_metric_names() -> set[str]:
    """Every sample name the services can export, from the collectors their modules register."""
    for module in ("order_service.main", "callback_service.main", "execution_service.main", "exchange_simulator.main"):
        importlib.import_module(module)
    names = set()
    for family in REGISTRY.collect():
        suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count")}.get(family.type, ("",))
        names |= {family.name + suffix for suffix in suffixes}
    return names


def alert_problems(docs: list[Manifest], required: set[str]) -> Problems:
    """The PrometheusRule has the alerts operators need, each with a severity and a summary, and every metric
    of ours an alert reads is one the services export; the count of shards is the configured one."""
    problems = []
    rules = [r for rule in of_kind(docs, "PrometheusRule") for g in rule["spec"]["groups"] for r in g["rules"]]
    alerts = {r["alert"]: r for r in rules if "alert" in r}
    problems += [f"no alert {name}" for name in sorted(required - set(alerts))]
    exported = exported_metric_names()
    counts = {s.shard_count for _, _, e, s in configured(docs) if e.settings is Settings}
    for name, rule in alerts.items():
        if rule.get("labels", {}).get("severity") not in ("warning", "critical"):
            problems.append(f"alert {name}: no severity")
        if "summary" not in rule.get("annotations", {}):
            problems.append(f"alert {name}: no summary")
        for metric in set(OUR_METRIC.findall(rule["expr"])) - exported:
            problems.append(f"alert {name}: {metric} is not a metric the services export")
        if name == "ShardsWithoutWorkers" and not any(f"< {count}" in rule["expr"] for count in counts):
            problems.append(f"alert {name}: its shard count is not BROKER_SHARD_COUNT {sorted(counts)}")
    return problems
