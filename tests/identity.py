"""The test session's identity providers: development keys for both issuers in a temporary directory, made once
when first imported, so every test, fixture and helper signs its calls as the services started by the tests
expect (`settings_env()` names these issuers to them)."""

from __future__ import annotations

import atexit
import shutil
import tempfile
from pathlib import Path

import grpc

from devtools.token import DevIdentity, customer_tokens, operator_tokens

_directory = Path(tempfile.mkdtemp(prefix="test-identity-"))
atexit.register(shutil.rmtree, _directory, ignore_errors=True)

TEST_IDENTITY = DevIdentity(_directory).ensure()


def identity_settings() -> dict[str, str]:
    """The Settings fields naming the test issuers (customer_issuer, ..., operator_jwks)."""
    return {name.removeprefix("BROKER_").lower(): value for name, value in TEST_IDENTITY.settings_env().items()}


def as_operator(name: str = "ada") -> tuple[tuple[str, str]]:
    """Call metadata with an operator's token (ops:read and ops:write)."""
    return (("authorization", f"Bearer {TEST_IDENTITY.operator_token(name)}"),)


def customer_channel(target: str) -> grpc.aio.Channel:
    """A channel to OrderService that signs each call as the customer its request names."""
    return grpc.aio.insecure_channel(target, interceptors=customer_tokens(TEST_IDENTITY).interceptors())


def operator_channel(target: str, name: str = "ada") -> grpc.aio.Channel:
    """A channel to an operators' service (ExecutionService, the operations service) signed as the operator."""
    return grpc.aio.insecure_channel(target, interceptors=operator_tokens(TEST_IDENTITY, name).interceptors())
