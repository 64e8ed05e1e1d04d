"""Hostile policy files: ``validate``/``apply`` refuse YAML aliases, oversized and
over-deep documents with a readable message and exit code 2, and print a
bounded number of bounded error lines."""

from __future__ import annotations

import subprocess
import sys
import tracemalloc
from pathlib import Path

import pytest
from cache_operator.cli import MAX_ERROR_CHARS, MAX_ERROR_LINES
from cache_operator.documents import MAX_DEPTH, MAX_DOCUMENT_BYTES, DocumentError, load_all
from cache_operator.validation import PolicyFileError, load_policies

from tests.operator.conftest import ROOT
from tests.operator.crd_tools import EXAMPLES

HEADER = ("apiVersion: caching.hybridcache.io/v1alpha1\nkind: CacheInvalidationPolicy\n"
          "metadata: {name: bomb}\nspec:\n  dataType: bomb\n")


def billion_laughs() -> str:
    """Nine levels of nine aliases: 9^9 (387 million) tag strings once expanded."""
    lines = ['  a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    previous = "a"
    for level in "bcdefghi":
        lines.append(f"  {level}: &{level} [" + ",".join([f"*{previous}"] * 9) + "]")
        previous = level
    text = HEADER + "\n".join(lines) + f"\n  tags: *{previous}\n"
    return text + "#" * (595 - len(text) - 1) + "\n"  # the size the attack used


def cli(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([sys.executable, "-m", "cache_operator", *args], input=stdin,
                          capture_output=True, timeout=60, cwd=ROOT)


def test_the_alias_bomb_is_refused_before_anything_expands(tmp_path: Path) -> None:
    bomb = billion_laughs()
    assert len(bomb.encode()) == 595
    tracemalloc.start()
    try:
        with pytest.raises(PolicyFileError) as caught:
            load_policies(bomb)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert caught.value.errors == [
        "YAML: aliases (*a) are not allowed in policy documents; write each value out\n"
        '  in "<unicode string>", line 7, column 10:\n'
        "      b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]\n"
        "             ^"]
    assert peak < 1_000_000  # bytes: nothing was expanded

    path = tmp_path / "bomb.yaml"
    path.write_text(bomb)
    for command in ("validate", "apply"):
        extra = ["--redis-url", "redis://127.0.0.1:1/0"] if command == "apply" else []
        proc = cli(command, "-f", str(path), *extra)
        assert proc.returncode == 2, proc.stderr
        assert b"aliases (*a) are not allowed" in proc.stderr
        assert len(proc.stderr) < 1000 and b"Traceback" not in proc.stderr


def test_aliases_are_refused_even_when_harmless_and_anchors_alone_are_fine() -> None:
    text = EXAMPLES.read_text()
    with pytest.raises(DocumentError, match=r"aliases \(\*t\) are not allowed"):
        list(load_all("x: &t [1]\ny: *t\n"))
    with pytest.raises(DocumentError, match=r"aliases \(\*base\) are not allowed"):
        list(load_all("base: &base {a: 1}\nmerged:\n  <<: *base\n"))
    assert list(load_all("spec: &s {dataType: price}\n")) == [{"spec": {"dataType": "price"}}]
    assert len(load_policies(text)) == 5  # the examples use none


def test_documents_over_the_size_limit_are_refused_unread(tmp_path: Path) -> None:
    big = HEADER + "  tags: [" + ",".join(['"product:{id}"'] * 80_000) + "]\n"
    assert len(big) > MAX_DOCUMENT_BYTES
    with pytest.raises(DocumentError, match=r"larger than 1024 KiB"):
        list(load_all(big))
    path = tmp_path / "big.yaml"
    path.write_text(big)
    proc = cli("validate", "-f", str(path))
    assert proc.returncode == 2
    assert proc.stderr.decode().splitlines()[0] == (
        f"error: {path}: larger than 1024 KiB ({MAX_DOCUMENT_BYTES + 1} bytes or more); "
        "split it into several files")
    # stdin is read up to the limit, never whole
    proc = cli("validate", "-f", "-", stdin=b"#" * (8 * MAX_DOCUMENT_BYTES))
    assert proc.returncode == 2 and b"error: -: larger than 1024 KiB" in proc.stderr


def test_deep_nesting_and_bad_encoding_are_readable_errors(tmp_path: Path) -> None:
    deep = HEADER + "  tags: " + "[" * 5000 + "]" * 5000 + "\n"
    with pytest.raises(DocumentError, match=f"nested deeper than {MAX_DEPTH} levels"):
        list(load_all(deep))
    path = tmp_path / "deep.yaml"
    path.write_text(deep)
    proc = cli("validate", "-f", str(path))
    assert proc.returncode == 2 and b"nested deeper than 32 levels" in proc.stderr
    assert b"Traceback" not in proc.stderr
    before = HEADER.encode() + b"  tags: ['"
    path.write_bytes(before + b"\xff']\n")
    proc = cli("validate", "-f", str(path))
    assert proc.returncode == 2
    assert f"not UTF-8 text (byte {len(before)})".encode() in proc.stderr


def test_error_output_is_bounded(tmp_path: Path) -> None:
    docs = [HEADER.replace("name: bomb", f"name: p{i}").replace("dataType: bomb",
                                                                  f"dataType: p{i}")
            + "  strategy: nope\n" for i in range(100)]
    docs.append(HEADER + "  expiration: " + "9" * 5000 + "s\n")
    path = tmp_path / "many.yaml"
    path.write_text("---\n".join(docs))
    proc = cli("validate", "-f", str(path))
    assert proc.returncode == 2
    lines = proc.stderr.decode().splitlines()
    assert len(lines) == MAX_ERROR_LINES + 2  # the shown ones, the count, the verdict
    assert lines[0].startswith(f"error: {path}: document 1 (p0): spec.strategy: 'nope'")
    assert lines[-2] == f"... and {101 - MAX_ERROR_LINES} more errors (not shown)"
    assert lines[-1].startswith("nothing was published")
    assert all(len(line) <= MAX_ERROR_CHARS + 30 for line in lines)

    long = tmp_path / "long.yaml"
    long.write_text(HEADER + "  dataType: " + "x" * 5000 + "\n")
    line = cli("validate", "-f", str(long)).stderr.decode().splitlines()[0]
    assert line.endswith(" characters)") and len(line) <= MAX_ERROR_CHARS + 30
