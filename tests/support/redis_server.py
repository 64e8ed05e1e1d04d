"""A private ``redis-server`` per test (or per module) that tests may stop,
restart, or cut clients off from, without touching anyone else's Redis."""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

from tests.support.ports import free_port
from tests.support.process import ManagedProcess


class RedisServer:
    """One redis-server process on a loopback port; keeps nothing on disk."""

    def __init__(self, port: int | None = None, *, args: tuple[str, ...] = ()) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed (make test installs it)")
        self.binary = binary
        self.port = port or free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="hc-redis-"))
        self.args = args  # more redis-server options (TLS, replicaof, ...)
        self.process: ManagedProcess | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def pid(self) -> int:
        assert self.process is not None, "redis-server is not running"
        return self.process.pid

    def start(self) -> RedisServer:
        self.process = ManagedProcess(
            f"redis-server:{self.port}",
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1",
             "--save", "", "--appendonly", "no", "--dir", str(self.dir),
             "--loglevel", "warning", "--logfile", str(self.dir / "redis.log"), *self.args],
            log_path=self.dir / "stdout.log").start()
        self.process.wait_until_ready(self._pong, timeout=10.0, interval=0.02)
        return self

    def _pong(self) -> bool:
        # A PING answered is the only readiness signal redis-server offers.
        with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as s:
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop(timeout=5.0)
        self.process = None

    def kill(self) -> None:
        if self.process is not None:
            self.process.kill()
        self.process = None

    def pause(self) -> None:
        """SIGSTOP: connections stay open but nothing is answered."""
        assert self.process is not None
        self.process.pause()

    def resume(self) -> None:
        assert self.process is not None
        self.process.resume()

    def restart(self) -> None:
        self.stop()
        self.start()

    def cli(self, *args: str) -> str:
        out = subprocess.run(["redis-cli", "-p", str(self.port), *args],
                             capture_output=True, text=True, timeout=10, check=True)
        return out.stdout.strip()

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)
