"""Who a call is for (DESIGN.md "Trust boundary"): the caller's JWT, verified against its issuer's keys.

Two issuers, each with its own keys (a JWKS, by `kid`), audience and scopes: the customers' identity provider, whose
tokens name a customer (`sub`) and carry `orders:read` / `orders:write`, and the operators', whose tokens name an
operator and carry `ops:read` / `ops:write`. A scope counts only from its own issuer, so no operator token places an
order and no customer token pulls a lever. Algorithms are pinned (ES256, RS256: never `none` nor HS*), `iss`, `aud`,
`exp`, `iat` and `sub` are required, with 60 s of leeway and a lifetime of at most the issuer's maximum.

`IdentityBoundary` (a server interceptor, inside the call boundary) verifies the token of every call a `Policy`
names and refuses the rest (UNAUTHENTICATED, PERMISSION_DENIED) before the servicer runs; the servicer asks
`customer_for` or `operator` who the caller is. A stream ends UNAUTHENTICATED when its token expires. Verified tokens
are kept until they expire, so a client reusing its token pays for one verification.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import time
import urllib.request
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import Any

import grpc
import jwt
from grpc import aio

from brokerage.domain.errors import PermissionDenied, Unauthenticated
from brokerage.domain.identifiers import is_id
from brokerage.settings import Settings
from brokerage.telemetry import get_logger

log = get_logger(__name__)

ALGORITHMS = ("ES256", "RS256")
MAX_TOKEN_BYTES = 4096
LEEWAY = timedelta(seconds=60)
KEYS_REREAD_AT_MOST_EVERY = 30.0  # seconds: an unknown kid re-reads the JWKS no more often
JWKS_DEADLINE_SECONDS = 5.0
CACHED_TOKENS = 100_000
AUTHORIZATION = "authorization"


class Kind(StrEnum):
    CUSTOMER = "customer"
    OPERATOR = "operator"


SCOPES = {
    Kind.CUSTOMER: frozenset({"orders:read", "orders:write"}),
    Kind.OPERATOR: frozenset({"ops:read", "ops:write"}),
}


@dataclass(frozen=True)
class Issuer:
    kind: Kind
    issuer: str  # the `iss` its tokens carry
    audience: str  # the `aud` they must carry for us
    jwks: str  # its public keys: an https:// URL, a file (as a ConfigMap mounts it), or the JWKS's JSON itself
    max_lifetime: timedelta


@dataclass(frozen=True)
class Principal:
    kind: Kind
    issuer: str
    subject: str  # the customer's id, or the operator's name
    scopes: frozenset[str]
    expires_at: datetime

    @property
    def audit_name(self) -> str:
        """Who, for an audit row: the subject and the issuer that vouched for it."""
        return f"{self.subject} ({self.issuer})"


class Keys:
    """One issuer's public keys by kid, read from its JWKS, and read again for an unknown kid at most every 30 s
    (a key rotation adds the new kid before tokens signed with it appear)."""

    def __init__(self, source: str, clock: Callable[[], float] = time.monotonic) -> None:
        self._source = source
        self._clock = clock
        self._keys: dict[str, jwt.PyJWK] = {}
        self._read_at: float | None = None

    async def get(self, kid: str) -> jwt.PyJWK | None:
        if kid not in self._keys and self._may_reread():
            await self.refresh()
        return self._keys.get(kid)

    async def refresh(self) -> None:
        self._read_at = self._clock()
        try:
            document = await asyncio.to_thread(self._read)
            keys = jwt.PyJWKSet.from_dict(document).keys
        except (OSError, ValueError, jwt.PyJWKSetError) as error:
            log.error("cannot read the issuer's keys", jwks=self._source, error=str(error))
            return
        self._keys = {key.key_id: key for key in keys if key.key_id and key.algorithm_name in ALGORITHMS}

    def _may_reread(self) -> bool:
        return self._read_at is None or self._clock() - self._read_at >= KEYS_REREAD_AT_MOST_EVERY

    def _read(self) -> Any:
        if self._source.lstrip().startswith("{"):  # the JWKS itself, as a ConfigMap's value holds it
            return json.loads(self._source)
        if self._source.startswith("https://"):
            with urllib.request.urlopen(self._source, timeout=JWKS_DEADLINE_SECONDS) as response:
                return json.load(response)
        return json.loads(Path(self._source).read_text())


class Verifier:
    """Tokens of the issuers it knows, verified into principals, each kept until it expires."""

    def __init__(self, issuers: list[Issuer], now: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self._issuers = {i.issuer: i for i in issuers}
        self._keys = {i.issuer: Keys(i.jwks) for i in issuers}
        self._now = now
        self._verified: OrderedDict[str, Principal] = OrderedDict()

    async def load(self) -> None:
        """Reads every issuer's keys once, at start."""
        for keys in self._keys.values():
            await keys.refresh()

    async def verify(self, token: str) -> Principal:
        """The token's principal, or Unauthenticated saying what is wrong with it."""
        cached = self._verified.get(token)
        if cached is not None and cached.expires_at + LEEWAY > self._now():
            return cached
        principal = await self._verify(token)
        self._verified[token] = principal
        while len(self._verified) > CACHED_TOKENS:
            self._verified.popitem(last=False)
        return principal

    async def _verify(self, token: str) -> Principal:
        """The header is read unverified only to find the key (by kid, among the issuers' keys); the key decides
        the issuer, whose `iss` and `aud` the token must then carry, and PyJWT verifies all of it."""
        if len(token) > MAX_TOKEN_BYTES:
            raise Unauthenticated(f"a token of at most {MAX_TOKEN_BYTES} bytes is required")
        header = _unverified_header(token)
        algorithm, kid = header.get("alg"), header.get("kid")
        if algorithm not in ALGORITHMS:
            raise Unauthenticated(f"a token signed with {' or '.join(ALGORITHMS)} is required")
        found = await self._key(kid) if isinstance(kid, str) else None
        if found is None or found[1].algorithm_name != algorithm:
            raise Unauthenticated("the token's key is not one of a known issuer's")
        issuer, key = found
        try:
            claims = jwt.decode(
                token,
                key.key,
                algorithms=[algorithm],
                audience=issuer.audience,
                issuer=issuer.issuer,
                leeway=LEEWAY,
                options={"require": ["exp", "iat", "iss", "aud", "sub"]},
            )
        except jwt.InvalidIssuerError as error:  # signed by one issuer's key, claiming another (or none we know)
            raise Unauthenticated("a token of a known issuer, signed with its own key, is required") from error
        except jwt.PyJWTError as error:
            raise Unauthenticated(f"the token is not valid: {error}") from error
        return _principal(issuer, claims)

    async def _key(self, kid: str) -> tuple[Issuer, jwt.PyJWK] | None:
        """The issuer whose JWKS holds the kid, and the key (an unknown kid re-reads each JWKS, at most every 30 s)."""
        for name, keys in self._keys.items():
            if (key := await keys.get(kid)) is not None:
                return self._issuers[name], key
        return None


def _unverified_header(token: str) -> dict[str, Any]:
    """The JOSE header, read only to choose the key that PyJWT then verifies the whole token with. Read here, not by
    jwt.get_unverified_header, which decodes every segment with a character check in Python: that was a third of a
    new token's cost, spent on the payload and signature PyJWT reads again anyway."""
    encoded = token.partition(".")[0]
    try:
        header = json.loads(base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4)))
    except (ValueError, binascii.Error) as error:
        raise Unauthenticated(f"not a JWT: {error}") from error
    if not isinstance(header, dict):
        raise Unauthenticated("not a JWT: its header is no JSON object")
    return header


def _principal(issuer: Issuer, claims: Mapping[str, Any]) -> Principal:
    issued, expires = claims["iat"], claims["exp"]
    if not isinstance(issued, int | float) or expires - issued > issuer.max_lifetime.total_seconds():
        raise Unauthenticated(f"a token may live at most {int(issuer.max_lifetime.total_seconds())} s")
    subject = claims["sub"]
    if not isinstance(subject, str) or not is_id(subject):
        raise Unauthenticated("the token's subject is no id")
    scope = claims.get("scope", "")
    scopes = frozenset(scope.split()) if isinstance(scope, str) else frozenset()
    return Principal(
        kind=issuer.kind,
        issuer=issuer.issuer,
        subject=subject,
        scopes=scopes & SCOPES[issuer.kind],  # a scope counts only from its own issuer
        expires_at=datetime.fromtimestamp(expires, UTC),
    )


@dataclass(frozen=True)
class Rule:
    """Who may call a method: a principal of this kind holding this scope."""

    kind: Kind
    scope: str


@dataclass(frozen=True)
class Policy:
    """The rules of a server's protected methods by full name (/package.Service/Method); a method of a protected
    service without a rule is refused, and unprotected services (health, reflection) pass."""

    rules: Mapping[str, Rule]
    services: frozenset[str] = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "services", frozenset(m.lstrip("/").partition("/")[0] for m in self.rules))

    def protects(self, method: str) -> bool:
        return method.lstrip("/").partition("/")[0] in self.services


MAX_LIFETIME = {Kind.CUSTOMER: timedelta(minutes=15), Kind.OPERATOR: timedelta(hours=8)}


def verifier_for(settings: Settings, *kinds: Kind) -> Verifier:
    """A verifier of the issuers these kinds of callers come from, as the settings name them; ValueError naming
    what is missing (there are no defaults: a service must be told whom to trust)."""
    issuers = []
    for kind in kinds:
        prefix = f"{kind.value}_"
        values = {name: getattr(settings, prefix + name) for name in ("issuer", "audience", "jwks")}
        missing = [f"BROKER_{(prefix + name).upper()}" for name, value in values.items() if not value]
        if missing:
            raise ValueError(f"{', '.join(missing)} required: whose {kind.value} tokens to trust")
        issuers.append(Issuer(kind, values["issuer"], values["audience"], values["jwks"], MAX_LIFETIME[kind]))
    return Verifier(issuers)


_caller: ContextVar[Principal | None] = ContextVar("caller", default=None)


def caller() -> Principal:
    """The verified principal of the call being served (IdentityBoundary set it)."""
    principal = _caller.get()
    if principal is None:
        raise RuntimeError("no verified caller: the method is not under an IdentityBoundary rule")
    return principal


def customer_for(customer_id: str) -> str:
    """The customer the call is for: the token's subject. A body naming another customer is refused before anything
    is read (an empty one means the caller's own)."""
    principal = caller()
    if customer_id and customer_id != principal.subject:
        raise PermissionDenied("customer_id", "is not the customer the token was issued for")
    return principal.subject


def operator() -> str:
    """The operator making the call, for its audit row."""
    return caller().audit_name


class IdentityBoundary(aio.ServerInterceptor):
    def __init__(self, verifier: Verifier, policy: Policy) -> None:
        self._verifier = verifier
        self._policy = policy
        self._wrapped: dict[tuple[str, grpc.RpcMethodHandler], grpc.RpcMethodHandler] = {}

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(details)
        method: str = details.method  # type: ignore[attr-defined]
        if handler is None or not self._policy.protects(method):
            return handler
        key = (method, handler)
        if (wrapped := self._wrapped.get(key)) is None:
            wrapped = self._wrapped[key] = self._wrap(handler, self._policy.rules.get(method))
        return wrapped

    def _wrap(self, handler: grpc.RpcMethodHandler, rule: Rule | None) -> grpc.RpcMethodHandler:
        if handler.unary_unary:
            return grpc.unary_unary_rpc_method_handler(
                self._unary(handler.unary_unary, rule),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        behavior = handler.unary_stream or handler.stream_stream
        streaming = self._stream(behavior, rule)
        factory = (
            grpc.unary_stream_rpc_method_handler if handler.unary_stream else grpc.stream_stream_rpc_method_handler
        )
        return factory(
            streaming,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )

    def _unary(self, behavior: Callable[..., Awaitable[Any]], rule: Rule | None) -> Callable[..., Awaitable[Any]]:
        async def call(request: Any, context: aio.ServicerContext) -> Any:
            _caller.set(await self._admit(context, rule))
            return await behavior(request, context)

        return call

    def _stream(self, behavior: Callable[..., AsyncIterator[Any]], rule: Rule | None) -> Callable[..., Any]:
        async def call(request: Any, context: aio.ServicerContext) -> AsyncIterator[Any]:
            principal = await self._admit(context, rule)
            _caller.set(principal)
            responses = behavior(request, context)
            try:
                while True:
                    remaining = (principal.expires_at - datetime.now(UTC)).total_seconds()
                    try:
                        response = await asyncio.wait_for(anext(responses), timeout=max(remaining, 0))
                    except StopAsyncIteration:
                        return
                    except TimeoutError:
                        raise Unauthenticated("the token expired: resume with a new one") from None
                    yield response
            finally:
                await responses.aclose()  # type: ignore[attr-defined]

        return call

    async def _admit(self, context: aio.ServicerContext, rule: Rule | None) -> Principal:
        principal = await self._verifier.verify(_bearer(context))
        if rule is None or principal.kind is not rule.kind:
            raise PermissionDenied("authorization", f"a {principal.kind.value} may not call this method")
        if rule.scope not in principal.scopes:
            raise PermissionDenied("authorization", f"the token lacks the scope {rule.scope}")
        return principal


def _bearer(context: aio.ServicerContext) -> str:
    presented: str | bytes = ""
    for name, value in context.invocation_metadata() or ():
        if name == AUTHORIZATION:
            presented = value
    text = presented.decode(errors="replace") if isinstance(presented, bytes) else presented
    scheme, _, token = text.partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise Unauthenticated("authorization: Bearer <token> is required")
    return token.strip()
