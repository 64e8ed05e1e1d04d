"""The consistency checker as a process around a Redis failover: start it,
wait until it is writing, let the test break Redis, wait for every replica
to be back on Redis, then read its summary and hold it to the promises.

The Sentinel and Cluster failover tests differ only in how they break
Redis; this is the part they share.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from tests.support.catalog_cluster import Cluster, http_json
from tests.support.ports import free_port
from tests.support.waiting import wait_until


def _writes_so_far(metrics_port: int) -> float:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=1) as r:
            text = r.read().decode()
    except OSError:  # not serving yet
        return 0.0
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("catalog_checker_writes_total{"))


@dataclass
class CheckerRun:
    """Filled in when the ``checker_during`` block ends."""

    summary: dict[str, Any] = field(default_factory=dict)
    returncode: int | None = None
    stderr: str = ""

    def assert_clean(self) -> None:
        """No read stale beyond budget, none older than a write every replica
        acknowledged, no 5xx, and the run checked acknowledged writes."""
        s = self.summary
        assert s["server_errors"] == 0, s["errors"]
        assert s["stale_reads"] == 0, (s["errors"], s["stale_examples"])
        assert s["data_types"]["price"]["writes"] > 0
        assert s["ack_probe"]["stale_reads"] == 0, s["errors"]
        assert s["ack_probe"]["writes"] > 0, s["ack_probe"]
        assert self.returncode == 0, (s, self.stderr[-2000:])


@contextmanager
def checker_during(cluster: Cluster, token: str, *, seconds: float,
                   products: str = "11-16", categories: str = "2-3") -> Iterator[CheckerRun]:
    """Run the checker against every replica of ``cluster`` for ``seconds``;
    the block runs once it has made 20 writes, and must end before it does."""
    metrics_port = free_port()
    checker = subprocess.Popen(
        [sys.executable, "-m", "catalog_checker", "--duration", f"{seconds:g}", "--seed", "5",
         "--products", products, "--categories", categories,
         "--metrics-port", str(metrics_port),
         *[a for url in cluster.urls for a in ("--url", url)]],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env=dict(os.environ, CATALOG_WRITE_TOKEN=token))
    run = CheckerRun()
    try:
        wait_until(lambda: _writes_so_far(metrics_port) >= 20, timeout=20,
                   what="the checker under way")
        yield run
        assert checker.poll() is None, "the checker ended before the fault was over"
        out, run.stderr = checker.communicate(timeout=60)
        run.summary, run.returncode = json.loads(out), checker.returncode
    finally:
        if checker.poll() is None:
            checker.kill()
            checker.wait()


def wait_every_replica_on_redis(cluster: Cluster) -> None:
    for replica in cluster.replicas:
        wait_until(lambda r=replica: http_json(r.url + "/readyz", timeout=1.0)[2]
                   .get("redis") == "ok", timeout=20, what=f"{replica.name} on Redis")
