"""Every overlay renders, and every built-in object in it validates offline, in strict mode, against the oldest
Kubernetes the manifests support (1.27) and the newest kubernetes-validate knows."""

from __future__ import annotations

import pytest
from kubernetes_validate.utils import all_versions, latest_version
from packaging.version import Version

from tests.deploy.checks import CUSTOM_RESOURCES, schema_problems
from tests.deploy.manifests import K8S, OVERLAYS, Manifest, of_kind, render

pytestmark = pytest.mark.deploy

OLDEST_SUPPORTED = "1.27.0"
KUBERNETES_VERSIONS = (OLDEST_SUPPORTED, latest_version())


def test_kubernetes_validate_has_the_schemas_we_validate_against() -> None:
    assert OLDEST_SUPPORTED in all_versions()
    assert Version(latest_version()) >= Version(OLDEST_SUPPORTED)


@pytest.mark.parametrize("name", OVERLAYS)
def test_overlay_renders_into_one_namespace(name: str, rendered_overlays: dict[str, list[Manifest]]) -> None:
    docs = rendered_overlays[name]
    (namespace,) = of_kind(docs, "Namespace")
    namespaced = [d for d in docs if d["kind"] != "Namespace"]

    assert namespaced
    assert {d["metadata"].get("namespace") for d in namespaced} == {namespace["metadata"]["name"]}


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_every_built_in_object_validates_strictly(overlay: list[Manifest], version: str) -> None:
    assert schema_problems(overlay, version) == []


def test_only_the_known_custom_resources_lack_a_schema(rendered_overlays: dict[str, list[Manifest]]) -> None:
    kinds = {(d["apiVersion"], d["kind"]) for docs in rendered_overlays.values() for d in docs}

    # Listed by test_custom_resources.py, which checks their fields instead.
    assert kinds & CUSTOM_RESOURCES == CUSTOM_RESOURCES


def test_the_base_renders_on_its_own() -> None:
    assert {d["kind"] for d in render(K8S / "base")} >= {"Deployment", "Job", "Service", "NetworkPolicy"}
