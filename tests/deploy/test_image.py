"""The image: hadolint's rules, and what the manifests rely on (its user, its Python, its entry points, and a
build context that holds every package). No container engine runs here, so the image itself is not built."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from fnmatch import fnmatch
from pathlib import Path

import pytest
from packaging.specifiers import SpecifierSet

from tests.deploy.checks import ENTRY_POINTS
from tests.deploy.manifests import REPO, image_uid, venv_tool

pytestmark = pytest.mark.deploy

DOCKERFILE = REPO / "Dockerfile"


def hadolint(dockerfile: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [venv_tool("hadolint"), "--no-color", str(dockerfile)], capture_output=True, text=True, timeout=60, check=False
    )


def test_the_dockerfile_passes_hadolint() -> None:
    result = hadolint(DOCKERFILE)

    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_fails_a_careless_dockerfile(tmp_path: Path) -> None:
    careless = tmp_path / "Dockerfile"
    careless.write_text("FROM python\nRUN pip install grpcio\n")

    assert hadolint(careless).returncode != 0


def test_the_image_runs_as_an_unprivileged_numeric_user() -> None:
    assert image_uid() >= 10000


def test_the_base_image_has_the_python_the_project_requires() -> None:
    requires = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["requires-python"]
    base = re.search(r"python:(\d+\.\d+)", DOCKERFILE.read_text())

    assert base and base.group(1) + ".0" in SpecifierSet(requires)


def test_the_default_command_is_an_entry_point() -> None:
    (cmd,) = [line for line in DOCKERFILE.read_text().splitlines() if line.startswith("CMD ")]

    assert re.fullmatch(r'CMD \["python", "-m", "([\w.]+)"\]', cmd)
    assert cmd.split('"')[-2] in ENTRY_POINTS


def test_the_build_context_keeps_what_the_package_needs() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    patterns = project["tool"]["setuptools"]["packages"]["find"]["include"]
    packages = [p.parent.name for p in REPO.glob("*/__init__.py") if any(fnmatch(p.parent.name, x) for x in patterns)]
    needed = ["pyproject.toml", project["project"]["readme"], *packages]
    ignored = [line for line in (REPO / ".dockerignore").read_text().splitlines() if line and line[0] != "#"]

    assert {module.split(".")[0] for module in ENTRY_POINTS} <= set(packages)  # every command's package
    assert [path for path in needed if any(fnmatch(path, pattern) for pattern in ignored)] == []


def test_the_images_install_holds_every_file_of_the_packages(tmp_path: Path) -> None:
    """The Dockerfile installs the project non-editably (`pip install .`): build that wheel, offline, from what
    the build context holds, and find every file of the packages in it (the SQL the services read included)."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    patterns = project["tool"]["setuptools"]["packages"]["find"]["include"]
    context = tmp_path / "context"
    context.mkdir()
    for name in ("pyproject.toml", project["project"]["readme"]):
        shutil.copy(REPO / name, context / name)
    packages = [p.parent for p in REPO.glob("*/__init__.py") if any(fnmatch(p.parent.name, x) for x in patterns)]
    for package in packages:
        shutil.copytree(package, context / package.name, ignore=shutil.ignore_patterns("__pycache__"))
    build = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "--no-index",
            "-w",
            str(tmp_path / "wheel"),
            str(context),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert build.returncode == 0, build.stderr
    (wheel,) = (tmp_path / "wheel").glob("*.whl")
    installed = set(zipfile.ZipFile(wheel).namelist())
    files = {str(f.relative_to(context)) for p in packages for f in (context / p.name).rglob("*") if f.is_file()}

    assert sorted(files - installed) == []
