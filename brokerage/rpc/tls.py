"""Mutual TLS on every link (DESIGN.md "Trust boundary"): credentials from the files cert-manager mounts (a
certificate, its key, and the bundle of CAs whose peers are trusted), followed as they are renewed, and each
server's admission of peers by the identity their certificate names (its URI SAN, `spiffe://brokerage/<who>`).

A server re-reads its files at the next handshake after they change, so a renewal takes effect without a restart
and without failing a call; a client channel is made anew with the renewed files (RenewingChannel) while calls
in flight finish on the old one. Files caught half-written are ignored until they read whole.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from cryptography import x509
from grpc import aio
from prometheus_client import Counter

from brokerage.domain.errors import PermissionDenied
from brokerage.settings import Settings
from brokerage.telemetry import get_logger

log = get_logger(__name__)

PEERS_REFUSED = Counter(
    "grpc_server_peers_refused_total",
    "Calls refused because the peer's certificate names no admitted identity.",
    ["grpc_service"],
)
OPEN_SERVICES = frozenset({"grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection"})


@dataclass(frozen=True)
class TlsFiles:
    """A process's own certificate and key, and the CA bundle its peers' certificates must chain to."""

    cert: Path
    key: Path
    ca: Path

    def read(self) -> tuple[bytes, bytes, bytes]:
        return self.cert.read_bytes(), self.key.read_bytes(), self.ca.read_bytes()

    def stamp(self) -> tuple[tuple[int, int], ...]:
        """Changes whenever a file is replaced or rewritten (cert-manager swaps a symlink: stat follows it)."""
        return tuple((s.st_mtime_ns, s.st_ino) for s in (p.stat() for p in (self.cert, self.key, self.ca)))


def files_from(cert: str, key: str, ca: str, what: str) -> TlsFiles | None:
    """TlsFiles when all three are set, None when none is (plaintext); ValueError naming what is missing else."""
    if not (cert or key or ca):
        return None
    if not (cert and key and ca):
        raise ValueError(f"{what}: a certificate, its key and a CA bundle are all required for TLS")
    return TlsFiles(Path(cert), Path(key), Path(ca))


def server_credentials(files: TlsFiles) -> grpc.ServerCredentials:
    """Client certificates required, chaining to files.ca; the files re-read at the first handshake after a change."""
    seen = files.stamp()

    def config() -> grpc.ServerCertificateConfiguration:
        cert, key, ca = files.read()
        return grpc.ssl_server_certificate_configuration([(key, cert)], root_certificates=ca)

    def renewed() -> grpc.ServerCertificateConfiguration | None:
        nonlocal seen
        try:
            stamp = files.stamp()
            if stamp == seen:
                return None
            renewed_config = config()
        except (OSError, ValueError) as error:  # mid-swap: keep serving with what we have
            log.warning("TLS files unreadable; keeping the current certificate", error=repr(error))
            return None
        seen = stamp
        log.info("TLS certificate reloaded", cert=str(files.cert))
        return renewed_config

    return grpc.dynamic_ssl_server_credentials(config(), renewed, require_client_authentication=True)


def channel_credentials(files: TlsFiles) -> grpc.ChannelCredentials:
    """Our certificate for the server to check, and files.ca to check the server's."""
    cert, key, ca = files.read()
    return grpc.ssl_channel_credentials(root_certificates=ca, private_key=key, certificate_chain=cert)


def open_channel(
    target: str,
    tls: TlsFiles | None,
    options: list[tuple[str, object]] | None = None,
    interceptors: list[aio.ClientInterceptor] | None = None,
) -> aio.Channel:
    """The one way our processes open a gRPC channel: mutual TLS when they have files, plaintext (loopback, dev)
    when not."""
    if tls is None:
        return aio.insecure_channel(target, options=options, interceptors=interceptors)
    return aio.secure_channel(target, channel_credentials(tls), options=options, interceptors=interceptors)


class RenewingChannel:
    """A client channel that follows its TLS files: when they change, the next call goes on a new channel made with
    them, and the old one is closed after `grace` (its calls in flight finish). Without TLS, one channel for ever."""

    def __init__(
        self, make: Callable[[], aio.Channel], tls: TlsFiles | None, grace: float = 30.0, check_every: float = 5.0
    ) -> None:
        self._make = make
        self._tls = tls
        self._grace = grace
        self._check_every = check_every
        self._channel = make()
        self._stamp = tls.stamp() if tls else None
        self._checked = asyncio.get_running_loop().time()
        self._retiring: set[asyncio.Task[None]] = set()

    def current(self) -> aio.Channel:
        if self._tls is not None:
            now = asyncio.get_running_loop().time()
            if now - self._checked >= self._check_every:
                self._checked = now
                self._renew_if_changed(self._tls)
        return self._channel

    def _renew_if_changed(self, tls: TlsFiles) -> None:
        try:
            stamp = tls.stamp()
            if stamp == self._stamp:
                return
            renewed = self._make()
        except (OSError, ValueError) as error:
            log.warning("TLS files unreadable; keeping the current channel", error=repr(error))
            return
        old, self._channel, self._stamp = self._channel, renewed, stamp
        log.info("TLS certificate reloaded for a client channel", cert=str(tls.cert))
        task = asyncio.create_task(self._retire(old))
        self._retiring.add(task)
        task.add_done_callback(self._retiring.discard)

    async def _retire(self, channel: aio.Channel) -> None:
        await asyncio.sleep(self._grace)
        await channel.close()

    async def close(self) -> None:
        for task in self._retiring:
            task.cancel()
        await self._channel.close()


def peer_identities(context: aio.ServicerContext) -> frozenset[str]:
    """The URI SANs of the certificate the peer presented (none over plaintext)."""
    presented = context.auth_context().get("x509_pem_cert")
    if not presented:
        return frozenset()
    certificate = x509.load_pem_x509_certificate(presented[0])
    try:
        names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return frozenset()
    return frozenset(names.get_values_for_type(x509.UniformResourceIdentifier))


@dataclass(frozen=True)
class PeerPolicy:
    """Which identities may call which methods: by full method name (/package.Service/Method), else `default`.
    Health and reflection are open to any peer the TLS handshake let in (probes and grpcurl)."""

    default: frozenset[str]
    methods: Mapping[str, frozenset[str]] = field(default_factory=dict)

    def admit(self, method: str, context: aio.ServicerContext) -> None:
        service = method.lstrip("/").partition("/")[0]
        if service in OPEN_SERVICES:
            return
        admitted = self.methods.get(method, self.default)
        if peer_identities(context) & admitted:
            return
        PEERS_REFUSED.labels(service).inc()
        raise PermissionDenied("peer", "this peer's certificate is not admitted to this method")


def peers_from(setting: str) -> frozenset[str]:
    """A comma-separated list of URI SANs, as settings give them."""
    return frozenset(p.strip() for p in setting.split(",") if p.strip())


@dataclass(frozen=True)
class ServerTls:
    """How a server serves TLS: its files, whom it admits, and a plaintext port for kubelet's health probes alone
    (they present no certificate)."""

    files: TlsFiles
    peers: PeerPolicy
    probe_port: int = 0  # 0: no probe port (none is needed over plaintext)


def server_tls(settings: Settings, policy: PeerPolicy | None = None) -> ServerTls | None:
    """A service's server TLS from its settings (None: plaintext); its peers are BROKER_TLS_PEERS unless a policy
    of its own says more."""
    files = files_from(settings.tls_cert_file, settings.tls_key_file, settings.tls_ca_file, "BROKER_TLS_*")
    if files is None:
        return None
    if policy is None:
        if not (peers := peers_from(settings.tls_peers)):
            raise ValueError("BROKER_TLS_PEERS is required with TLS: the certificate identities this server admits")
        policy = PeerPolicy(peers)
    return ServerTls(files, policy, settings.probe_port)


def client_tls(settings: Settings, server_ca: str = "") -> TlsFiles | None:
    """What a service presents when it calls another (its own certificate), checking the server's against server_ca
    (default: its own CA bundle)."""
    files = files_from(settings.tls_cert_file, settings.tls_key_file, settings.tls_ca_file, "BROKER_TLS_*")
    if files is None or not server_ca:
        return files
    return TlsFiles(files.cert, files.key, Path(server_ca))
