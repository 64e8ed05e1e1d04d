"""A Sentinel-managed Redis on loopback: a master, a replica and three
sentinels, each a real ``redis-server`` process (``--sentinel`` for the
sentinels), with failure detection tuned down so a failover takes about a
second instead of half a minute. Tests kill the master (``kill -9``) and
wait for the sentinels to promote the replica."""

from __future__ import annotations

import shutil
import socket
import tempfile
from dataclasses import dataclass
from pathlib import Path

from tests.support.ports import free_port
from tests.support.process import ManagedProcess
from tests.support.redis_server import RedisServer
from tests.support.waiting import wait_until

MASTER_NAME = "hcmaster"


@dataclass(frozen=True)
class TlsFiles:
    """PEM files: the CA, and a certificate + key it signed for 127.0.0.1."""

    ca: Path
    cert: Path
    key: Path

    def server_args(self) -> tuple[str, ...]:
        return ("--tls-cert-file", str(self.cert), "--tls-key-file", str(self.key),
                "--tls-ca-cert-file", str(self.ca), "--tls-auth-clients", "no",
                "--tls-replication", "yes")


class Sentinels:
    """master + replica + 3 sentinels (quorum 2). With ``tls``, servers and
    sentinels also listen on TLS ports, replicate and monitor over TLS, and
    ``url()`` names the sentinels' TLS ports (the plain ones stay open for
    the test's own redis-cli)."""

    def __init__(self, *, down_after_ms: int = 400, failover_timeout_ms: int = 2000,
                 tls: TlsFiles | None = None) -> None:
        self.down_after_ms = down_after_ms
        self.failover_timeout_ms = failover_timeout_ms
        self.tls = tls
        self.tls_ports: dict[int, int] = {}  # a server's or sentinel's plain port -> TLS port
        self.master = self._server()
        self.replica = self._server("--replicaof", "127.0.0.1", str(self._announced(self.master)))
        self.ports = [free_port() for _ in range(3)]
        if tls is not None:
            self.tls_ports |= {p: free_port() for p in self.ports}
        self.dir = Path(tempfile.mkdtemp(prefix="hc-sentinel-"))
        self.sentinels: list[ManagedProcess] = []

    def _server(self, *args: str) -> RedisServer:
        # A master waits 5 s by default for more replicas before a diskless
        # full sync: not here.
        args = ("--repl-diskless-sync-delay", "0", *args)
        if self.tls is None:
            return RedisServer(args=args)
        tls_port = free_port()
        server = RedisServer(args=("--tls-port", str(tls_port), *self.tls.server_args(), *args))
        self.tls_ports[server.port] = tls_port
        return server

    def _announced(self, server: RedisServer) -> int:
        """The port the sentinels know a server by."""
        return self.tls_ports.get(server.port, server.port)

    def url(self, db: int = 0, auth: str = "") -> str:
        hosts = ",".join(f"127.0.0.1:{self.tls_ports.get(p, p)}" for p in self.ports)
        scheme = "rediss+sentinel" if self.tls else "redis+sentinel"
        return f"{scheme}://{auth}{hosts}/{MASTER_NAME}/{db}"

    def start(self) -> Sentinels:
        self.master.start()
        self.replica.start()
        wait_until(lambda: "master_link_status:up" in self.replica.cli("info", "replication"),
                   timeout=15, what="the replica to sync")
        for i, port in enumerate(self.ports):
            conf = self.dir / f"sentinel-{port}.conf"
            tls = ""
            if self.tls is not None:
                tls = (f"tls-port {self.tls_ports[port]}\ntls-replication yes\n"
                       f"tls-cert-file {self.tls.cert}\ntls-key-file {self.tls.key}\n"
                       f"tls-ca-cert-file {self.tls.ca}\ntls-auth-clients no\n")
            # Introduced to each other and to the replica up front (ids of
            # our own choosing): learning it from hello messages, sent every
            # 2 s, would cost each test several seconds.
            known = "".join(
                f"sentinel known-sentinel {MASTER_NAME} 127.0.0.1 {self.tls_ports.get(p, p)}"
                f" {_sentinel_id(p)}\n" for p in self.ports if p != port)
            conf.write_text(
                f"port {port}\nbind 127.0.0.1\ndir {self.dir}\n{tls}"
                f"logfile {self.dir / f'sentinel-{port}.log'}\n"
                f"sentinel myid {_sentinel_id(port)}\n"
                f"sentinel monitor {MASTER_NAME} 127.0.0.1 {self._announced(self.master)} 2\n"
                f"{known}sentinel known-replica {MASTER_NAME} 127.0.0.1"
                f" {self._announced(self.replica)}\n"
                f"sentinel down-after-milliseconds {MASTER_NAME} {self.down_after_ms}\n"
                f"sentinel failover-timeout {MASTER_NAME} {self.failover_timeout_ms}\n"
                f"sentinel parallel-syncs {MASTER_NAME} 1\n")
            process = ManagedProcess(f"sentinel:{port}", ["redis-server", str(conf), "--sentinel"],
                                     log_path=self.dir / f"stdout-{i}.log").start()
            self.sentinels.append(process)
            process.wait_until_ready(lambda port=port: _pong(port), timeout=10)
        # Failover needs every sentinel to know the others and the replica
        # (learned from hello messages, about every 2 s).
        wait_until(self._all_known, timeout=20, interval=0.1,
                   what="the sentinels to discover each other and the replica")
        return self

    def _master_info(self, port: int) -> dict[str, str]:
        out = _cli(port, "sentinel", "master", MASTER_NAME).splitlines()
        return dict(zip(out[::2], out[1::2], strict=False))

    def _all_known(self) -> bool:
        return all(
            (info := self._master_info(p)).get("num-other-sentinels") == "2"
            and info.get("num-slaves") == "1" for p in self.ports)

    def master_port(self) -> int:
        """The master's port as the first sentinel reports it."""
        return int(_cli(self.ports[0], "sentinel", "get-master-addr-by-name",
                        MASTER_NAME).splitlines()[1])

    def kill_master(self) -> RedisServer:
        """kill -9 the current master; returns the server that should take over."""
        old, new = ((self.master, self.replica)
                    if self.master_port() == self._announced(self.master)
                    else (self.replica, self.master))
        old.kill()
        return new

    def failover(self) -> None:
        """A manual failover (SENTINEL FAILOVER): the master is demoted, alive."""
        _cli(self.ports[0], "sentinel", "failover", MASTER_NAME)

    def wait_failover(self, to: RedisServer, timeout: float = 20.0) -> None:
        wait_until(lambda: all(int(_cli(p, "sentinel", "get-master-addr-by-name",
                                        MASTER_NAME).splitlines()[1]) == self._announced(to)
                               for p in self.ports),
                   timeout=timeout, interval=0.05, what=f"the sentinels to promote :{to.port}")

    def stop(self) -> None:
        for process in self.sentinels:
            process.stop(timeout=5.0)
        self.sentinels = []
        for server in (self.master, self.replica):
            server.stop()
            shutil.rmtree(server.dir, ignore_errors=True)
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> Sentinels:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _sentinel_id(port: int) -> str:
    return f"{port:040x}"


def _pong(port: int) -> bool:
    with socket.create_connection(("127.0.0.1", port), timeout=0.2) as s:
        s.sendall(b"PING\r\n")
        return s.recv(16).startswith(b"+PONG")


def _cli(port: int, *args: str) -> str:
    import subprocess

    out = subprocess.run(["redis-cli", "-p", str(port), *args], capture_output=True,
                         text=True, timeout=10, check=True)
    return out.stdout.strip()
