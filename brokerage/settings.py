"""Configuration: environment variables (prefix BROKER_) read once at start-up into one validated object.

A bad or missing value stops the process before it serves anything.
"""

from __future__ import annotations

import json
import sys
from decimal import Decimal
from enum import StrEnum
from pathlib import Path
from typing import TypeVar, overload
from urllib.parse import quote, urlsplit, urlunsplit

from pydantic import (
    Field,
    PostgresDsn,
    PrivateAttr,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

from brokerage.domain.market_hours import AlwaysOpen, MarketClock, NyseRegularSession
from brokerage.domain.sharding import parse_shard_set


class MarketHours(StrEnum):
    ALWAYS_OPEN = "always"
    NYSE = "nyse"  # the NYSE regular session: 09:30-16:00 New York time on trading days

    def clock(self) -> MarketClock:
        return NyseRegularSession() if self is MarketHours.NYSE else AlwaysOpen()


def known_log_level(value: str) -> str:
    """A log level's name, upper case; a name logging does not know is a settings error."""
    level = value.upper()
    if level not in {"DEBUG", "INFO", "WARNING", "ERROR"}:
        raise ValueError(f"unknown log level {value!r}")
    return level


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="BROKER_", frozen=True)

    database_url: PostgresDsn = Field(default=PostgresDsn("postgresql://postgres@127.0.0.1:5432/brokerage"))
    # The password of database_url's user, in a file of its own (a mounted Secret's key): read once, here, kept out of
    # the URL and of every log, and put into the connection string only when a connection is made (dsn). A URL that
    # carries a password of its own as well is refused: which one is meant would be a guess.
    database_password_file: Path | None = None
    _database_password: SecretStr | None = PrivateAttr(default=None)
    database_pool_min: int = Field(default=4, ge=1)
    database_pool_max: int = Field(default=16, ge=1)
    statement_timeout_ms: int = Field(default=5_000, ge=100)

    nats_url: str = "nats://127.0.0.1:4222"  # or several, comma-separated: a cluster's servers
    # Production's NATS: a user per service, limited to its subjects and its own inbox prefix (_INBOX_<service>), its
    # password read from a file; TLS checked against nats_tls_ca_file. All empty: no credentials, plaintext.
    nats_user: str = ""
    nats_password_file: str = ""
    nats_tls_ca_file: str = ""
    # Whether a service makes the ORDERS stream and its shard's consumer when they are missing (make run, the
    # tests). Production: false; they are the setup Job's alone, and the services' NATS users may not make them.
    nats_manage_streams: bool = True
    stream_replicas: int = Field(default=1, ge=1, le=5)
    stream_max_bytes: int = Field(default=1 << 30, ge=1 << 20)
    stream_duplicate_window_seconds: int = Field(default=900, ge=120)
    executions_max_age_seconds: int = Field(default=7 * 24 * 3600, ge=3600)  # how long the feed keeps a fill
    shard_count: int = Field(default=16, ge=1, le=4096)

    grpc_host: str = "127.0.0.1"
    grpc_port: int = Field(default=50051, ge=0, le=65535)
    metrics_port: int = Field(default=9464, ge=0, le=65535)
    # On SIGTERM: readiness goes NOT_SERVING, we wait this long for load balancers to notice, then drain.
    shutdown_readiness_delay_seconds: float = Field(default=5.0, ge=0)
    shutdown_grace_seconds: float = Field(default=10.0, ge=0)
    readiness_interval_seconds: float = Field(default=2.0, gt=0)
    # What one server holds for its callers at once (brokerage.rpc.limits): past a bound a call is RESOURCE_EXHAUSTED.
    grpc_max_unary_calls: int = Field(default=2_000, ge=1)
    grpc_max_streams: int = Field(default=2_000, ge=1)
    grpc_max_unauthenticated_streams: int = Field(default=32, ge=1)  # health Watch and reflection
    # Connections are closed (gracefully) at this age, so new replicas get their share behind an L4 load balancer.
    grpc_max_connection_age_seconds: float = Field(default=600.0, ge=1)
    # Mutual TLS (brokerage.rpc.tls): this process's certificate and key, the CA bundle its callers' certificates
    # must chain to, and the identities (certificate URI SANs, comma-separated) its server admits; with them, health
    # is also served in plaintext on probe_port, for kubelet. All empty: plaintext (make run on loopback).
    tls_cert_file: str = ""
    tls_key_file: str = ""
    tls_ca_file: str = ""
    tls_peers: str = ""
    probe_port: int = Field(default=0, ge=0, le=65535)
    # The CA bundle that signs the venue's server certificate (a CA of its own); empty: tls_ca_file.
    exchange_tls_ca_file: str = ""
    # Server reflection, for grpcurl with no proto files at hand; production turns it off on the services outside
    # callers reach (the contract then comes from `python -m brokerage.rpc.protoset`).
    grpc_reflection: bool = True
    watches_per_customer: int = Field(default=10, ge=1)  # WatchOrders streams of one customer on one replica

    price_collar: Decimal = Field(default=Decimal("0.05"), gt=0, lt=1)
    # The firm's credit threshold: past this gross buy notional accepted in a New York trading day, the operations
    # service engages the firm-wide halt by itself (once a day; an operator's clear stands).
    firm_daily_buy_notional_threshold: Decimal = Field(default=Decimal("1000000000"), gt=0)
    firm_threshold_check_seconds: float = Field(default=1.0, gt=0)
    max_order_quantity: int = Field(default=1_000_000, ge=1)
    quote_max_age_seconds: float = Field(default=10.0, gt=0)
    market_hours: MarketHours = MarketHours.ALWAYS_OPEN
    reference_refresh_seconds: float = Field(default=0.5, gt=0)

    # Group commit of placements: at most this many orders per transaction, this many transactions at once per
    # process. One flusher measured best on 2 cores (larger batches: less CPU per order); more let a placement
    # transaction stalled on a customer's row lock leave the process's other placements running.
    placement_batch_max: int = Field(default=64, ge=1, le=1000)
    placement_flushers: int = Field(default=1, ge=1)
    watch_poll_seconds: float = Field(default=1.0, gt=0)  # WatchOrders reads PostgreSQL at least this often
    relay_batch_size: int = Field(default=500, ge=1, le=10_000)
    relay_poll_seconds: float = Field(default=1.0, gt=0)
    publish_timeout_seconds: float = Field(default=5.0, gt=0)

    # Execution workers. A cluster owns the shards in `shards` ("0-7", "8-15", "0-3,12"); empty: all of them.
    shards: str = ""
    exchange_target: str = "127.0.0.1:50060"
    exchange_deadline_seconds: float = Field(default=2.0, gt=0)
    # JetStream redelivers a message whose holder neither acks nor reports progress for this long: the time a
    # dead replica's shard waits before another replica takes it over.
    consumer_ack_wait_seconds: float = Field(default=10.0, ge=1)
    fetch_timeout_seconds: float = Field(default=2.0, gt=0)
    # One message's work (the customer's waiting orders taken to the exchange) may take this long. Its progress
    # reports keep the message from other replicas, so an await stuck past this is abandoned and the message
    # retried rather than holding the shard for good; what was recorded stays done.
    message_work_limit_seconds: float = Field(default=60.0, gt=0)
    # The holder of a shard's message takes up to this many of the shard's waiting orders, of the customers
    # waiting longest, and submits them side by side (each customer's in sequence order).
    claim_batch_max: int = Field(default=32, ge=1, le=1000)
    retry_initial_seconds: float = Field(default=0.1, gt=0)
    retry_max_seconds: float = Field(default=5.0, gt=0)
    # An order whose send failed (rule 7) backs off from this, doubling with its attempts up to the max; one whose
    # outcome stayed unknown this many times is parked as a break for an operator.
    submit_retry_initial_seconds: float = Field(default=1.0, gt=0)
    submit_retry_max_seconds: float = Field(default=60.0, gt=0)
    submit_unknown_attempts: int = Field(default=5, ge=1)
    # The circuit breaker: one error code failing orders of this many customers within the window (or a venue-wide
    # code at once) stops all sending; after the cooldown one send tries again.
    breaker_customers: int = Field(default=3, ge=2)
    breaker_window_seconds: float = Field(default=10.0, gt=0)
    breaker_cooldown_seconds: float = Field(default=5.0, gt=0)
    # Rule 10: an order a worker took and still waiting is canceled through the venue's tombstone only this long
    # after its expiry (its session's close), longer than any send can still take to arrive.
    expiry_grace_seconds: float = Field(default=60.0, gt=0)
    # The sweeper: an order PLACED this long is published again (in a shard with a backlog, where it may only be
    # queued, after republish_busy_after); one at the exchange and silent this long is asked about.
    sweep_interval_seconds: float = Field(default=5.0, gt=0)
    republish_after_seconds: float = Field(default=30.0, gt=0)
    republish_busy_after_seconds: float = Field(default=300.0, gt=0)
    status_query_after_seconds: float = Field(default=60.0, gt=0)
    quote_refresh_seconds: float = Field(default=1.0, gt=0)
    shard_refresh_seconds: float = Field(default=1.0, gt=0)
    # How often a worker reads the halts in force; a copy twice as old is not trusted (DESIGN.md: within a second).
    halt_refresh_seconds: float = Field(default=0.5, gt=0, le=0.5)

    # CallbackService: the secret the exchange presents (`authorization: Bearer <token>`), and group commit of
    # settlement: reports per transaction, and lanes (each with a transaction in flight, an order's reports always in
    # the same one) per process. More lanes give settlement more of a busy machine: benchmarks.settlement at 300/s,
    # one session, placed to settled p50/p99 365/948 ms with four against 660/1,742 ms with two.
    callback_token: SecretStr = SecretStr("")
    # During a rotation, the token being replaced, accepted beside callback_token (empty: only that one).
    callback_token_previous: SecretStr = SecretStr("")
    # The identity providers (brokerage.rpc.identity): the customers' (OrderService) and the operators'
    # (ExecutionService, the operations service): the `iss` and `aud` their tokens carry for us and their public
    # keys (an https:// URL of their JWKS, a JWKS file, or the JWKS's JSON itself). No defaults: a service that needs
    # one refuses to start without it.
    customer_issuer: str = ""
    customer_audience: str = ""
    customer_jwks: str = ""
    operator_issuer: str = ""
    operator_audience: str = ""
    operator_jwks: str = ""
    settlement_batch_max: int = Field(default=64, ge=1, le=1000)
    settlement_flushers: int = Field(default=4, ge=1)

    log_level: str = "INFO"

    @field_validator("log_level")
    @classmethod
    def _known_level(cls, value: str) -> str:
        return known_log_level(value)

    @model_validator(mode="after")
    def _grace_outlasts_a_send(self) -> Settings:
        if self.expiry_grace_seconds < self.exchange_deadline_seconds:
            raise ValueError("expiry_grace_seconds must be at least exchange_deadline_seconds: a send may still arrive")
        return self

    @model_validator(mode="after")
    def _read_database_password(self) -> Settings:
        if self.database_password_file is None:
            return self
        if urlsplit(str(self.database_url)).password is not None:
            raise ValueError("BROKER_DATABASE_URL carries a password and BROKER_DATABASE_PASSWORD_FILE names another")
        try:
            password = self.database_password_file.read_text().rstrip("\r\n")
        except OSError as error:
            raise ValueError(f"BROKER_DATABASE_PASSWORD_FILE cannot be read: {error.strerror}") from None
        if not password:
            raise ValueError("BROKER_DATABASE_PASSWORD_FILE is empty")
        self._database_password = SecretStr(password)
        return self

    @model_validator(mode="after")
    def _tls_whole(self) -> Settings:
        files = (self.tls_cert_file, self.tls_key_file, self.tls_ca_file)
        if any(files) and not all(files):
            raise ValueError("tls_cert_file, tls_key_file and tls_ca_file go together: all three, or none")
        return self

    @field_validator("shards")
    @classmethod
    def _shards_exist(cls, value: str, info: ValidationInfo) -> str:
        if value and "shard_count" in info.data:  # shard_count is validated first; if it failed, say that alone
            parse_shard_set(value, info.data["shard_count"])
        return value

    @property
    def dsn(self) -> str:
        """The connection string: database_url, with the password from database_password_file when there is one.
        A secret: pass it to the driver, never to a log."""
        url = str(self.database_url)
        if self._database_password is None:
            return url
        return with_password(url, self._database_password.get_secret_value())

    @property
    def owned_shards(self) -> tuple[int, ...]:
        """The shards this process's worker cluster owns."""
        return parse_shard_set(self.shards, self.shard_count) if self.shards else tuple(range(self.shard_count))


def with_password(url: str, password: str) -> str:
    """A postgresql:// URL with the password put beside its user (percent-encoded)."""
    parts = urlsplit(url)
    user, at, hosts = parts.netloc.rpartition("@")
    if not at:
        raise ValueError("a database URL without a user has no one to give a password to")
    return urlunsplit(parts._replace(netloc=f"{user}:{quote(password, safe='')}@{hosts}"))


AnySettings = TypeVar("AnySettings", bound=BaseSettings)


@overload
def load_settings() -> Settings: ...
@overload
def load_settings(kind: type[AnySettings]) -> AnySettings: ...
def load_settings(kind: type[BaseSettings] = Settings) -> BaseSettings:
    """The settings from the environment, or a clear message and exit status 2 before anything starts."""
    try:
        return kind()
    except ValidationError as error:
        prefix = kind.model_config.get("env_prefix", "")
        problems = [
            {"setting": prefix + "_".join(str(p) for p in e["loc"]).upper(), "problem": e["msg"]}
            for e in error.errors()
        ]
        print(json.dumps({"level": "critical", "event": "invalid settings", "problems": problems}), file=sys.stderr)
        sys.exit(2)
