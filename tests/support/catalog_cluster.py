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
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.support.redis_server import free_port


def http_json(url: str, *, method: str = "GET", body: Any = None,
              timeout: float = 5.0) -> tuple[int, dict[str, str], Any]:
    """A tiny blocking HTTP client (standard library only): status, headers
    (lower-case names), JSON body."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method,
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            raw, status = resp.read(), resp.status
            headers = {k.lower(): v for k, v in resp.headers.items()}
    except urllib.error.HTTPError as err:
        raw, status = err.read(), err.code
        headers = {k.lower(): v for k, v in err.headers.items()}
    return status, headers, (json.loads(raw) if raw else None)


@dataclass
class Replica:
    """One replica process."""

    name: str
    port: int
    env: dict[str, str]
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None
    _log: Any = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, *, detach: bool = False) -> None:
        self._log = open(self.log_path, "ab")  # noqa: SIM115 (lives as long as the process)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "catalog", "serve", "--host", "127.0.0.1",
             "--port", str(self.port)],
            env=self.env, stdout=self._log, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=detach,
        )

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Poll /readyz (the only readiness signal a process offers) until 200."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"replica {self.name} exited with {self.proc.returncode};"
                                   f" log: {self.log_path}\n{self.tail()}")
            try:
                status, _, body = http_json(self.url + "/readyz", timeout=1.0)
                if status == 200 and body.get("redis") != "degraded (L1 + database only)":
                    return
            except (OSError, ValueError):
                pass
            time.sleep(0.05)
        raise RuntimeError(f"replica {self.name} not ready after {timeout}s\n{self.tail()}")

    def tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self._log is not None:
            self._log.close()
            self._log = None

    def kill(self) -> None:
        self.stop(signal.SIGKILL)


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

    @property
    def urls(self) -> list[str]:
        return [r.url for r in self.replicas]

    def start(self, *, detach: bool = False, timeout: float = 30.0) -> Cluster:
        for replica in self.replicas:
            replica.start(detach=detach)
        for replica in self.replicas:
            replica.wait_ready(timeout)
        return self

    def stop(self) -> None:
        for replica in self.replicas:
            if replica.alive() and replica.proc is not None:
                replica.proc.send_signal(signal.SIGTERM)
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
