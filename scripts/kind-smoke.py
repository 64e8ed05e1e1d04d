"""Smoke test of a deployed hybrid-catalog (run by `make kind-smoke`).

Checks what a user would check by hand, against the live cluster:
1. reads through the Service reach several replicas (X-Node differs);
2. a write without the write token is refused (401); a price write with it,
   through one replica, is seen by reads on every replica;
3. every CacheInvalidationPolicy reports all replicas in sync;
4. the catalog's and the operator's /metrics carry the metrics of docs/design.md.
Exits non-zero with a message naming the first thing that is wrong.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import subprocess
import sys
import time
from decimal import Decimal

import httpx

CATALOG_METRICS = ("hybridcache_requests_total", "hybridcache_backplane_connected",
                   "hybridcache_invalidations_total", "hybridcache_backplane_lag_seconds")
OPERATOR_METRICS = ("cache_operator_replicas_in_sync", "cache_operator_policy_info",
                    "cache_operator_backplane_lag_seconds")


def step(text: str) -> None:
    print(f"==> {text}", flush=True)


def fail(text: str) -> None:
    print(f"FAIL: {text}", file=sys.stderr)
    sys.exit(1)


def kubectl(*args: str) -> str:
    done = subprocess.run(["kubectl", *args], capture_output=True, text=True, timeout=60)
    if done.returncode != 0:
        fail(f"kubectl {' '.join(args)}: {done.stderr.strip()}")
    return done.stdout


def write_token(ns: str, base: str) -> str:
    """The catalog's write token: $CATALOG_WRITE_TOKEN, else the chart's Secret
    ``<release>-hybrid-catalog-write-token`` (key ``token``). Never printed."""
    token = os.environ.get("CATALOG_WRITE_TOKEN")
    if token:
        return token
    encoded = kubectl("-n", ns, "get", "secret", f"{base}-write-token",
                      "-o", "jsonpath={.data.token}")
    token = base64.b64decode(encoded).decode().strip()
    if not token:
        fail(f"secret {base}-write-token has no 'token' key; set CATALOG_WRITE_TOKEN")
    return token


def metrics_in_pod(ns: str, workload: str) -> str:
    """/metrics read from inside a pod of ``workload`` (kubectl exec): the
    NetworkPolicies open metrics ports to Prometheus only, which neither this
    host nor the API server's service proxy is."""
    port = kubectl("-n", ns, "get", workload, "-o", "jsonpath={.spec.template.spec"
                   ".containers[0].ports[?(@.name==\"metrics\")].containerPort}").strip()
    code = ("import urllib.request as u; print(u.urlopen("
            f"'http://127.0.0.1:{port}/metrics', timeout=5).read().decode())")
    return kubectl("-n", ns, "exec", workload, "--", "python", "-c", code)


def nodes_seen(client: httpx.Client, path: str, tries: int) -> dict[str, dict]:
    """node id -> last body, for `tries` GETs through the Service."""
    seen: dict[str, dict] = {}
    for _ in range(tries):
        # A fresh connection per request so the Service balances across pods.
        r = client.get(path, headers={"Connection": "close"})
        if r.status_code != 200:
            fail(f"GET {path} -> {r.status_code} {r.text[:200]}")
        seen[r.headers.get("X-Node", "?")] = r.json()
    return seen


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--namespace", required=True)
    ap.add_argument("--release", required=True)
    ap.add_argument("--url", default="http://localhost:8080")
    ap.add_argument("--product", type=int, default=1)
    args = ap.parse_args()
    ns, base = args.namespace, f"{args.release}-hybrid-catalog"
    path = f"/products/{args.product}"

    with httpx.Client(base_url=args.url, timeout=5.0) as client:
        step(f"reading {path} through the Service at {args.url}")
        try:
            seen = nodes_seen(client, path, 30)
        except httpx.HTTPError as exc:
            fail(f"catalog not reachable at {args.url}: {exc} (is `make kind-up` done?)")
        print(f"    replicas answering: {sorted(seen)}")
        if len(seen) < 2:
            fail(f"30 reads reached only {sorted(seen)}: expected several replicas")

        old = Decimal(next(iter(seen.values()))["price"])
        new = old + Decimal("1.11")
        step("writing without the write token (must be refused)")
        r = client.put(f"{path}/price", json={"price": str(new)})
        if r.status_code != 401:
            fail(f"PUT {path}/price without a token -> {r.status_code}, expected 401")

        step(f"writing price {old} -> {new} through one replica, with the token")
        r = client.put(f"{path}/price", json={"price": str(new)},
                       headers={"Authorization": f"Bearer {write_token(ns, base)}"})
        if r.status_code != 200:
            fail(f"PUT {path}/price -> {r.status_code} {r.text[:200]}")
        writer = r.headers.get("X-Node", "?")

        step("reading it back on every replica (each must serve the new price)")
        deadline = time.monotonic() + 10
        stale: dict[str, str] = {}
        while time.monotonic() < deadline:
            stale = {n: b["price"] for n, b in nodes_seen(client, path, 20).items()
                     if Decimal(b["price"]) != new}
            if not stale:
                break
            time.sleep(0.2)
        if stale:
            fail(f"after writing via {writer}, replicas still serve the old price: {stale}")
        print(f"    written via {writer}; every replica reached serves {new}")

        step("checking /metrics of a catalog replica (its metrics port, not the public one)")
        if client.get("/metrics").status_code != 404:
            fail("the catalog's public port serves /metrics (METRICS_PORT not set?)")
        text = metrics_in_pod(ns, f"deployment/{base}-catalog")
        missing = [m for m in CATALOG_METRICS if m not in text]
        if missing:
            fail(f"catalog /metrics lacks {missing}")

    step("checking the operator's /metrics")
    text = metrics_in_pod(ns, f"deployment/{base}-operator")
    missing = [m for m in OPERATOR_METRICS if m not in text]
    if missing:
        fail(f"operator /metrics lacks {missing}")

    step("checking that every CacheInvalidationPolicy is applied on every replica")
    deadline = time.monotonic() + 60
    behind: list[str] = ["?"]
    while time.monotonic() < deadline:
        items = json.loads(kubectl("-n", ns, "get", "cip", "-o", "json"))["items"]
        if not items:
            fail(f"no CacheInvalidationPolicy in namespace {ns}")
        behind = [f"{i['metadata']['name']} ({i.get('status', {}).get('appliedReplicas')}/"
                  f"{i.get('status', {}).get('totalReplicas')})"
                  for i in items
                  if not i.get("status", {}).get("totalReplicas")
                  or i["status"].get("appliedReplicas") != i["status"].get("totalReplicas")]
        if not behind:
            break
        time.sleep(2)
    if behind:
        fail(f"policies not in sync on every replica: {behind}")
    print(kubectl("-n", ns, "get", "cip"))
    print("kind-smoke: all checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
