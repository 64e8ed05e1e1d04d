"""`make kind-up`'s helpers: image tags that follow exactly the build's
content, and a kind config with the host ports asked for."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.chart.render import ROOT

SCRIPTS = ROOT / "scripts"


def _tag(root: Path) -> str:
    done = subprocess.run([sys.executable, str(SCRIPTS / "kind-image-tag.py"), "--root", str(root)],
                          capture_output=True, text=True, check=True, timeout=60)
    return done.stdout.strip()


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """A copy of what the tag depends on, plus files it must ignore."""
    root = tmp_path / "repo"
    for rel in ("Dockerfile", ".dockerignore", "requirements-image.txt",
                "requirements-image-build.txt", "helm/hybrid-catalog/Chart.yaml",
                "operator/pyproject.toml"):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / rel, root / rel)
    for rel in ("services/hybridcache", "services/catalog", "operator/cache_operator"):
        shutil.copytree(ROOT / rel, root / rel,
                        ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    return root


def test_tag_changes_with_code_and_build_files_only(tree: Path) -> None:
    before = _tag(tree)
    assert before == _tag(tree) and before.startswith("0.1.0-")
    (tree / "README.md").write_text("docs are not in the image\n")
    (tree / "services/catalog/catalog/__pycache__").mkdir(exist_ok=True)
    (tree / "services/catalog/catalog/__pycache__/x.pyc").write_bytes(b"\0")
    assert _tag(tree) == before
    app = tree / "services/catalog/catalog/app.py"
    app.write_text(app.read_text() + "\n# changed\n")
    changed = _tag(tree)
    assert changed != before
    dockerfile = tree / "Dockerfile"
    dockerfile.write_text(dockerfile.read_text() + "\n# changed\n")
    assert _tag(tree) not in {before, changed}


def test_kind_config_maps_the_ports_asked_for(tmp_path: Path) -> None:
    out = tmp_path / "kind-config.yaml"
    subprocess.run([sys.executable, str(SCRIPTS / "kind-config.py"), "--http", "18080",
                    "--grafana", "13000", "--prometheus", "19090", "--out", str(out)],
                   check=True, timeout=60)
    generated = yaml.safe_load(out.read_text())
    mappings = {m["containerPort"]: m["hostPort"] for n in generated["nodes"]
                for m in n.get("extraPortMappings", [])}
    assert mappings == {30080: 18080, 30300: 13000, 30090: 19090}
    original = yaml.safe_load((ROOT / "kind-config.yaml").read_text())
    for node in (generated, original):
        for n in node["nodes"]:
            n.pop("extraPortMappings", None)
    assert generated == original


def test_kind_config_rejects_clashing_ports(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, str(SCRIPTS / "kind-config.py"), "--http", "3000",
                           "--out", str(tmp_path / "k.yaml")],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode != 0 and "host ports must differ" in done.stderr


def test_make_kind_up_passes_the_ports_and_tags() -> None:
    done = subprocess.run(["make", "-n", "--no-print-directory", "kind-up", "KIND_HTTP_PORT=18080",
                           "KIND_GRAFANA_PORT=13000", "KIND_PROMETHEUS_PORT=19090"],
                          cwd=ROOT, capture_output=True, text=True, check=True, timeout=60)
    plan = done.stdout
    assert "--http 18080" in plan and "--grafana 13000" in plan and "--prometheus 19090" in plan
    tag = _tag(ROOT)
    assert f"--set catalog.image.tag={tag}" in plan and f"--set operator.image.tag={tag}" in plan
    assert "externalUrl=http://localhost:18080" in plan
    # Helm is the only writer of the policies (no conflicting kubectl apply).
    assert "apply -f operator/examples" not in plan
    assert "sentinel-values.yaml" not in plan  # standalone Redis by default


def test_make_kind_up_redis_modes() -> None:
    def plan(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["make", "-n", "--no-print-directory", "kind-up", *args],
                              cwd=ROOT, capture_output=True, text=True, timeout=60)

    sentinel = plan("REDIS_MODE=sentinel")
    assert sentinel.returncode == 0, sentinel.stderr
    assert "-f helm/hybrid-catalog/ci/sentinel-values.yaml" in sentinel.stdout
    cluster = plan("REDIS_MODE=cluster")
    assert cluster.returncode == 0, cluster.stderr
    assert "-f helm/hybrid-catalog/ci/cluster-values.yaml" in cluster.stdout
    assert "sentinel-values.yaml" not in cluster.stdout
    wrong = plan("REDIS_MODE=sharded")
    assert wrong.returncode != 0
    assert "REDIS_MODE must be standalone, sentinel or cluster" in wrong.stderr
