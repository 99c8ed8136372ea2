"""One seed's world: PostgreSQL as a primary and a synchronous standby, NATS as three servers, and the mesh on them
(two OrderService replicas, cluster A of two workers, cluster B of one, CallbackService, the simulator, the
operations service), each service a process the harness kills, pauses and restarts as Kubernetes would.

Processes are started from the main thread only: devtools.stack.spawn has Linux SIGTERM a child when the thread
that started it exits.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import Mapping
from contextlib import suppress
from dataclasses import replace
from pathlib import Path
from urllib.request import urlopen

import grpc
import nats
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families

from brokerage.messaging.streams import EXECUTIONS_STREAM, ORDERS_STREAM
from brokerage.storage.grants import BY_NAME, ROLES, SERVICE_ROLES
from brokerage.storage.migrate import load_snapshot
from brokerage.storage.seed import seed
from devtools.mesh import FAST_TIMINGS, broker_service, database_url_as, plan_mesh
from devtools.stack import NatsCluster, PostgresCluster, ReplicatedPostgres, free_port, spawn, stop_processes
from devtools.token import DevIdentity

DATABASE = "brokerage"
SHARD_COUNT = 16
# The tests' short timings, and shorter sweeper and venue-retry windows, so a seed's faults heal within its run.
TIMINGS = {
    **FAST_TIMINGS,
    "BROKER_REPUBLISH_BUSY_AFTER_SECONDS": "6",
    "BROKER_STATUS_QUERY_AFTER_SECONDS": "3",
    "BROKER_SUBMIT_RETRY_INITIAL_SECONDS": "0.3",
    "BROKER_SUBMIT_RETRY_MAX_SECONDS": "1",
    "BROKER_SUBMIT_UNKNOWN_ATTEMPTS": "3",
    "BROKER_SHUTDOWN_READINESS_DELAY_SECONDS": "0",
    "BROKER_READINESS_INTERVAL_SECONDS": "0.25",
    "BROKER_STREAM_REPLICAS": "3",
    "BROKER_LOG_LEVEL": "WARNING",
    "EXCHANGE_LOG_LEVEL": "WARNING",
}
ACK_WAIT_SECONDS = float(TIMINGS["BROKER_CONSUMER_ACK_WAIT_SECONDS"])
LONGEST_SWEEP_WINDOW = max(float(TIMINGS[k]) for k in TIMINGS if k.startswith("BROKER_REPUBLISH"))
READY_TIMEOUT = 60.0


def make_template(directory: Path, customers: int) -> Path:
    """A stopped cluster's data directory, migrated, with each service's login and `customers` funded customers:
    what every seed's primary starts as a copy of."""
    cluster = PostgresCluster(directory, free_port(), checksums=True)
    cluster.start()
    try:
        cluster.create_database(DATABASE)
        load_snapshot(cluster.url(DATABASE))
        for role in ROLES:
            cluster.create_login(role.login, role.name)
        seed(cluster.url(DATABASE), customers)
    finally:
        cluster.stop()
    return directory


class Totals(dict[str, float]):
    """Counters summed across a process's lives (each restart starts them at zero)."""

    def add(self, counts: Mapping[str, float]) -> None:
        for name, value in counts.items():
            self[name] = self.get(name, 0.0) + value


class World:
    """The engines and the services of one run, under work_dir."""

    def __init__(self, work_dir: Path, template: Path, identity: DevIdentity, venue_env: Mapping[str, str]) -> None:
        self.work_dir = work_dir
        self.database = ReplicatedPostgres(work_dir / "pg", template)
        self.messaging = NatsCluster(work_dir / "nats")
        self.identity = identity
        plan = plan_mesh(
            iter(free_port, None),
            shard_count=SHARD_COUNT,
            exchange_env={**venue_env, "EXCHANGE_JOURNAL_DIR": str(work_dir / "journals")},
        )
        cluster_b = plan.workers[2]
        second = broker_service(
            "order-service-2", "order_service", free_port(), free_port(), BROKER_SHARD_COUNT=str(SHARD_COUNT)
        )
        self.order_services = (replace(plan.order_service, name="order-service-1"), second)
        self.workers = (*plan.workers[:2], cluster_b)  # cluster A two replicas, cluster B one
        self.workers_with_a_partner = plan.workers[:2]  # a paused one's shards go to the other
        self.callback, self.exchange, self.operations = plan.callback_service, plan.exchange, plan.operations
        self.plans = {s.name: s for s in (self.callback, self.exchange, *self.order_services, *self.workers)}
        self.plans[self.operations.name] = self.operations
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self.venue_counts = Totals()  # the simulator's counters, kept across its restarts

    @property
    def database_url(self) -> str:
        return self.database.url(DATABASE)

    @property
    def order_targets(self) -> list[str]:
        return [s.target for s in self.order_services]

    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            "BROKER_DATABASE_URL": self.database_url,
            "BROKER_NATS_URL": self.messaging.url,
            **self.identity.settings_env(),
            **TIMINGS,
        }

    def reconcile_env(self) -> dict[str, str]:
        login = BY_NAME[SERVICE_ROLES["brokerage.reconcile"]].login
        return {
            **self.env(),
            "BROKER_DATABASE_URL": database_url_as(self.database_url, login),
            "BROKER_EXCHANGE_TARGET": self.exchange.target,
        }

    async def start(self) -> None:
        self.database.start()
        self.messaging.start()
        for name in self.plans:  # one at a time: the first records the shard count
            await self.launch(name)

    def stop(self) -> None:
        """Everything stopped, whatever state a fault left it in (a node paused, a process stopped)."""
        for process in self.processes.values():
            with suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGCONT)
        stop_processes(list(self.processes.values()), timeout=20)
        with suppress(Exception):
            self.messaging.stop()
        for name, node in self.database.nodes.items():
            self.database.resume(name)
            try:
                node.stop()
            except Exception:
                node.kill()

    async def launch(self, name: str, env: Mapping[str, str] | None = None) -> bool:
        """Starts the service and waits until it is ready; False if it was not within READY_TIMEOUT."""
        plan = self.plans[name]
        if env is not None:
            plan = self.plans[name] = replace(plan, env=env)
        environment = plan.environment(self.env(), own_database_user=True)
        with (self.work_dir / f"{name}.log").open("ab") as log:
            self.processes[name] = spawn(
                [sys.executable, "-m", plan.module], env=environment, stdout=log, stderr=subprocess.STDOUT
            )
        return await self.ready(name, READY_TIMEOUT)

    async def ready(self, name: str, timeout: float) -> bool:
        plan, process = self.plans[name], self.processes[name]
        deadline = asyncio.get_running_loop().time() + timeout
        async with grpc.aio.insecure_channel(plan.health_target) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            while asyncio.get_running_loop().time() < deadline:
                if process.poll() is not None:
                    return False
                try:
                    answer = await stub.Check(health_pb2.HealthCheckRequest(service="readiness"), timeout=1)
                    if answer.status == health_pb2.HealthCheckResponse.SERVING:
                        return True
                except grpc.aio.AioRpcError:
                    pass
                await asyncio.sleep(0.2)
        return False

    def signal(self, name: str, signum: signal.Signals) -> None:
        process = self.processes[name]
        if process.poll() is None:
            os.killpg(process.pid, signum)  # spawn made it a session (and group) leader
        if signum == signal.SIGKILL:
            process.wait()

    def exchange_metrics(self) -> dict[str, float]:
        """The simulator's counters and gauges, summed over labels; empty while it does not answer."""
        try:
            with urlopen(f"http://127.0.0.1:{self.exchange.metrics_port}/metrics", timeout=2) as response:
                text = response.read().decode()
        except OSError:
            return {}
        totals: dict[str, float] = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                totals[sample.name] = totals.get(sample.name, 0.0) + sample.value
        return totals

    async def executions_feed(self) -> list[str]:
        """The Nats-Msg-Id (exec_id) of every message on the EXECUTIONS stream, in stream order."""
        client = await nats.connect(self.messaging.url.split(","), connect_timeout=5)
        try:
            js = client.jetstream(timeout=10)
            last = (await js.stream_info(EXECUTIONS_STREAM)).state.last_seq
            ids = []
            for sequence in range(1, last + 1):
                message = await js.get_msg(EXECUTIONS_STREAM, sequence)
                ids.append((message.headers or {}).get("Nats-Msg-Id", f"(no id at {sequence})"))
            return ids
        finally:
            await client.close()

    async def stream_leader(self) -> str | None:
        """The NATS server leading ORDERS, or None while no one answers (a quorum lost)."""
        try:
            client = await nats.connect(self.messaging.url.split(","), connect_timeout=2, max_reconnect_attempts=0)
        except Exception:
            return None
        try:
            info = await client.jetstream(timeout=2).stream_info(ORDERS_STREAM)
            return info.cluster.leader if info.cluster else None
        except Exception:
            return None
        finally:
            await client.close()
