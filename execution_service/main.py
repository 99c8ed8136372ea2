"""Wires and serves one worker of an execution cluster: `python -m execution_service`.

BROKER_SHARDS names the shards the cluster owns (e.g. "0-7"); run two or more replicas of each cluster with the
same value. Each replica pulls every owned shard, sweeps them, refreshes the exchange's quotes, and serves
broker.v1.ExecutionService for operators.
"""

from __future__ import annotations

from collections.abc import Coroutine
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from psycopg_pool import AsyncConnectionPool

from brokerage.background import Backoff
from brokerage.domain.sharding import format_shard_set
from brokerage.domain.submission import CircuitBreaker, RetryPolicy
from brokerage.exchange_client import ExchangeClient
from brokerage.messaging.connection import JetStreamLink, NatsAccess
from brokerage.messaging.doorbell import Doorbell
from brokerage.messaging.streams import ensure_orders_stream
from brokerage.proto import execution_pb2_grpc
from brokerage.rpc.identity import IdentityBoundary, Kind, verifier_for
from brokerage.rpc.process import run_service
from brokerage.rpc.server import RunningServer, Service, create_service_server
from brokerage.rpc.tls import client_tls
from brokerage.settings import Settings, load_settings
from brokerage.storage.pool import open_pool, ping
from brokerage.storage.shard_config import check_shard_count
from brokerage.storage.shards import ShardStore
from brokerage.storage.submissions import SubmissionStore
from brokerage.storage.sweeps import SweepStore
from execution_service.halts import HaltWatch
from execution_service.quote_feed import QuoteFeed
from execution_service.servicer import POLICY, SERVICE_NAME, ExecutionServicer
from execution_service.shard_worker import ShardWorker
from execution_service.shards import ShardBoard
from execution_service.submitter import Submitter
from execution_service.sweeper import Sweeper, SweepPolicy


@dataclass
class ExecutionApp:
    settings: Settings
    pool: AsyncConnectionPool
    link: JetStreamLink
    exchange: ExchangeClient
    board: ShardBoard
    halts: HaltWatch
    workers: list[ShardWorker]
    sweeper: Sweeper
    quote_feed: QuoteFeed
    running: RunningServer

    def background(self) -> list[Coroutine[Any, Any, None]]:
        """The work beside the server: a worker per owned shard, the shard board, the halts, the sweeper, the quote
        feed and readiness (PostgreSQL answers and NATS is connected)."""
        return [
            *(worker.run() for worker in self.workers),
            self.board.follow(),
            self.halts.follow(),
            self.sweeper.run(),
            self.sweeper.follow_halt_cancels(self.settings.halt_refresh_seconds),
            self.quote_feed.run(),
            self.running.health.follow(
                [self.ping_database, self.check_nats], interval=self.settings.readiness_interval_seconds
            ),
        ]

    async def ping_database(self) -> None:
        await ping(self.pool)

    async def check_nats(self) -> None:
        if not self.link.connected:
            raise ConnectionError("not connected to NATS")

    async def close(self) -> None:
        await self.exchange.close()
        await self.link.close()
        await self.pool.close()


async def start(settings: Settings) -> ExecutionApp:
    """Opens the dependencies and starts serving; the caller runs `background()` and closes the app."""
    shards = settings.owned_shards
    verifier = verifier_for(settings, Kind.OPERATOR)
    await verifier.load()
    pool = await open_pool(settings)
    await check_shard_count(pool, settings.shard_count)
    link = JetStreamLink(
        NatsAccess.of(settings),
        f"execution-{format_shard_set(shards)}",
        on_connected=lambda js: ensure_orders_stream(js, settings),
    )
    exchange = ExchangeClient.connect(
        settings.exchange_target,
        settings.exchange_deadline_seconds,
        client_tls(settings, settings.exchange_tls_ca_file),
    )
    board = ShardBoard(ShardStore(pool), link, shards, settings.shard_refresh_seconds)
    submissions = SubmissionStore(pool, claim_batch_max=settings.claim_batch_max)
    halts = HaltWatch(pool, submissions, settings.halt_refresh_seconds)
    submitter = Submitter(submissions, exchange, _retry_policy(settings), _circuit_breaker(settings), halts)
    doorbell = Doorbell(link)
    workers = [
        ShardWorker(
            shard,
            shard_count=settings.shard_count,
            link=link,
            submitter=submitter,
            doorbell=doorbell,
            board=board,
            ack_wait=settings.consumer_ack_wait_seconds,
            fetch_timeout=settings.fetch_timeout_seconds,
            work_limit=settings.message_work_limit_seconds,
            backoff=Backoff(settings.retry_initial_seconds, settings.retry_max_seconds),
            manage_consumer=settings.nats_manage_streams,
        )
        for shard in shards
    ]
    sweeper = Sweeper(SweepStore(pool), submissions, link, exchange, doorbell, shards, _sweep_policy(settings))
    quote_feed = QuoteFeed(exchange, pool, settings.quote_refresh_seconds)
    service = Service(
        SERVICE_NAME,
        ExecutionServicer(board, settings.shard_count),
        execution_pb2_grpc.add_ExecutionServiceServicer_to_server,
    )
    running = await create_service_server(settings, [service], [IdentityBoundary(verifier, POLICY)])
    return ExecutionApp(settings, pool, link, exchange, board, halts, workers, sweeper, quote_feed, running)


def _sweep_policy(settings: Settings) -> SweepPolicy:
    return SweepPolicy(
        interval=settings.sweep_interval_seconds,
        republish_after=timedelta(seconds=settings.republish_after_seconds),
        republish_busy_after=timedelta(seconds=settings.republish_busy_after_seconds),
        ask_after=timedelta(seconds=settings.status_query_after_seconds),
        publish_timeout=settings.publish_timeout_seconds,
        expiry_grace=timedelta(seconds=settings.expiry_grace_seconds),
    )


def _retry_policy(settings: Settings) -> RetryPolicy:
    return RetryPolicy(
        initial=timedelta(seconds=settings.submit_retry_initial_seconds),
        maximum=timedelta(seconds=settings.submit_retry_max_seconds),
        unknown_attempts=settings.submit_unknown_attempts,
    )


def _circuit_breaker(settings: Settings) -> CircuitBreaker:
    return CircuitBreaker(
        customers=settings.breaker_customers,
        window=timedelta(seconds=settings.breaker_window_seconds),
        cooldown=timedelta(seconds=settings.breaker_cooldown_seconds),
    )


def main() -> None:
    run_service("execution service", start, load_settings())
