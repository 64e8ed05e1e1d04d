"""Run several replicas as real ``python -m catalog serve`` processes on
loopback: used by the multi-replica tests, ``make demo`` and the benchmarks,
so all three exercise exactly what a deployment runs.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from tests.support.ports import free_port
from tests.support.process import ManagedProcess


def http_json(url: str, *, method: str = "GET", body: Any = None, timeout: float = 5.0,
              token: str | None = None) -> tuple[int, dict[str, str], Any]:
    """A tiny blocking HTTP client (standard library only): status, headers
    (lower-case names), JSON body. ``token``: the replicas' write token."""
    data = None if body is None else json.dumps(body).encode()
    headers = {"Content-Type": "application/json"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    req = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            raw, status = resp.read(), resp.status
            headers = {k.lower(): v for k, v in resp.headers.items()}
    except urllib.error.HTTPError as err:
        raw, status = err.read(), err.code
        headers = {k.lower(): v for k, v in err.headers.items()}
    return status, headers, (json.loads(raw) if raw else None)


class Replica(ManagedProcess):
    """One replica: ``python -m catalog serve`` on a loopback port (or on
    ``host``, run through ``wrapper``: the fault suite starts one with
    ``ip netns exec <ns>`` on an address inside that namespace, or under
    ``faketime``)."""

    def __init__(self, name: str, port: int, env: dict[str, str], log_path: Path, *,
                 host: str = "127.0.0.1", wrapper: Sequence[str] = ()) -> None:
        super().__init__(name, [], log_path=log_path, env=env)
        self.host = host
        self.wrapper = list(wrapper)
        self.move_to(port)

    def move_to(self, port: int) -> None:
        """Serve on ``port`` from the next start on."""
        self.port = port
        self.argv = [*self.wrapper, sys.executable, "-m", "catalog", "serve",
                     "--host", self.host, "--port", str(port)]

    def lost_its_port(self) -> bool:
        """It exited because another process took its port between
        ``free_port`` and its bind (other suites run on the same machine)."""
        return not self.alive() and "address already in use" in self.tail(30)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Until /readyz says 200 with Redis connected (when it has Redis)."""
        self.wait_until_ready(self._ready, timeout=timeout)

    def _ready(self) -> bool:
        status, _, body = http_json(self.url + "/readyz", timeout=1.0)
        return status == 200 and body.get("redis") != "degraded (L1 + database only)"


class Cluster:
    """N replicas sharing one database and (optionally) one Redis."""

    def __init__(self, n: int, *, database_url: str, redis_url: str | None, workdir: Path,
                 key_prefix: str = "hc:", ports: list[int] | None = None,
                 extra_env: Mapping[str, str] | None = None, name_prefix: str = "replica") -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.database_url = database_url
        self.redis_url = redis_url
        self.key_prefix = key_prefix
        self.replicas: list[Replica] = []
        for i in range(n):
            name = f"{name_prefix}-{i + 1}"
            env = dict(os.environ)
            env.update({"DATABASE_URL": database_url, "CACHE_KEY_PREFIX": key_prefix,
                        "NODE_NAME": name, "LOG_LEVEL": "INFO", "PYTHONUNBUFFERED": "1"})
            env.pop("REDIS_URL", None)
            if redis_url:
                env["REDIS_URL"] = redis_url
            env.update(extra_env or {})
            port = ports[i] if ports else free_port()
            self.replicas.append(Replica(name, port, env, workdir / f"{name}.log"))
        self.fixed_ports = ports is not None

    @property
    def urls(self) -> list[str]:
        return [r.url for r in self.replicas]

    def start(self, *, detach: bool = False, timeout: float = 30.0) -> Cluster:
        for replica in self.replicas:
            replica.start(detach=detach)
        try:
            for replica in self.replicas:
                for _attempt in range(3):
                    try:
                        replica.wait_ready(timeout)
                        break
                    except RuntimeError:
                        if self.fixed_ports or not replica.lost_its_port():
                            raise
                        replica.stop()
                        replica.move_to(free_port())
                        replica.start(detach=detach)
                else:
                    replica.wait_ready(timeout)
        except BaseException:
            self.stop()  # a replica that never became ready must not outlive the test
            raise
        return self

    def stop(self) -> None:
        for replica in self.replicas:  # all at once, then wait for each
            replica.send(signal.SIGTERM)
        for replica in self.replicas:
            replica.stop()

    def __enter__(self) -> Cluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def seed_database(database_url: str, products: int, *, cwd: Path | None = None) -> None:
    """Run ``python -m catalog seed`` as the operator of a deployment would."""
    env = dict(os.environ, DATABASE_URL=database_url, LOG_LEVEL="WARNING")
    subprocess.run([sys.executable, "-m", "catalog", "seed", "--products", str(products)],
                   env=env, check=True, cwd=cwd, stdout=subprocess.DEVNULL)
    # Seeding leaves one outbox row per inserted row; a relay would publish
    # them at its first start, invalidating whatever a test had just cached.
    # Start tests from a settled database, as if that had already happened.
    from tests.support import plain_sql

    plain_sql.run(database_url, "DELETE FROM cache_outbox")
