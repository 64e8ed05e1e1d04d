"""The images' build step, without Docker: the Dockerfile's `pip wheel
--only-binary=:all:` over the three packages must resolve every pinned
dependency to a binary wheel (no compiler in the build stage), and installing
the wheels with `--no-index` must give working `catalog` and `cache_operator`
commands, exactly as the runtime stages do. (The image itself is built only by
`make kind-up`, which needs a Docker engine.)"""

from __future__ import annotations

import re
import subprocess
import sys
import venv
from pathlib import Path

from tests.chart.render import ROOT

DOCKERFILE = ROOT / "Dockerfile"


def _wheel_command() -> list[str]:
    text = DOCKERFILE.read_text()
    match = re.search(r"RUN pip wheel (.+?)--wheel-dir /wheels (.+?)\n", text, re.S)
    assert match, "the Dockerfile's wheel step moved; update this test"
    flags = match.group(1).replace("\\\n", " ").split()
    packages = match.group(2).split()
    return [*flags, *packages]


def test_image_wheels_are_binary_only_and_install_offline(tmp_path: Path) -> None:
    wheels, env = tmp_path / "wheels", tmp_path / "venv"
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", *_wheel_command(),
         "--wheel-dir", str(wheels)],
        cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert build.returncode == 0, build.stderr[-3000:]
    venv.create(env, with_pip=True)
    python = env / "bin" / "python"
    install = subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", "--no-index", "--find-links",
         str(wheels), "catalog", "cache-operator"],
        capture_output=True, text=True, timeout=600)
    assert install.returncode == 0, install.stderr[-3000:]
    for module in ("catalog", "cache_operator"):
        run = subprocess.run([str(python), "-m", module, "--help"], cwd=tmp_path,
                             capture_output=True, text=True, timeout=60)
        assert run.returncode == 0 and "usage" in run.stdout, run.stderr
