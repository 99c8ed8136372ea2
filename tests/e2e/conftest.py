"""The services as real processes (`python -m <service>`), as make run and Kubernetes start them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from brokerage.rpc.tls import TlsFiles
from brokerage.storage.seed import seed
from devtools.mesh import ServicePlan, broker_service
from devtools.stack import PostgresCluster, free_port, spawn, stop_processes, wait_until
from tests.identity import TEST_IDENTITY

GRPCURL = str(Path(sys.prefix) / "bin" / "grpcurl")


@dataclass
class ServiceProcess:
    process: subprocess.Popen[bytes]
    port: int
    metrics_port: int
    log_path: Path
    probe_port: int = 0  # under TLS: health in plaintext here

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def health(self, service: str = "") -> str:
        with grpc.insecure_channel(f"127.0.0.1:{self.probe_port or self.port}") as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            response = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=2)
        return health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)

    def logs(self) -> list[dict[str, object]]:
        lines = self.log_path.read_text().splitlines()
        return [json.loads(line) for line in lines if line.startswith("{")]


def start_service(
    plan: ServicePlan, env: Mapping[str, str], log_path: Path, *, own_database_user: bool = False
) -> ServiceProcess:
    """`python -m <module>` as the plan says, with env under the plan's own settings, logging to log_path; with
    own_database_user, logging in to PostgreSQL as its role's user (see the fixture service_logins)."""
    environment = plan.environment(env, own_database_user=own_database_user)
    with log_path.open("ab") as log:
        process = spawn([sys.executable, "-m", plan.module], env=environment, stdout=log, stderr=subprocess.STDOUT)
    return ServiceProcess(process, plan.port, plan.metrics_port, log_path, plan.probe_port)


def base_env(database_url: str, nats_url: str, **env: str) -> dict[str, str]:
    """What every service of a test needs: where the record and NATS are, and no load balancer to wait for."""
    return {
        **os.environ,
        "BROKER_DATABASE_URL": database_url,
        "BROKER_NATS_URL": nats_url,
        "BROKER_SHUTDOWN_READINESS_DELAY_SECONDS": "0",
        "BROKER_READINESS_INTERVAL_SECONDS": "0.25",
        **TEST_IDENTITY.settings_env(),
        **env,
    }


def start_order_service(database_url: str, nats_url: str, log_path: Path, **env: str) -> ServiceProcess:
    """OrderService alone: no exchange refreshes the seeded quotes, so they may be a day old."""
    plan = broker_service("order-service", "order_service", free_port(), free_port(), **env)
    environment = base_env(database_url, nats_url, BROKER_QUOTE_MAX_AGE_SECONDS="86400")
    return start_service(plan, environment, log_path)


def wait_serving(service: ServiceProcess, health_name: str = "readiness", timeout: float = 20) -> None:
    def serving() -> bool:
        if service.process.poll() is not None:
            raise RuntimeError(f"{service.log_path.stem} exited: {service.log_path.read_text()[-2000:]}")
        try:
            return service.health(health_name) == "SERVING"
        except grpc.RpcError:
            return False

    wait_until(serving, timeout, f"{service.log_path.stem} {health_name} SERVING")


@pytest.fixture
def e2e_database(postgres_cluster: PostgresCluster, database_url: str) -> str:
    seed(database_url, 100)
    return database_url


@pytest.fixture
def order_service(e2e_database: str, fresh_nats: str, tmp_path: Path) -> Iterator[ServiceProcess]:
    service = start_order_service(e2e_database, fresh_nats, tmp_path / "order-service.log")
    try:
        wait_serving(service)
        yield service
    finally:
        stop_processes([service.process], timeout=10)


def grpcurl(
    target: str,
    *args: str,
    data: dict[str, object] | None = None,
    token: str | None = None,
    protoset: Path | None = None,
    tls: TlsFiles | None = None,
) -> subprocess.CompletedProcess[str]:
    """grpcurl as an engineer runs it, presenting the token if given (-H "authorization: Bearer ..."), taking the
    contract from a descriptor set if given (-protoset), else from reflection; over mutual TLS with tls's files."""
    command = [GRPCURL, "-max-time", "10"]
    if tls is None:
        command += ["-plaintext"]
    else:
        command += ["-cacert", str(tls.ca), "-cert", str(tls.cert), "-key", str(tls.key)]
    if protoset is not None:
        command += ["-protoset", str(protoset)]
    if token is not None:
        command += ["-H", f"authorization: Bearer {token}"]
    if data is not None:
        command += ["-d", json.dumps(data)]
    return subprocess.run([*command, target, *args], capture_output=True, text=True, timeout=30, check=False)
