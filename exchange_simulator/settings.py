"""The simulator's configuration: EXCHANGE_* environment variables read once at start into one validated object."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Annotated, Self

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from brokerage.listings import DEMO_LISTINGS
from brokerage.settings import MarketHours, known_log_level
from brokerage.wire import REPORT_BATCH_MAX

LISTED_SYMBOLS = frozenset(listing.symbol for listing in DEMO_LISTINGS)


class SimulatorSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="EXCHANGE_", frozen=True)

    grpc_host: str = "127.0.0.1"
    grpc_port: int = Field(default=50060, ge=0, le=65535)
    metrics_port: int = Field(default=9470, ge=0, le=65535)

    # The seed of every random choice: price paths, fill plans, chaos. The same seed replays the same venue.
    seed: int = 1
    # NoDecode: the environment gives "TSLA,META", not JSON.
    halted: Annotated[frozenset[str], NoDecode] = frozenset()
    market_hours: MarketHours = MarketHours.ALWAYS_OPEN

    # A slow venue: a new order is taken at once but answered this much later (0: at once). A caller that dies
    # meanwhile leaves an order the venue has and the caller never heard acknowledged.
    ack_delay_ms: int = Field(default=0, ge=0, le=60_000)
    fill_delay_ms: int = Field(default=20, ge=0, le=60_000)
    partial_fill_probability: float = Field(default=0.3, ge=0, le=1)
    max_fills: int = Field(default=4, ge=1, le=100)
    price_step_ms: int = Field(default=250, ge=1, le=60_000)
    price_volatility: Decimal = Field(default=Decimal("0.0005"), ge=0, le=Decimal("0.1"))  # per step, relative

    # host:port of CallbackService; empty: reports are kept (status, drop copy) but delivered nowhere.
    callback_target: str = ""
    callback_token: SecretStr = SecretStr("")
    # How reports travel: one StreamExecutions stream (true), or one ReportExecution call each (false).
    callback_stream: bool = True
    # Unary: each call's deadline. Stream: how long reports may stay in flight with no acknowledgement at all
    # before the stream is given up and its unacknowledged reports are sent again on a new one.
    callback_deadline_seconds: float = Field(default=2.0, gt=0, le=60)
    delivery_concurrency: int = Field(default=8, ge=1, le=256)  # unary: calls in flight
    # Stream: reports in flight, unacknowledged. Several of CallbackService's batches (BROKER_SETTLEMENT_BATCH_MAX,
    # 64): with only one batch's worth, each batch waited for the last one's acknowledgements to come back and the
    # next reports to be sent, and settlement ran at the window over the round trip, not at what it can do.
    callback_stream_window: int = Field(default=1024, ge=1, le=10_000)
    # Stream: batches sent and not yet acknowledged. While this many are out, new reports wait and then go as one
    # batch (as Nagle's algorithm does): a lone report goes at once, a busy moment shares a message. Several, so
    # CallbackService always has the next batch to book (it books 2 transactions at once by default).
    callback_stream_batches_in_flight: int = Field(default=4, ge=1, le=64)
    # Stream: reports in one message at most. One of CallbackService's settlement transactions
    # (BROKER_SETTLEMENT_BATCH_MAX, 64), so a batch's acknowledgement comes back after one booking: batches of up to
    # 1,000 took over the ack timeout to book under overload, and the stream was given up and everything resent.
    callback_stream_batch_max: int = Field(default=64, ge=1, le=REPORT_BATCH_MAX)
    redelivery_backoff_initial_seconds: float = Field(default=0.05, gt=0, le=60)
    redelivery_backoff_max_seconds: float = Field(default=2.0, gt=0, le=600)

    # 0 is off; p delays a report with probability p, sends it twice with probability p, and makes SubmitOrder
    # answer only after the order's first fill was delivered with probability p.
    chaos_rate: float = Field(default=0.0, ge=0, le=1)
    chaos_max_delay_ms: int = Field(default=500, ge=0, le=60_000)
    # Apart from chaos_rate: each report goes out malformed with this probability (its real content is then only in
    # the drop copy, for an operator to book).
    chaos_malformed_rate: float = Field(default=0.0, ge=0, le=1)
    # Apart from chaos_rate: each report is sent once more this long after, with this probability (an old report
    # replayed, as a venue recovering its log does; CallbackService must book it once).
    chaos_replay_rate: float = Field(default=0.0, ge=0, le=1)
    chaos_replay_delay_ms: int = Field(default=120_000, ge=0, le=3_600_000)

    # A deterministic fault for drills: every SubmitOrder of these customers' orders fails with INTERNAL, as a venue
    # whose routing breaks on one account would. NoDecode: the environment gives "c-1,c-2".
    failing_customers: Annotated[frozenset[str], NoDecode] = frozenset()

    # A directory of journals, a file per trading day, that the venue appends its orders, reports and tombstones
    # to and reads today's back at start, so that a restart forgets nothing of the day (exchange_simulator.journal);
    # unset, the venue lives in memory only. `make run` sets it.
    journal_dir: Path | None = None

    shutdown_readiness_delay_seconds: float = Field(default=0.0, ge=0)
    shutdown_grace_seconds: float = Field(default=5.0, ge=0)
    # Mutual TLS: the venue's certificate and key (from a CA of its own), the CA bundle its clients' certificates
    # chain to (ours), who may enter and cancel orders (the workers), and who may also read order status, quotes and
    # the drop copy (the operations service, reconcile); health in plaintext on probe_port. All empty: plaintext.
    tls_cert_file: str = ""
    tls_key_file: str = ""
    tls_ca_file: str = ""
    tls_order_entry_peers: str = ""
    tls_reader_peers: str = ""
    probe_port: int = Field(default=0, ge=0, le=65535)
    # The CA bundle of CallbackService's certificate (ours); empty: tls_ca_file.
    callback_tls_ca_file: str = ""

    log_level: str = "INFO"

    @field_validator("halted", mode="before")
    @classmethod
    def _split_symbols(cls, value: object) -> object:
        if isinstance(value, str):
            return frozenset(s.strip().upper() for s in value.split(",") if s.strip())
        return value

    @field_validator("failing_customers", mode="before")
    @classmethod
    def _split_customers(cls, value: object) -> object:
        if isinstance(value, str):
            return frozenset(c.strip() for c in value.split(",") if c.strip())
        return value

    @field_validator("halted")
    @classmethod
    def _listed_symbols(cls, value: frozenset[str]) -> frozenset[str]:
        unknown = sorted(value - LISTED_SYMBOLS)
        if unknown:
            raise ValueError(f"not listed: {', '.join(unknown)} (listed: {', '.join(sorted(LISTED_SYMBOLS))})")
        return value

    @field_validator("callback_target")
    @classmethod
    def _host_and_port(cls, value: str) -> str:
        value = value.strip()
        host, _, port = value.rpartition(":")
        if value and not (host and port.isdigit() and 0 < int(port) <= 65535):
            raise ValueError(f"expected host:port, got {value!r}")
        return value

    @field_validator("log_level")
    @classmethod
    def _known_level(cls, value: str) -> str:
        return known_log_level(value)

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.redelivery_backoff_max_seconds < self.redelivery_backoff_initial_seconds:
            raise ValueError("redelivery_backoff_max_seconds is below redelivery_backoff_initial_seconds")
        # Without the token CallbackService refuses every report, and at-least-once would retry them forever.
        if self.callback_target and not self.callback_token.get_secret_value():
            raise ValueError("callback_token is required when callback_target is set")
        return self
