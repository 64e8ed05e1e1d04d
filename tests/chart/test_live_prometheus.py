"""A real Prometheus scrapes the chart's workloads run as local processes.

The catalog and operator commands and environment come from the rendered chart
(only addresses change: loopback ports, a private Redis, a SQLite file); the
rules are the chart's PrometheusRule; the queries are every dashboard panel's
PromQL, with the dashboards' template variables resolved through their own
label_values queries. After some load, each query must parse and return
series, and every dashboard is drawn to a PNG under build/dashboards/ (no
Grafana server runs here: a person looks at those instead).

Targets carry the labels the ServiceMonitors give them in Kubernetes
(`namespace`, `job` = the Service name, `pod`); the same processes are also
scraped as a second release in another namespace, so a query that forgets its
namespace or job selector counts every replica twice.

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
import signal
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

from tests.chart.dashboard_render import Macros, Prometheus, render, resolve
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
from tests.support.ports import free_port
from tests.support.process import ManagedProcess, ProcessExited
from tests.support.redis_server import RedisServer
from tests.support.waiting import wait_until

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]  # a shared, loaded machine
REPLICAS = 3
RATE_INTERVAL = "30s"  # what Grafana's $__rate_interval becomes at a 1 s scrape interval
STEP = 3  # seconds between points of the rendered panels ($__interval)
PNG_DIR = ROOT / "build" / "dashboards"
OTHER_NAMESPACE = "other-team"  # the second release scraped by the same Prometheus
OTHER_RELEASE = "other-hybrid-catalog"


def _require_components() -> None:
    missing = [p for p in ("services/catalog/catalog/__main__.py",
                           "operator/cache_operator/__main__.py") if not (ROOT / p).exists()]
    if missing or importlib.util.find_spec("catalog") is None:
        pytest.fail(f"catalog/operator not runnable yet: {missing}")
    if not shutil.which("prometheus"):
        pytest.fail("prometheus not found: `make promtool-bin` installs Debian's prometheus")


class Processes:
    """The stack's child processes (tests/support/process.py), always stopped
    whatever the test does, newest first."""

    def __init__(self, logdir: Path) -> None:
        self.logdir = logdir
        self.procs: list[ManagedProcess] = []

    def start(self, name: str, argv: list[str], env: dict[str, str]) -> ManagedProcess:
        proc = ManagedProcess(name, argv, log_path=self.logdir / f"{name}.log", env=env,
                              cwd=ROOT).start()
        self.procs.append(proc)
        return proc

    def stop(self) -> None:
        for proc in reversed(self.procs):
            proc.send(signal.SIGTERM)
        for proc in self.procs:
            proc.stop()


def wait_for(check: Any, what: str, procs: Processes, timeout: float = 60.0) -> Any:
    """Poll ``check`` (cross-process state) until it returns something truthy;
    fail at once, with its log, if any process of the stack has exited."""

    def ready() -> Any:
        for proc in procs.procs:
            try:
                proc.check_alive()
            except ProcessExited as exc:
                pytest.fail(f"{exc}\n(while waiting for {what})")
        try:
            return check()
        except (httpx.HTTPError, KeyError, ValueError):
            return None

    return wait_until(ready, timeout=timeout, interval=0.2, what=what)


def _local_env(rendered: dict[str, dict[str, Any]], overrides: dict[str, str]) -> dict[str, str]:
    env = dict(os.environ)
    env.update(expand(rendered, SECRETS))
    env.update(overrides)
    return env


def _dashboards() -> dict[str, dict[str, Any]]:
    return {p.stem: json.loads(p.read_text())
            for p in sorted((CHART / "dashboards").glob("*.json"))}


def _macros(seconds: float) -> Macros:
    return Macros(rate_interval=RATE_INTERVAL, interval=f"{STEP}s", range=f"{int(seconds)}s")


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    _require_components()
    tmp_path = tmp_path_factory.mktemp("live")
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
        # The catalog Deployment the operator counts replicas against
        # (CATALOG_WORKLOAD), as its controller would report it.
        workload = {e["name"]: e.get("value") for e in op["env"]}
        kind, _, name = str(workload["CATALOG_WORKLOAD"]).partition("/")
        kube.put_workload(kind, NAMESPACE, name, desired=REPLICAS, ready=REPLICAS)
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

        def every_policy_ready() -> bool:
            # With the chart's CATALOG_WORKLOAD the operator compares the replicas
            # that applied each policy with the Deployment's ready replicas.
            text = httpx.get(f"http://127.0.0.1:{op_port}/metrics").text
            ready = re.findall(r'^cache_operator_policy_ready\{[^}]*\} 1\.0$', text, re.M)
            return len(ready) == len(policies)

        wait_for(every_policy_ready, "every policy Ready against the catalog Deployment", procs)
        checker_argv = [sys.executable, "-m", "catalog_checker", "--duration", "0",
                        "--metrics-port", str(checker_port)]
        for url in urls:
            checker_argv += ["--url", url]
        # The checker writes with the catalog's write token, as the chart gives it.
        checker = container(one(docs, "Deployment", "-checker"), "checker")
        checker_env = _local_env(env_of(checker), {})
        procs.start("checker", checker_argv, checker_env)
        yield {"urls": urls, "targets": targets,
               "write_token": checker_env["CATALOG_WRITE_TOKEN"], "policy_key": policy_key,
               "policy_count": len(policies), "policies": policies,
               "kubectl": Kubectl(kubeconfig),
               "release": one(docs, "Service", "-catalog")["metadata"]["name"]
               .removesuffix("-catalog"),
               "operator": f"127.0.0.1:{op_port}", "checker": f"127.0.0.1:{checker_port}",
               "redis": redis, "procs": procs,
               "tmp": tmp_path}
    finally:
        procs.stop()
        kube.stop()
        redis.stop()


def _scrape_configs(stack: dict[str, Any], release: str, namespace: str,
                    prefix: str = "") -> list[dict[str, Any]]:
    """One release's targets as the ServiceMonitors label them in Kubernetes:
    `job` is the Service's name, `namespace` the release's, `pod` per replica."""
    def job(component: str, targets: list[tuple[str, str]]) -> dict[str, Any]:
        return {"job_name": f"{prefix}{release}-{component}",
                "relabel_configs": [{"target_label": "job",
                                     "replacement": f"{release}-{component}"}],
                "static_configs": [{"targets": [t], "labels": {"pod": pod,
                                                               "namespace": namespace}}
                                   for t, pod in targets]}

    return [job("catalog", stack["targets"]),
            job("operator", [(stack["operator"], "operator-0")]),
            job("checker", [(stack["checker"], "checker-0")])]


def _prometheus_config(stack: dict[str, Any], rules: Path) -> dict[str, Any]:
    return {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(rules)],
        "scrape_configs": _scrape_configs(stack, stack["release"], NAMESPACE)
        + _scrape_configs(stack, OTHER_RELEASE, OTHER_NAMESPACE, prefix="second-"),
    }


def _load(urls: list[str], token: str) -> None:
    """Reads on every replica, writes that invalidate across replicas."""
    with httpx.Client(timeout=5, headers={"Authorization": f"Bearer {token}"}) as client:
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


def _change_a_policy(stack: dict[str, Any], query: Any) -> None:
    """A kubectl edit of one policy's budget, as the policy-change annotation shows."""
    policy = json.loads(json.dumps(stack["policies"][-1]))
    policy["spec"]["maxStaleness"] = "45m"
    stack["kubectl"].run("apply", "--validate=false", "-f", "-", input=yaml.safe_dump(policy))
    name = f"{NAMESPACE}/{policy['metadata']['name']}"
    wait_for(lambda: any(s["metric"]["policy"] == name and float(s["value"][1]) == 2700
                         for s in query("cache_operator_policy_max_staleness_seconds")),
             "the operator to report the changed budget", stack["procs"])


@pytest.fixture(scope="module")
def live(stack: dict[str, Any]) -> dict[str, Any]:
    """Prometheus scraping the stack after load, a Redis restart (resyncs) and
    a policy change: every panel and annotation has something to show."""
    tmp, procs = stack["tmp"], stack["procs"]
    rules = tmp / "rules.yaml"
    rules.write_text(rules_text())
    config = tmp / "prometheus.yml"
    config.write_text(yaml.safe_dump(_prometheus_config(stack, rules)))
    check = subprocess.run(["promtool", "check", "config", str(config)],
                           capture_output=True, text=True, timeout=60)
    assert check.returncode == 0, check.stdout + check.stderr

    port = free_port()
    started = time.time()
    procs.start("prometheus", ["prometheus", f"--config.file={config}",
                               f"--storage.tsdb.path={tmp / 'tsdb'}",
                               f"--web.listen-address=127.0.0.1:{port}"], dict(os.environ))
    api = f"http://127.0.0.1:{port}/api/v1"

    def query(expr: str) -> list[dict[str, Any]]:
        body = httpx.get(f"{api}/query", params={"query": expr}, timeout=10).json()
        assert body["status"] == "success", f"{expr}: {body}"
        return body["data"]["result"]

    ours = f'namespace="{NAMESPACE}"'
    expected_up = len(stack["targets"]) + 2
    wait_for(lambda: len(query(f"up{{{ours}}} == 1")) == expected_up, "every target up", procs)

    _load(stack["urls"], stack["write_token"])
    # A Redis restart makes every replica resubscribe (and count a resync). The
    # restarted Redis is empty: the operator's health timer republishes the policies.
    redis = stack["redis"]
    redis.restart()
    wait_for(lambda: int(redis.cli("HLEN", stack["policy_key"])) == stack["policy_count"],
             "the operator to republish every policy", procs)
    wait_for(lambda: len(query(f"hybridcache_backplane_connected{{{ours}}} == 1")) == REPLICAS,
             "replicas back on the backplane", procs)
    _change_a_policy(stack, query)
    _load(stack["urls"], stack["write_token"])
    return {"api": api, "query": query, "started": started}


def _variables(stack: dict[str, Any], dashboard: dict[str, Any], prom: Prometheus,
               start: float, end: float) -> Any:
    """The test's setup as an on-call engineer would pick it: our namespace and
    catalog job (the other release is scraped too), all data types and policies."""
    chosen = {"namespace": NAMESPACE, "job": f"{stack['release']}-catalog"}
    variables = resolve(dashboard, prom, chosen, start, end, _macros(end - start))
    assert variables.options["namespace"] == sorted([NAMESPACE, OTHER_NAMESPACE])
    assert variables.values["release"] == stack["release"]
    assert len(variables.options["policy"]) == stack["policy_count"]
    return variables


def test_dashboards_and_rules_against_live_prometheus(stack: dict[str, Any],
                                                      live: dict[str, Any]) -> None:
    procs, query = stack["procs"], live["query"]
    prom = Prometheus(live["api"])
    queries = []
    for name, dashboard in _dashboards().items():
        now = time.time()
        variables = _variables(stack, dashboard, prom, live["started"], now)
        for panel in dashboard["panels"]:
            for target in panel.get("targets", []):
                expr = variables.apply(target["expr"], _macros(now - live["started"]))
                queries.append((name, panel["title"], expr))
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
    groups = httpx.get(f"{live['api']}/rules", timeout=10).json()["data"]["groups"]
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


def test_dashboards_render_to_png(stack: dict[str, Any], live: dict[str, Any]) -> None:
    """Every panel drawn from the live Prometheus; every query and annotation has data."""
    prom = Prometheus(live["api"])
    end = time.time()
    start = live["started"]
    empty, drawn = [], []
    for name, dashboard in _dashboards().items():
        variables = _variables(stack, dashboard, prom, start, end)
        out = PNG_DIR / f"{name}.png"
        results = render(dashboard, prom, variables, _macros(end - start), start, end, STEP, out)
        drawn.append(out)
        empty += [f"{r.dashboard} / {r.panel} {r.ref}: {r.expr}" for r in results if not r.series]
        # Scoped to one release: the second release's copies are not counted.
        connected = prom.instant(variables.apply(
            'sum(hybridcache_backplane_connected{namespace="$namespace", job="$job"})',
            _macros(end - start)), end)
        assert float(connected[0]["value"][1]) == REPLICAS
    print("\ndashboard PNGs:\n" + "\n".join(f"  {p.relative_to(ROOT)}" for p in drawn))
    assert not empty, "queries without data:\n" + "\n".join(empty)
    for path in drawn:
        assert path.stat().st_size > 10_000, path
