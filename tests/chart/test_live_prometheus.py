"""A real Prometheus scrapes the chart's workloads run as local processes.

The catalog and operator commands and environment come from the rendered chart
(only addresses change: loopback ports, a private Redis, a SQLite file); the
rules are the chart's PrometheusRule; the queries are every dashboard panel's
PromQL. After some load, each query must parse and return series.

The operator is the real `python -m cache_operator run` against the Kubernetes
API emulator of tests/operator (kmock, serving the chart's CRD), with the
chart's CacheInvalidationPolicy objects applied by the real kubectl: its
policy metrics come from its own kopf handlers and timers.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from hybridcache.keys import Keys

from tests.chart.render import (
    CHART,
    NAMESPACE,
    ROOT,
    container,
    env_of,
    find,
    one,
    render_set,
    rules_text,
)
from tests.chart.test_wiring import SECRETS, expand
from tests.operator.kube import KubeApiServer
from tests.operator.kubectl import Kubectl
from tests.support.redis_server import RedisServer, free_port

pytestmark = pytest.mark.slow
REPLICAS = 3
RATE_INTERVAL = "30s"  # what Grafana's $__rate_interval becomes at a 1 s scrape interval


def _require_components() -> None:
    missing = [p for p in ("services/catalog/catalog/__main__.py",
                           "operator/cache_operator/__main__.py") if not (ROOT / p).exists()]
    if missing or importlib.util.find_spec("catalog") is None:
        pytest.fail(f"catalog/operator not runnable yet: {missing}")
    if not shutil.which("prometheus"):
        pytest.fail("prometheus not found: `make promtool-bin` installs Debian's prometheus")


class Processes:
    """Child processes that are always stopped, whatever the test does."""

    def __init__(self, logdir: Path) -> None:
        self.logdir = logdir
        self.procs: list[tuple[str, subprocess.Popen[bytes]]] = []

    def start(self, name: str, argv: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        log = open(self.logdir / f"{name}.log", "wb")  # noqa: SIM115 - closed with the process
        proc = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
        self.procs.append((name, proc))
        return proc

    def log(self, name: str) -> str:
        return (self.logdir / f"{name}.log").read_text(errors="replace")[-3000:]

    def stop(self) -> None:
        for _, proc in reversed(self.procs):
            if proc.poll() is None:
                proc.terminate()
        for _, proc in self.procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def wait_for(check: Any, what: str, procs: Processes, timeout: float = 60.0) -> Any:
    """Poll `check` until it returns a truthy value (cross-process state)."""
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        for name, proc in procs.procs:
            if proc.poll() is not None:
                pytest.fail(f"{name} exited ({proc.returncode}) while waiting for {what}:\n"
                            f"{procs.log(name)}")
        try:
            result = check()
            if result:
                return result
        except (httpx.HTTPError, KeyError, ValueError) as exc:
            last = exc
        time.sleep(0.2)
    pytest.fail(f"timed out waiting for {what} (last error: {last})")


def _local_env(rendered: dict[str, dict[str, Any]], overrides: dict[str, str]) -> dict[str, str]:
    env = dict(os.environ)
    env.update(expand(rendered, SECRETS))
    env.update(overrides)
    return env


def _panel_queries() -> list[tuple[str, str, str]]:
    out = []
    for path in sorted((CHART / "dashboards").glob("*.json")):
        for panel in json.loads(path.read_text())["panels"]:
            for target in panel.get("targets", []):
                expr = target["expr"].replace("$__rate_interval", RATE_INTERVAL)
                out.append((path.stem, panel["title"], expr))
    return out


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[dict[str, Any]]:
    _require_components()
    docs = render_set("default")
    procs = Processes(tmp_path)
    redis = RedisServer()
    redis.start()
    kube = KubeApiServer(find(docs, "CustomResourceDefinition"))
    try:
        kube.start()
        kubeconfig = kube.kubeconfig(tmp_path / "kubeconfig", namespace=NAMESPACE)
        cat = container(one(docs, "Deployment", "-catalog"), "catalog")
        op = container(one(docs, "Deployment", "-operator"), "operator")
        db = f"sqlite+aiosqlite:///{tmp_path / 'catalog.db'}"
        common = {"REDIS_URL": redis.url, "DATABASE_URL": db, "LOG_LEVEL": "WARNING"}
        seed = container(one(docs, "Job", "-seed"), "seed")
        subprocess.run([sys.executable, *seed["command"][1:-1], "200"], check=True, cwd=ROOT,
                       env=_local_env(env_of(seed), common), timeout=120,
                       capture_output=True)
        # The operator publishes the chart's policies from the Kubernetes API.
        policies = find(docs, "CacheInvalidationPolicy")
        Kubectl(kubeconfig).run("apply", "--validate=false", "-f", "-",
                                input=yaml.safe_dump_all(policies))
        op_port = free_port()
        op_env = _local_env(env_of(op), {
            "REDIS_URL": redis.url, "METRICS_PORT": str(op_port), "PROBE_INTERVAL": "1",
            "LIVENESS_ENDPOINT": f"http://127.0.0.1:{free_port()}/healthz",
            "KUBECONFIG": str(kubeconfig)})
        op_env.pop("KUBERNETES_SERVICE_HOST", None)  # not in a pod: use the kubeconfig
        procs.start("operator", [sys.executable, *op["command"][1:]], op_env)
        policy_key = Keys(op_env["CACHE_KEY_PREFIX"]).policies
        wait_for(lambda: int(redis.cli("HLEN", policy_key)) == len(policies),
                 "the operator to publish every policy", procs)
        urls, targets = [], []
        for i in range(REPLICAS):
            port = free_port()
            argv = [sys.executable, *cat["command"][1:]]
            argv[argv.index("--host") + 1] = "127.0.0.1"
            argv[argv.index("--port") + 1] = str(port)
            # The chart's METRICS_PORT, moved to a free port per local replica.
            metrics_port = free_port()
            env = _local_env(env_of(cat), {**common, "NODE_NAME": f"catalog-{i}",
                                           "METRICS_PORT": str(metrics_port)})
            procs.start(f"catalog-{i}", argv, env)
            urls.append(f"http://127.0.0.1:{port}")
            targets.append((f"127.0.0.1:{metrics_port}", f"catalog-{i}"))
        checker_port = free_port()
        for url in urls:
            wait_for(lambda u=url: httpx.get(f"{u}/readyz").status_code == 200,
                     f"{url}/readyz", procs)
        checker_argv = [sys.executable, "-m", "catalog_checker", "--duration", "0",
                        "--metrics-port", str(checker_port)]
        for url in urls:
            checker_argv += ["--url", url]
        procs.start("checker", checker_argv,
                    dict(os.environ, CATALOG_WRITE_TOKEN=SECRETS["write-token"]))
        yield {"urls": urls, "targets": targets, "policy_key": policy_key,
               "policy_count": len(policies),
               "operator": f"127.0.0.1:{op_port}", "checker": f"127.0.0.1:{checker_port}",
               "redis": redis, "procs": procs,
               "tmp": tmp_path}
    finally:
        procs.stop()
        kube.stop()
        redis.stop()


def _prometheus_config(stack: dict[str, Any], rules: Path) -> dict[str, Any]:
    # The labels the ServiceMonitors give targets in Kubernetes: `pod` per replica.
    return {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(rules)],
        "scrape_configs": [
            {"job_name": "catalog", "static_configs": [
                {"targets": [t], "labels": {"pod": pod}} for t, pod in stack["targets"]]},
            {"job_name": "operator", "static_configs": [
                {"targets": [stack["operator"]], "labels": {"pod": "operator-0"}}]},
            {"job_name": "checker", "static_configs": [{"targets": [stack["checker"]]}]},
        ],
    }


def _load(urls: list[str]) -> None:
    """Reads on every replica, writes that invalidate across replicas."""
    # The replicas run with the chart's CATALOG_WRITE_TOKEN (SECRETS' value).
    token = {"Authorization": f"Bearer {SECRETS['write-token']}"}
    with httpx.Client(timeout=5, headers=token) as client:
        for round_ in range(6):
            for i, url in enumerate(urls):
                for pid in range(1, 21):
                    client.get(f"{url}/products/{pid}").raise_for_status()
                client.get(f"{url}/categories").raise_for_status()
                client.get(f"{url}/countries").raise_for_status()
                pid = 1 + (round_ * len(urls) + i) % 20
                client.put(f"{url}/products/{pid}/price",
                           json={"price": f"{10 + round_}.{i}0"}).raise_for_status()
                client.put(f"{url}/products/{pid}/stock",
                           json={"stock": round_ + i}).raise_for_status()


def test_dashboards_and_rules_against_live_prometheus(stack: dict[str, Any]) -> None:
    tmp, procs = stack["tmp"], stack["procs"]
    rules = tmp / "rules.yaml"
    rules.write_text(rules_text())
    config = tmp / "prometheus.yml"
    config.write_text(yaml.safe_dump(_prometheus_config(stack, rules)))
    check = subprocess.run(["promtool", "check", "config", str(config)],
                           capture_output=True, text=True, timeout=60)
    assert check.returncode == 0, check.stdout + check.stderr

    port = free_port()
    procs.start("prometheus", ["prometheus", f"--config.file={config}",
                               f"--storage.tsdb.path={tmp / 'tsdb'}",
                               f"--web.listen-address=127.0.0.1:{port}"], dict(os.environ))
    api = f"http://127.0.0.1:{port}/api/v1"

    def query(expr: str) -> list[dict[str, Any]]:
        body = httpx.get(f"{api}/query", params={"query": expr}, timeout=10).json()
        assert body["status"] == "success", f"{expr}: {body}"
        return body["data"]["result"]

    expected_up = len(stack["targets"]) + 2
    wait_for(lambda: len(query("up == 1")) == expected_up, "every target up", procs)

    _load(stack["urls"])
    # A Redis restart makes every replica resubscribe (and count a resync). The
    # restarted Redis is empty: the operator's health timer republishes the policies.
    redis = stack["redis"]
    redis.restart()
    wait_for(lambda: int(redis.cli("HLEN", stack["policy_key"])) == stack["policy_count"],
             "the operator to republish every policy", procs)
    wait_for(lambda: len(query("hybridcache_backplane_connected == 1")) == REPLICAS,
             "replicas back on the backplane", procs)
    _load(stack["urls"])

    queries = _panel_queries()
    assert len(queries) >= 20

    def all_have_series() -> list[str]:
        return [f"{d} / {title}: {expr}" for d, title, expr in queries if not query(expr)]

    deadline = time.monotonic() + 60
    empty: list[str] = []
    while time.monotonic() < deadline:
        empty = all_have_series()
        if not empty:
            break
        time.sleep(1)
    assert not empty, "panels without series:\n" + "\n".join(empty)

    # Every rule evaluates without error in the live Prometheus.
    groups = httpx.get(f"{api}/rules", timeout=10).json()["data"]["groups"]
    health = {r["name"]: (r["health"], r.get("lastError", "")) for g in groups for r in g["rules"]}
    assert health and all(h == "ok" for h, _ in health.values()), health
    # The policies' staleness budgets are there for every policy the operator reports.
    # Both name a policy <namespace>/<name>, so PromQL can join them on `policy`.
    budgets = {s["metric"]["policy"]
               for s in query("cache_operator_policy_max_staleness_seconds")}
    reported = {s["metric"]["policy"] for s in query("cache_operator_policy_info")}
    assert reported == budgets

    def all_in_sync() -> bool:
        in_sync = {s["metric"]["policy"]: float(s["value"][1])
                   for s in query("cache_operator_replicas_in_sync")}
        return bool(in_sync) and all(v == REPLICAS for v in in_sync.values())

    wait_for(all_in_sync, "every policy in sync on every replica", procs)
    assert re.fullmatch(r"[0-9.e+-]+", query("sum(hybridcache_backplane_connected)")[0]["value"][1])
