"""Wires and serves the exchange simulator: `python -m exchange_simulator`. Settings come from EXCHANGE_* variables."""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

from brokerage.background import Backoff
from brokerage.domain.executions import DropCopyEntry, Tombstone
from brokerage.domain.market_hours import AlwaysOpen, trading_day
from brokerage.listings import DEMO_LISTINGS
from brokerage.proto import exchange_pb2_grpc
from brokerage.rpc.limits import ServerLimits
from brokerage.rpc.process import run_service
from brokerage.rpc.server import RunningServer, Service, create_server
from brokerage.rpc.tls import PeerPolicy, ServerTls, TlsFiles, files_from, peers_from
from brokerage.settings import load_settings
from brokerage.telemetry import get_logger
from brokerage.wire import SUBMIT_BATCH_MAX_BYTES
from exchange_simulator.callback_client import CallbackClient
from exchange_simulator.chaos import Chaos
from exchange_simulator.delivery import KeptOnly, ReportDelivery, ReportSink
from exchange_simulator.exchange import Exchange
from exchange_simulator.executions import VenueIds
from exchange_simulator.fill_plan import FillRules
from exchange_simulator.journal import DailyJournal
from exchange_simulator.market import Market
from exchange_simulator.servicer import ExchangeServicer
from exchange_simulator.settings import SimulatorSettings
from exchange_simulator.stream_delivery import StreamDelivery
from exchange_simulator.venue import Venue

log = get_logger(__name__)
SERVICE_NAME = "broker.v1.ExchangeService"
READINESS_INTERVAL_SECONDS = 5.0  # no dependencies: readiness is SERVING from the first check on


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass
class SimulatorApp:
    settings: SimulatorSettings
    exchange: Exchange
    running: RunningServer
    callback: CallbackClient | None

    @property
    def venue(self) -> Venue:
        """The venue's orders, for tests to inspect: `app.venue.order(order_id).submissions`."""
        return self.exchange.venue

    @property
    def market(self) -> Market:
        return self.exchange.market

    @property
    def port(self) -> int:
        return self.running.port

    def background(self) -> list[Coroutine[Any, Any, None]]:
        """The work beside the server: fills when due, the price walk, readiness (no checks: always ready)."""
        return [
            self.exchange.run_fills(),
            self.exchange.walk_prices(),
            self.exchange.expire_day_orders(),
            self.running.health.follow([], interval=READINESS_INTERVAL_SECONDS),
        ]

    async def close(self) -> None:
        await self.exchange.close()
        if self.callback is not None:
            await self.callback.close()


def chaos_of(settings: SimulatorSettings) -> Chaos:
    """The venue's misbehaviour, seeded: one for the acknowledgements and the reports' delivery and encoding."""
    return Chaos(
        settings.chaos_rate,
        settings.chaos_max_delay_ms / 1000,
        random.Random(f"{settings.seed}/chaos"),
        malformed_rate=settings.chaos_malformed_rate,
        replay_rate=settings.chaos_replay_rate,
        replay_delay_seconds=settings.chaos_replay_delay_ms / 1000,
    )


def build_exchange(
    settings: SimulatorSettings,
    callback: CallbackClient | None,
    clock: Callable[[], datetime] = utc_now,
    chaos: Chaos | None = None,
) -> Exchange:
    market = Market(
        DEMO_LISTINGS,
        seed=settings.seed,
        volatility=settings.price_volatility,
        opened_at=clock(),
        halted=settings.halted,
    )
    rules = FillRules(
        seed=settings.seed,
        fill_delay=timedelta(milliseconds=settings.fill_delay_ms),
        partial_fill_probability=settings.partial_fill_probability,
        max_fills=settings.max_fills,
    )
    journal = None if settings.journal_dir is None else DailyJournal(settings.journal_dir, clock)
    venue = Venue(
        market, rules, clock=clock, market_clock=settings.market_hours.clock(), ids=VenueIds(), journal=journal
    )
    if journal is not None:
        restore(venue, journal, trading_day(clock()))
    chaos = chaos or chaos_of(settings)
    return Exchange(
        venue,
        market,
        report_sink(settings, callback, chaos),
        chaos,
        clock=clock,
        price_step_seconds=settings.price_step_ms / 1000,
        acknowledgement_wait_seconds=settings.callback_deadline_seconds,
        acknowledgement_delay_seconds=settings.ack_delay_ms / 1000,
        journal=journal,
        past_days=None if journal is None else partial(past_drop_copy, market, rules, clock, journal),
    )


def restore(venue: Venue, journal: DailyJournal, day: date) -> None:
    """Takes back the day's history (only the day's: DAY orders end at its close, and earlier days' drop copies are
    read from their files when asked for)."""
    started = time.perf_counter()
    history = journal.history(day)
    working = venue.restore(history)
    log.info(
        "venue restored from its journal",
        journal=str(journal.path(day)),
        entries=len(history),
        working=working,
        seconds=round(time.perf_counter() - started, 3),
    )


def past_drop_copy(
    market: Market, rules: FillRules, clock: Callable[[], datetime], journal: DailyJournal, day: date
) -> list[DropCopyEntry | Tombstone]:
    """An earlier day's drop copy, from that day's journal (a venue restored from it, for that alone)."""
    scratch = Venue(market, rules, clock=clock, market_clock=AlwaysOpen(), ids=VenueIds())
    scratch.restore(journal.history(day))
    return scratch.drop_copy(day)


def redelivery_backoff(settings: SimulatorSettings) -> Backoff:
    return Backoff(settings.redelivery_backoff_initial_seconds, settings.redelivery_backoff_max_seconds)


def report_sink(settings: SimulatorSettings, callback: CallbackClient | None, chaos: Chaos) -> ReportSink:
    """Where reports go: nowhere without CallbackService, else over a stream or one call each."""
    if callback is None:
        return KeptOnly()
    rng = random.Random(f"{settings.seed}/backoff")
    if settings.callback_stream:
        return StreamDelivery(
            callback.open_stream,
            window=settings.callback_stream_window,
            batches_in_flight=settings.callback_stream_batches_in_flight,
            batch_max=settings.callback_stream_batch_max,
            ack_timeout=settings.callback_deadline_seconds,
            backoff=redelivery_backoff(settings),
            chaos=chaos,
            rng=rng,
        )
    return ReportDelivery(
        callback.send,
        concurrency=settings.delivery_concurrency,
        backoff=redelivery_backoff(settings),
        chaos=chaos,
        rng=rng,
    )


async def start(settings: SimulatorSettings) -> SimulatorApp:
    """Starts serving; the caller runs `background()` and closes the app."""
    callback = None
    chaos = chaos_of(settings)
    if settings.callback_target:
        token = settings.callback_token.get_secret_value()
        callback = CallbackClient(
            settings.callback_target,
            token,
            settings.callback_deadline_seconds,
            redelivery_backoff(settings),
            encode=chaos.encode,
            tls=callback_tls(settings),
        )
    exchange = build_exchange(settings, callback, chaos=chaos)
    service = Service(
        SERVICE_NAME,
        ExchangeServicer(exchange, settings.failing_customers),
        exchange_pb2_grpc.add_ExchangeServiceServicer_to_server,
    )
    limits = ServerLimits(max_receive_bytes=SUBMIT_BATCH_MAX_BYTES)
    running = await create_server(
        f"{settings.grpc_host}:{settings.grpc_port}", [service], limits=limits, tls=server_tls(settings)
    )
    log.info("exchange simulator listening", port=running.port, session_id=exchange.venue.session_id)
    return SimulatorApp(settings, exchange, running, callback)


ORDER_ENTRY = tuple(f"/{SERVICE_NAME}/{m}" for m in ("SubmitOrder", "SubmitOrders", "CancelOrder"))


def server_tls(settings: SimulatorSettings) -> ServerTls | None:
    """Only the workers hold order entry; readers may also ask for status, quotes and the drop copy."""
    files = files_from(settings.tls_cert_file, settings.tls_key_file, settings.tls_ca_file, "EXCHANGE_TLS_*")
    if files is None:
        return None
    entry = peers_from(settings.tls_order_entry_peers)
    if not entry:
        raise ValueError("EXCHANGE_TLS_ORDER_ENTRY_PEERS is required with TLS: who may send orders")
    policy = PeerPolicy(entry | peers_from(settings.tls_reader_peers), {method: entry for method in ORDER_ENTRY})
    return ServerTls(files, policy, settings.probe_port)


def callback_tls(settings: SimulatorSettings) -> TlsFiles | None:
    """The venue's certificate, presented to CallbackService, whose own is checked against our CA."""
    files = files_from(settings.tls_cert_file, settings.tls_key_file, settings.tls_ca_file, "EXCHANGE_TLS_*")
    if files is None or not settings.callback_tls_ca_file:
        return files
    return TlsFiles(files.cert, files.key, Path(settings.callback_tls_ca_file))


def main() -> None:
    run_service("exchange simulator", start, load_settings(SimulatorSettings))
