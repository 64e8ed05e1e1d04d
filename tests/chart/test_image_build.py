"""The images' build steps, without Docker: the lock files pin everything the
packages declare, and the Dockerfile's wheel stage (hash-checked binary wheels
from the lock, the four packages built without dependencies or build
isolation) gives an offline install with working `catalog` and
`cache_operator` commands, as the runtime stages do. `make image-test` builds
and runs the images themselves where Docker runs."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
import venv
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from tests.chart.render import ROOT

DOCKERFILE = ROOT / "Dockerfile"
RUNTIME_LOCK = ROOT / "requirements-image.txt"
BUILD_LOCK = ROOT / "requirements-image-build.txt"
PACKAGES = ("services/hybridcache", "services/catalog", "services/checker", "operator")


def _name(text: str) -> str:
    return re.sub(r"[-_.]+", "-", text).lower()


def _locked(path: Path) -> dict[str, tuple[str, int]]:
    """name -> (version, number of hashes) for each entry of a pip-compile lock."""
    entries: dict[str, tuple[str, int]] = {}
    for block in re.split(r"\n(?=[A-Za-z])", path.read_text()):
        match = re.match(r"([A-Za-z0-9_.-]+)==(\S+)", block)
        if match:
            entries[_name(match.group(1))] = (match.group(2), block.count("--hash=sha256:"))
    return entries


def _projects() -> list[dict]:
    return [tomllib.loads((ROOT / p / "pyproject.toml").read_text()) for p in PACKAGES]


def test_locks_pin_every_declared_dependency_with_hashes() -> None:
    runtime, build = _locked(RUNTIME_LOCK), _locked(BUILD_LOCK)
    assert all(hashes for _, hashes in (runtime | build).values()), "an entry without hashes"
    local = {_name(p["project"]["name"]) for p in _projects()}
    problems = []
    for project in _projects():
        for line in project["project"]["dependencies"]:
            req = Requirement(line)
            if _name(req.name) in local:
                continue
            pinned = runtime.get(_name(req.name), ("missing", 0))[0]
            if pinned not in req.specifier:
                problems.append(f"{project['project']['name']}: {line} but the lock has {pinned}"
                                " (run `make image-lock`)")
        for line in project["build-system"]["requires"]:
            req = Requirement(line)
            if build.get(_name(req.name), ("missing", 0))[0] not in req.specifier:
                problems.append(f"build backend {line} not in {BUILD_LOCK.name}")
    assert not problems, "\n".join(problems)


def test_dockerfile_installs_from_the_locks() -> None:
    text = DOCKERFILE.read_text()
    assert not re.search(r"^#\s*syntax=", text, re.M), "a syntax line pulls a BuildKit frontend"
    assert "pip wheel --require-hashes --only-binary=:all: -r requirements-image.txt" in text
    assert "--require-hashes --only-binary=:all: -r requirements-image-build.txt" in text
    assert "--no-deps --no-build-isolation" in text


def _pip(python: Path | str, *args: str, cwd: Path = ROOT) -> None:
    done = subprocess.run([str(python), "-m", "pip", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]


@pytest.mark.slow
@pytest.mark.timeout(900)  # downloads every locked wheel: network-bound, not CPU-bound
def test_image_wheels_are_binary_only_and_install_offline(tmp_path: Path) -> None:
    wheels, build, env = tmp_path / "wheels", tmp_path / "build", tmp_path / "venv"
    _pip(sys.executable, "wheel", "--quiet", "--require-hashes", "--only-binary=:all:",
         "-r", str(RUNTIME_LOCK), "--wheel-dir", str(wheels))
    venv.create(build, with_pip=True)
    _pip(build / "bin" / "python", "install", "--quiet", "--require-hashes",
         "--only-binary=:all:", "-r", str(BUILD_LOCK))
    _pip(build / "bin" / "python", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
         "--wheel-dir", str(wheels), *(f"./{p}" for p in PACKAGES))
    venv.create(env, with_pip=True)
    python = env / "bin" / "python"
    _pip(python, "install", "--quiet", "--no-index", "--find-links", str(wheels),
         "catalog", "catalog-checker", "cache-operator")
    _pip(python, "check")
    for module in ("catalog", "catalog_checker", "cache_operator"):
        run = subprocess.run([str(python), "-m", module, "--help"], cwd=tmp_path,
                             capture_output=True, text=True, timeout=60)
        assert run.returncode == 0 and "usage" in run.stdout, run.stderr
