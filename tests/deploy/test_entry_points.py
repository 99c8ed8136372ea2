"""The commands the manifests run are the image's entry points, and those commands really run: each is started
here exactly as its container starts it (`python -m <module>` with the container's settings) and gets as far as
reading its settings. What the services do once started, SIGTERM included, is tested on real processes in
tests/e2e (test_order_service_process.py, test_execution_mesh.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.deploy.checks import (
    ENTRY_POINTS,
    entry_point_of,
    entry_point_problems,
    identity_problems,
    module_main,
    settings_env,
    settings_problems,
)
from tests.deploy.manifests import Manifest, containers, module_of

pytestmark = pytest.mark.deploy


def test_every_container_runs_an_entry_point_of_the_one_image(overlay: list[Manifest]) -> None:
    assert entry_point_problems(overlay) == []


def test_every_setting_is_known_to_its_process_and_valid(overlay: list[Manifest]) -> None:
    assert settings_problems(overlay) == []


def test_every_server_that_admits_tokens_knows_whose(overlay: list[Manifest]) -> None:
    assert identity_problems(overlay) == []


@pytest.mark.parametrize("module", sorted(ENTRY_POINTS))
def test_each_entry_point_module_has_a_main(module: str) -> None:
    assert callable(module_main(module))


def test_every_entry_point_is_used_by_an_overlay(rendered_overlays: dict[str, list[Manifest]]) -> None:
    used = {module_of(c) for docs in rendered_overlays.values() for _, c in containers(docs)}

    assert used == set(ENTRY_POINTS)


def test_the_manifests_commands_start_and_read_the_containers_settings(
    rendered_overlays: dict[str, list[Manifest]],
) -> None:
    """Each distinct command, with its container's environment plus one setting made invalid on purpose, exits
    with status 2 naming that setting alone: the command is the module's, and every other setting the manifest
    gives it is accepted by the process itself."""
    runs = {}
    for docs in rendered_overlays.values():
        for workload, container in containers(docs):
            entry = entry_point_of(container)
            assert entry is not None, f"{workload} {container['name']}"
            if entry.module in runs:
                continue
            prefix = entry.settings.model_config["env_prefix"]
            env = {**settings_env(docs, container), f"{prefix}GRPC_PORT": "-1"}
            clean = {k: v for k, v in os.environ.items() if not k.startswith(("BROKER_", "EXCHANGE_"))}
            command = [sys.executable, *container["command"][1:], *container.get("args", [])]
            runs[entry.module] = (
                f"{prefix}GRPC_PORT",
                subprocess.Popen(command, env={**clean, **env}, stdout=subprocess.PIPE, stderr=subprocess.PIPE),
            )
    assert set(runs) == set(ENTRY_POINTS)  # callback_service with its token, brokerage.reconcile included
    for module, (broken, process) in runs.items():
        _out, err = process.communicate(timeout=60)
        report = json.loads(err.decode().strip().splitlines()[-1])
        assert process.returncode == 2, (module, err)
        assert report["event"] == "invalid settings"
        assert [p["setting"] for p in report["problems"]] == [broken], (module, report)
