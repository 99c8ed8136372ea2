"""docs/operations.md stays true to what it points at: the tests it cites exist, and the versions it installs are
the ones the manifests were written for."""

from __future__ import annotations

import re

import pytest

from tests.deploy.manifests import K8S, REPO, Manifest, of_kind

pytestmark = pytest.mark.deploy

OPERATIONS = (REPO / "docs" / "operations.md").read_text()


def test_the_tests_the_operations_page_cites_exist() -> None:
    cited = re.findall(r"(tests/[\w/]+\.py)::(test_\w+)", OPERATIONS)

    assert cited
    assert [(f, t) for f, t in cited if f"def {t}(" not in (REPO / f).read_text()] == []


def test_the_nats_chart_version_is_the_one_the_values_were_written_for() -> None:
    (version,) = set(re.findall(r"--version (\S+)", (K8S / "nats" / "values.yaml").read_text()))

    assert set(re.findall(r"nats/nats --version (\S+)", OPERATIONS)) == {version}


def test_the_cloudnativepg_version_is_the_one_the_cluster_was_written_for() -> None:
    (minor,) = re.findall(
        r"operator (\d+\.\d+)", (K8S / "components" / "postgres-cnpg" / "kustomization.yaml").read_text()
    )
    installed = re.findall(r"releases/cnpg-(\d+\.\d+)\.\d+\.yaml", OPERATIONS)

    assert installed and set(installed) == {minor}


def test_a_release_holds_back_every_service_until_the_migrations_have_run(prod: list[Manifest]) -> None:
    """The release's first apply leaves out the components that serve (they need the schema), and its rollout
    waits for every Deployment: a new service must be named in both."""
    (held_back,) = re.findall(r"app\.kubernetes\.io/component notin \(([\w,]+)\)", OPERATIONS)
    (rolled,) = re.findall(r"for d in ([\w -]+); do", OPERATIONS)
    deployments = of_kind(prod, "Deployment")
    serving = {w["metadata"]["labels"]["app.kubernetes.io/component"] for w in of_kind(prod, "Deployment", "CronJob")}

    assert serving <= set(held_back.split(","))
    assert {d["metadata"]["name"] for d in deployments} == set(rolled.split())
