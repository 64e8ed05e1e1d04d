"""Print the images' tag: the chart's appVersion plus a hash of exactly what
the Docker build sees.

Why from the content: a fixed tag (0.1.0) never changes, so `helm upgrade`
leaves the pods alone and code changes never reach a running kind cluster.
The hash covers the Dockerfile and every file the build context admits
(.dockerignore's `!` lines), uncommitted edits included, so any change that
can change an image changes its tag, and nothing else (docs, tests) does.

    python scripts/kind-image-tag.py            -> 0.1.0-3f2a9c41d07e
"""

from __future__ import annotations

import argparse
import fnmatch
import hashlib
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# Besides the context itself: what decides how the context is built.
BUILD_FILES = ("Dockerfile", ".dockerignore")


def context_rules(root: Path) -> tuple[list[str], list[str]]:
    """(included, excluded) patterns from .dockerignore, which is written as
    `**` then `!path` lines then exclusions."""
    included, excluded = [], []
    for line in (root / ".dockerignore").read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#") or line == "**":
            continue
        if line.startswith("!"):
            included.append(line[1:].rstrip("/"))
        else:
            excluded.append(line)
    return included, excluded


def _excluded(rel: str, patterns: list[str]) -> bool:
    parts = rel.split("/")
    for pattern in patterns:
        bare = pattern.removeprefix("**/")
        if fnmatch.fnmatch(rel, pattern) or any(fnmatch.fnmatch(p, bare) for p in parts):
            return True
    return False


def context_files(root: Path) -> list[Path]:
    """Every file the build context holds, sorted (the hash must not depend on
    directory listing order)."""
    included, excluded = context_rules(root)
    files: set[Path] = {root / name for name in BUILD_FILES}
    for entry in included:
        path = root / entry
        candidates = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
        files.update(p for p in candidates
                     if not _excluded(p.relative_to(root).as_posix(), excluded))
    return sorted(files)


def content_hash(root: Path) -> str:
    digest = hashlib.sha256()
    for path in context_files(root):
        digest.update(path.relative_to(root).as_posix().encode() + b"\0")
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()[:12]


def app_version(root: Path) -> str:
    chart = (root / "helm" / "hybrid-catalog" / "Chart.yaml").read_text()
    match = re.search(r'^appVersion:\s*"?([^"\s]+)"?\s*$', chart, re.M)
    if not match:
        sys.exit("helm/hybrid-catalog/Chart.yaml has no appVersion")
    return match.group(1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", type=Path, default=ROOT, help="repository root")
    args = parser.parse_args()
    print(f"{app_version(args.root)}-{content_hash(args.root)}")


if __name__ == "__main__":
    main()
