"""Development identity: the two issuers' signing keys and JWKS, and tokens signed with them, for `make run`, the
demo, the benchmarks and the tests (in production nothing but the identity providers holds a signing key).

    python -m devtools.token --customer 7            a customer's token (15 minutes)
    python -m devtools.token --customers 1-1000      one per line, customer 1 first (for load generators)
    python -m devtools.token --operator [NAME]       an operator's token (8 hours)
    python -m devtools.token --init                  the keys and JWKS, if missing (make run does it)
    python -m devtools.token --write-env FILE        the services' settings for these issuers, the JWKS inline
                                                     (a dotenv file, as the dev overlay's ConfigMap reads it)

Options: --ttl SECONDS, --dir DIR (default .local/identity, make run's). The services find the issuers through the
BROKER_CUSTOMER_* and BROKER_OPERATOR_* settings that `DevIdentity.settings_env` gives.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import json
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from grpc import aio
from jwt.algorithms import RSAAlgorithm

from brokerage.rpc.identity import AUTHORIZATION, Kind

LOCAL_DIR = Path(__file__).resolve().parents[1] / ".local" / "identity"
ALGORITHM = "RS256"  # the common identity providers' default; its verification is the cheaper of the two
CUSTOMER_TTL = 900  # the longest a customer token may live
OPERATOR_TTL = 8 * 3600
ENV_HEADER = """\
# The development issuers' settings, their public keys inline (written by python -m devtools.token --dir {dir}
# --write-env ...). Their signing keys stay in {dir} on the machine that wrote this, never in git: to mint tokens
# for this cluster, write new ones the same way and apply the overlay again.
"""
ISSUERS = {
    Kind.CUSTOMER: ("https://identity.local/customers", "urn:brokerage:orders", ("orders:read", "orders:write")),
    Kind.OPERATOR: ("https://identity.local/operators", "urn:brokerage:ops", ("ops:read", "ops:write")),
}


@dataclass(frozen=True)
class DevIssuer:
    kind: Kind
    issuer: str
    audience: str
    scopes: tuple[str, ...]
    key_path: Path
    jwks_path: Path

    def ensure(self) -> None:
        """A signing key and its JWKS, made once."""
        if self.key_path.exists() and self.jwks_path.exists():
            return
        self.key_path.parent.mkdir(parents=True, exist_ok=True)
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        self.key_path.write_bytes(pem)
        self.key_path.chmod(0o600)
        self.jwks_path.write_text(json.dumps({"keys": [_public_jwk(key)]}, indent=2) + "\n")

    def mint(self, subject: str, ttl: int, scopes: Iterable[str] | None = None) -> str:
        key, kid = _signing_key(self.key_path)
        now = int(time.time())
        claims = {
            "iss": self.issuer,
            "aud": self.audience,
            "sub": subject,
            "iat": now,
            "exp": now + ttl,
            "scope": " ".join(self.scopes if scopes is None else scopes),
        }
        return jwt.encode(claims, key, algorithm=ALGORITHM, headers={"kid": kid})


class DevIdentity:
    """Both issuers' keys under one directory."""

    def __init__(self, directory: Path = LOCAL_DIR) -> None:
        self.directory = directory
        self.customers = self._issuer(Kind.CUSTOMER, "customers")
        self.operators = self._issuer(Kind.OPERATOR, "operators")

    def ensure(self) -> DevIdentity:
        self.customers.ensure()
        self.operators.ensure()
        return self

    def settings_env(self, *, inline: bool = False) -> dict[str, str]:
        """The services' settings for these issuers: the JWKS files' paths, or (inline) their JSON."""

        def jwks(path: Path) -> str:
            return json.dumps(json.loads(path.read_text()), separators=(",", ":")) if inline else str(path)

        return {
            "BROKER_CUSTOMER_ISSUER": self.customers.issuer,
            "BROKER_CUSTOMER_AUDIENCE": self.customers.audience,
            "BROKER_CUSTOMER_JWKS": jwks(self.customers.jwks_path),
            "BROKER_OPERATOR_ISSUER": self.operators.issuer,
            "BROKER_OPERATOR_AUDIENCE": self.operators.audience,
            "BROKER_OPERATOR_JWKS": jwks(self.operators.jwks_path),
        }

    def customer_token(self, customer_id: str, ttl: int = CUSTOMER_TTL, scopes: Iterable[str] | None = None) -> str:
        return self.customers.mint(customer_id, ttl, scopes)

    def operator_token(
        self, name: str = "dev-operator", ttl: int = OPERATOR_TTL, scopes: Iterable[str] | None = None
    ) -> str:
        return self.operators.mint(name, ttl, scopes)

    def _issuer(self, kind: Kind, name: str) -> DevIssuer:
        issuer, audience, scopes = ISSUERS[kind]
        return DevIssuer(
            kind, issuer, audience, scopes, self.directory / f"{name}.key.pem", self.directory / f"{name}.jwks.json"
        )


@functools.lru_cache(maxsize=8)
def _signing_key(path: Path) -> tuple[rsa.RSAPrivateKey, str]:
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    assert isinstance(key, rsa.RSAPrivateKey)
    return key, _kid(key)


def _public_jwk(key: rsa.RSAPrivateKey) -> dict[str, Any]:
    jwk: dict[str, Any] = json.loads(RSAAlgorithm.to_jwk(key.public_key()))
    return {**jwk, "kid": _kid(key), "alg": ALGORITHM, "use": "sig"}


def _kid(key: rsa.RSAPrivateKey) -> str:
    """The key's RFC 7638 thumbprint: the same key always has the same id."""
    jwk = json.loads(RSAAlgorithm.to_jwk(key.public_key()))
    canonical = json.dumps({k: jwk[k] for k in ("e", "kty", "n")}, separators=(",", ":")).encode()
    return jwt.utils.base64url_encode(hashlib.sha256(canonical).digest()).decode()


class SignedCalls:
    """Signs each call of a grpc.aio channel with the token `token_for` picks for its request (None: the call goes as
    it is, and so does one that brings its own authorization), through `interceptors()`."""

    def __init__(self, token_for: Callable[[Any], str | None]) -> None:
        self._token_for = token_for

    def interceptors(self) -> list[aio.ClientInterceptor]:
        """One per kind of call: a channel takes each interceptor for one kind only."""
        return [_SignUnary(self), _SignUnaryStream(self)]

    def signed(self, details: aio.ClientCallDetails, request: Any) -> aio.ClientCallDetails:
        metadata = list(details.metadata or ())
        token = self._token_for(request)
        if token is None or any(name == AUTHORIZATION for name, _ in metadata):
            return details
        metadata.append((AUTHORIZATION, f"Bearer {token}"))
        return aio.ClientCallDetails(
            details.method, details.timeout, metadata, details.credentials, details.wait_for_ready
        )


def customer_tokens(identity: DevIdentity) -> SignedCalls:
    """Each call signed as the customer its request names (a token per customer, minted once): how the demo, the
    benchmarks and the tests act as many customers over one channel."""
    tokens: dict[str, str] = {}

    def token_for(request: Any) -> str | None:
        customer_id = getattr(request, "customer_id", "")
        if not customer_id:
            return None
        if customer_id not in tokens:
            tokens[customer_id] = identity.customer_token(customer_id)
        return tokens[customer_id]

    return SignedCalls(token_for)


def operator_tokens(identity: DevIdentity, name: str = "dev-operator") -> SignedCalls:
    """Each call signed as the operator."""
    token = identity.operator_token(name)
    return SignedCalls(lambda request: token)


class _SignUnary(aio.UnaryUnaryClientInterceptor):
    def __init__(self, tokens: SignedCalls) -> None:
        self._tokens = tokens

    async def intercept_unary_unary(self, continuation: Callable[..., Any], details: Any, request: Any) -> Any:
        return await continuation(self._tokens.signed(details, request), request)


class _SignUnaryStream(aio.UnaryStreamClientInterceptor):
    def __init__(self, tokens: SignedCalls) -> None:
        self._tokens = tokens

    async def intercept_unary_stream(self, continuation: Callable[..., Any], details: Any, request: Any) -> Any:
        return await continuation(self._tokens.signed(details, request), request)


def bearer(token: str) -> tuple[tuple[str, str]]:
    """Call metadata carrying the token."""
    return ((AUTHORIZATION, f"Bearer {token}"),)


def _customer_range(text: str) -> range:
    low, _, high = text.partition("-")
    return range(int(low), int(high or low) + 1)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devtools.token", description=__doc__.split("\n\n")[0])
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--customer", help="a customer's id")
    what.add_argument("--customers", type=_customer_range, help="a range of customers, e.g. 1-1000")
    what.add_argument("--operator", nargs="?", const="dev-operator", help="an operator's name (default dev-operator)")
    what.add_argument("--init", action="store_true", help="make the keys and JWKS if missing")
    what.add_argument("--write-env", type=Path, metavar="FILE", help="write the issuers' settings, JWKS inline")
    parser.add_argument("--ttl", type=int, help="seconds (at most 900 for customers, 28800 for operators)")
    parser.add_argument("--dir", type=Path, default=LOCAL_DIR, help="where the keys are (default .local/identity)")
    args = parser.parse_args(argv)
    identity = DevIdentity(args.dir).ensure()
    if args.init:
        print(args.dir)
    elif args.write_env:
        lines = [f"{name}={value}\n" for name, value in identity.settings_env(inline=True).items()]
        args.write_env.write_text(ENV_HEADER.format(dir=args.dir) + "".join(lines))
    elif args.operator:
        print(identity.operator_token(args.operator, args.ttl or OPERATOR_TTL))
    elif args.customer:
        print(identity.customer_token(args.customer, args.ttl or CUSTOMER_TTL))
    else:
        sys.stdout.writelines(f"{identity.customer_token(str(c), args.ttl or CUSTOMER_TTL)}\n" for c in args.customers)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
