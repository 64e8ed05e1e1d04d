"""Grafana's own schema types as the judge of the chart's dashboard JSON.

test_dashboards.py checks what this project cares about (contract metrics,
layout); this module checks that Grafana would recognise every field. Each
dashboard becomes `export const dashboard: DashboardJson = <the JSON>;` and the
pinned TypeScript compiler type-checks it against the v0 `Dashboard` type of the
pinned `@grafana/schema` package. An object literal assigned to a typed const
gets TypeScript's excess-property check, so a misspelled field fails as surely
as a wrong type or an unknown enum value. (`resolveJsonModule` imports would
widen the JSON's types and skip that check, hence the generated .ts files.)

README: `make grafana-schema-deps` (part of `make test`) runs `npm ci` in
tests/chart/grafana_schema/ (pinned @grafana/schema + typescript, lock file
committed); then `.venv/bin/pytest tests/chart/test_dashboard_schema.py`.

What the types cannot see: a panel's `options` and `targets` are plugin-specific
and typed `Record<string, unknown>` by the schema, so those stay with
test_dashboards.py.
"""

from __future__ import annotations

import copy
import json
import re
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.chart.render import CHART, ROOT

FOLDER = Path(__file__).resolve().parent / "grafana_schema"
TSC = FOLDER / "node_modules" / ".bin" / "tsc"
DASHBOARDS = sorted((CHART / "dashboards").glob("*.json"))
# The generated file's lines before the JSON's first line (see write_ts).
HEADER = ("import type { DashboardJson } from '../../dashboard-json';\n\n"
          "export const dashboard: DashboardJson = ")
HEADER_LINES = HEADER.count("\n")
TSC_ERROR = re.compile(r"^(?P<file>[^\s(]+\.ts)\((?P<line>\d+),(?P<col>\d+)\): (?P<msg>.*)$")


def installed_tsc() -> Path:
    """The pinned compiler, or a failure that says how to get it (no silent skip)."""
    if not TSC.exists():
        pytest.fail(f"{TSC.relative_to(ROOT)} is missing: run `make grafana-schema-deps` "
                    "(npm ci in tests/chart/grafana_schema)")
    return TSC


@pytest.fixture
def build_dir() -> Iterator[Path]:
    """A private directory under grafana_schema/build (gitignored), so that the
    generated files resolve '@grafana/schema' from the folder's node_modules."""
    (FOLDER / "build").mkdir(exist_ok=True)
    path = Path(tempfile.mkdtemp(prefix="run-", dir=FOLDER / "build"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def write_ts(build: Path, name: str, json_text: str) -> Path:
    """One dashboard as a typed object literal; its JSON line N is line N + HEADER_LINES."""
    path = build / f"{name}.ts"
    path.write_text(f"{HEADER}{json_text.rstrip()};\n")
    return path


def typecheck(build: Path, sources: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Run the pinned tsc over `sources` (name -> JSON text) with the folder's tsconfig."""
    files = [write_ts(build, name, text).name for name, text in sources.items()]
    config = build / "tsconfig.json"
    base = Path("..", "..", "tsconfig.json").as_posix()
    config.write_text(json.dumps({"extends": base, "files": files}))
    return subprocess.run([str(installed_tsc()), "-p", str(config)], cwd=FOLDER,
                          capture_output=True, text=True, timeout=120, check=False)


def readable(result: subprocess.CompletedProcess[str], json_file: Path) -> str:
    """tsc's errors with positions translated back to the dashboard JSON file."""
    rel = json_file.relative_to(ROOT) if json_file.is_relative_to(ROOT) else json_file
    lines = []
    for line in (result.stdout + result.stderr).splitlines():
        m = TSC_ERROR.match(line)
        if m:
            line = f"{rel}:{int(m['line']) - HEADER_LINES}:{m['col']}: {m['msg']}"
        lines.append(line)
    return "\n".join(lines)


def test_versions_are_pinned_and_installed() -> None:
    """An exact pin in package.json, the same in the lock file and in node_modules."""
    wanted = json.loads((FOLDER / "package.json").read_text())["devDependencies"]
    lock = json.loads((FOLDER / "package-lock.json").read_text())["packages"]
    assert set(wanted) == {"@grafana/schema", "typescript"}
    for name, version in wanted.items():
        assert re.fullmatch(r"\d+\.\d+\.\d+", version), f"{name} not pinned exactly: {version}"
        assert lock[f"node_modules/{name}"]["version"] == version, name
        installed = FOLDER / "node_modules" / name / "package.json"
        assert installed.exists(), f"{name} not installed: run `make grafana-schema-deps`"
        assert json.loads(installed.read_text())["version"] == version, (
            f"{name}: node_modules is stale; run `make grafana-schema-deps`")


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.stem)
def test_dashboard_conforms_to_grafana_schema(path: Path, build_dir: Path) -> None:
    result = typecheck(build_dir, {path.stem: path.read_text()})
    assert result.returncode == 0, "tsc rejects the dashboard:\n" + readable(result, path)


def _set(keys: tuple[str | int, ...], value: Any) -> Callable[[dict[str, Any]], None]:
    def mutate(d: dict[str, Any]) -> None:
        target: Any = d
        for k in keys[:-1]:
            target = target[k]
        target[keys[-1]] = value
    return mutate


def _rename(keys: tuple[str | int, ...], old: str, new: str) -> Callable[[dict[str, Any]], None]:
    def mutate(d: dict[str, Any]) -> None:
        target: Any = d
        for k in keys:
            target = target[k]
        target[new] = target.pop(old)
    return mutate


# Each breaks one thing a Grafana dashboard must get right. tsc must reject it
# on the first JSON line containing `marker`, with an error containing `message`.
NUMBER = "is not assignable to type 'number'"


def unknown(field: str) -> str:
    """tsc's excess-property message for a quoted (JSON) key."""
    return f"\"{field}\"' does not exist"


BROKEN: dict[str, tuple[Callable[[dict[str, Any]], None], str, str]] = {
    "misspelled-top-level-field": (
        _rename((), "refresh", "refersh"), '"refersh"', unknown("refersh")),
    "misspelled-panel-field": (
        _rename(("panels", 0), "gridPos", "gridPoss"), '"gridPoss"', unknown("gridPoss")),
    "misspelled-field-config": (
        _rename(("panels", 0, "fieldConfig", "defaults"), "unit", "units"),
        '"units"', unknown("units")),
    "wrong-type": (_set(("schemaVersion",), "39"), '"schemaVersion"', NUMBER),
    "wrong-grid-type": (_set(("panels", 0, "gridPos", "w"), "6"), '"w": "6"', NUMBER),
    "unknown-enum-value": (
        _set(("panels", 0, "fieldConfig", "defaults", "color", "mode"), "palette-clasic"),
        '"palette-clasic"', "'\"palette-clasic\"' is not assignable"),
    "missing-required-field": (
        lambda d: d["panels"][0]["gridPos"].pop("h"), '"gridPos"', "'h'"),
}


@pytest.mark.parametrize("case", BROKEN, ids=str)
def test_the_check_can_fail(case: str, build_dir: Path) -> None:
    """A copy of a real dashboard with one mistake must make tsc fail, on that mistake."""
    mutate, marker, message = BROKEN[case]
    broken = copy.deepcopy(json.loads(DASHBOARDS[0].read_text()))
    mutate(broken)
    text = json.dumps(broken, indent=2)
    result = typecheck(build_dir, {f"broken-{case}": text})
    output = readable(result, Path(f"broken-{case}.json"))
    assert result.returncode != 0, f"tsc accepted a broken dashboard ({case})"
    line = next(n for n, s in enumerate(text.splitlines(), 1) if marker in s)
    assert f"broken-{case}.json:{line}:" in output and message in output, (
        f"tsc failed, but not on line {line} ({marker}) with {message!r}:\n{output}")
