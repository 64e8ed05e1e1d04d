"""Clock skew of ±5 s under the consistency checker: of 3 real replicas,
one runs 5 s ahead and one 5 s behind (libfaketime, from Debian's
``faketime``, preloaded into the replica process: wall clock only, monotonic
time left alone), the third on the true clock. Versions and lag are taken
on Redis's clock, so the skew must change nothing the checker can see.
"""

from __future__ import annotations

import glob
import re
import secrets
from collections.abc import Iterator

import httpx
import pytest

from tests.support.catalog_cluster import Cluster
from tests.support.redis_server import RedisServer

from . import harness
from .harness import WRITE_TOKEN, run_pass

pytestmark = [pytest.mark.slow, pytest.mark.postgres]
SKEWS = {"replica-1": 5.0, "replica-2": -5.0, "replica-3": 0.0}
_SKEW = re.compile(r'^hybridcache_clock_skew_seconds\{node="([^"]+)"\} (\S+)$', re.M)


def _libfaketime() -> str | None:
    found = sorted(glob.glob("/usr/lib/*/faketime/libfaketimeMT.so.1")
                   + glob.glob("/usr/lib/faketime/libfaketimeMT.so.1"))
    return found[0] if found else None


@pytest.fixture(scope="module")
def cluster(faults_database: str, redis: RedisServer,
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    library = _libfaketime()
    if library is None:
        pytest.skip("libfaketime is not installed (Debian package faketime; make test installs it)")
    c = Cluster(3, database_url=faults_database, redis_url=redis.url,
                workdir=tmp_path_factory.mktemp("skewed-replicas"),
                key_prefix=f"s{secrets.token_hex(3)}:",
                extra_env={"CATALOG_WRITE_TOKEN": WRITE_TOKEN})
    for replica in c.replicas:
        skew = SKEWS[replica.name]
        if skew:
            assert replica.env is not None
            replica.env.update({"LD_PRELOAD": library, "FAKETIME": f"{skew:+g}s",
                                "FAKETIME_DONT_FAKE_MONOTONIC": "1",
                                "FAKETIME_DONT_RESET": "1"})
    with c:
        harness.publish_suite_policies(redis.url, c.key_prefix, [r.name for r in c.replicas])
        yield c


def _skews(cluster: Cluster) -> dict[str, float]:
    """Each replica's measured offset from Redis's clock (its own gauge)."""
    found: dict[str, float] = {}
    with httpx.Client(timeout=5.0) as client:
        for replica in cluster.replicas:
            for node, value in _SKEW.findall(client.get(f"{replica.url}/metrics").text):
                if node == replica.name:
                    found[node] = float(value)
    return found


def test_clock_skew_of_five_seconds_either_way(cluster: Cluster, faults_database: str) -> None:
    result = run_pass("clock skew ±5 s (libfaketime)", cluster.urls, faults_database,
                      inject=lambda: None, heal=lambda: None, window=3.0)
    # The skew was real: each replica measured its own offset from Redis.
    measured = _skews(cluster)
    for name, skew in SKEWS.items():
        assert abs(measured[name] - skew) < 1.0, measured
    result.check()
