"""The catalog workload read with the official kubernetes client from the
Kubernetes API emulator (real HTTP, the client's own kubeconfig loading)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cache_operator.config import Config, ConfigError
from cache_operator.workload import (
    ANNOTATION,
    Workload,
    WorkloadError,
    WorkloadReader,
    WorkloadRef,
    workload_of,
)


@pytest.fixture
def reader(kube: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[WorkloadReader]:
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "kubeconfig"))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    made = WorkloadReader.from_environment(ttl=0)
    yield made
    made.close()


async def test_reads_desired_and_ready_replicas(kube: Any, reader: WorkloadReader) -> None:
    kube.put_workload("deployment", "shop", "catalog", desired=3, ready=2)
    kube.put_workload("statefulset", "shop", "catalog-db", desired=1, ready=1)
    assert await reader.read("shop", WorkloadRef.parse("deployment/catalog")) == Workload(
        "deployment/catalog", desired=3, ready=2)
    assert await reader.read("shop", WorkloadRef.parse("StatefulSet/catalog-db")) == Workload(
        "statefulset/catalog-db", desired=1, ready=1)


async def test_a_missing_workload_is_a_readable_error(kube: Any, reader: WorkloadReader) -> None:
    with pytest.raises(WorkloadError, match="deployment/catalog not found in namespace shop"):
        await reader.read("shop", WorkloadRef("deployment", "catalog"))


async def test_answers_are_remembered_for_the_ttl(kube: Any, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "kubeconfig"))
    reader = WorkloadReader.from_environment(ttl=3600)
    try:
        ref = WorkloadRef("deployment", "catalog")
        kube.put_workload("deployment", "shop", "catalog", desired=3, ready=3)
        assert (await reader.read("shop", ref)).ready == 3
        kube.put_workload("deployment", "shop", "catalog", desired=3, ready=1)
        assert (await reader.read("shop", ref)).ready == 3  # one call per round, not per policy
    finally:
        reader.close()


def test_workload_configuration() -> None:
    assert Config.from_env({"CATALOG_WORKLOAD": "deployment/catalog"}).catalog_workload == \
        WorkloadRef("deployment", "catalog")
    assert Config.from_env({}).catalog_workload is None
    for bad in ("catalog", "daemonset/catalog", "deployment/"):
        with pytest.raises(ConfigError, match="CATALOG_WORKLOAD: expected deployment/<name>"):
            Config.from_env({"CATALOG_WORKLOAD": bad})
    default = WorkloadRef("deployment", "catalog")
    assert workload_of(default, None) == default
    assert workload_of(default, {ANNOTATION: "statefulset/cat"}) == WorkloadRef(
        "statefulset", "cat")
    with pytest.raises(ValueError, match="expected deployment/<name>"):
        workload_of(default, {ANNOTATION: "pod/x"})
