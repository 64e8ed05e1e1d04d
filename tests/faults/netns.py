"""A network namespace for one replica, with two veth links to the root
namespace, all created (and removed) by the test that uses it.

* the **Redis link** (``10.213.1.1`` root side, ``10.213.1.2`` inside): the
  only way the replica reaches Redis. Cutting it (``ip link set down`` on the
  root side) partitions the replica from Redis; a ``netem`` qdisc on it makes
  it slow.
* the **service link** (``10.213.2.1`` / ``10.213.2.2``): the replica serves
  HTTP on ``10.213.2.2`` (the checker, in the root namespace, keeps reaching
  it while the Redis link is cut) and reaches PostgreSQL through a forwarder
  on ``10.213.2.1`` (PostgreSQL listens on the root namespace's
  loopback, which a namespace does not share).

Only addresses inside these links are used. ``close`` removes the namespace
(which takes its veth ends, their peers and any qdisc on them along) and
anything left in the root namespace, even after a failed ``create``.
"""

from __future__ import annotations

import contextlib
import secrets
import shutil
import subprocess
import sys

REDIS_HOST, REDIS_NS = "10.213.1.1", "10.213.1.2"
SERVICE_HOST, SERVICE_NS = "10.213.2.1", "10.213.2.2"


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True, timeout=10)


def unavailable() -> str | None:
    """Why namespaces cannot be used here (None if they can): no ``ip``, or
    ``ip netns add`` not permitted (no CAP_SYS_ADMIN/CAP_NET_ADMIN)."""
    if shutil.which("ip") is None:
        return "iproute2 (ip) is not installed"
    name = f"faults-probe-{secrets.token_hex(3)}"
    try:
        _ip("netns", "add", name)
    except subprocess.CalledProcessError as exc:
        return f"ip netns add is not permitted here: {exc.stderr.strip()}"
    _ip("netns", "del", name)
    return None


class Namespace:
    def __init__(self) -> None:
        tag = secrets.token_hex(3)
        self.name = f"faults-{tag}"
        self.redis_host_if, self.redis_ns_if = f"fr{tag}h", f"fr{tag}n"
        self.service_host_if, self.service_ns_if = f"fs{tag}h", f"fs{tag}n"

    def create(self) -> Namespace:
        try:
            _ip("netns", "add", self.name)
            _ip("-n", self.name, "link", "set", "lo", "up")
            for host_if, ns_if, host_addr, ns_addr in (
                    (self.redis_host_if, self.redis_ns_if, REDIS_HOST, REDIS_NS),
                    (self.service_host_if, self.service_ns_if, SERVICE_HOST, SERVICE_NS)):
                _ip("link", "add", host_if, "type", "veth", "peer", "name", ns_if)
                _ip("link", "set", ns_if, "netns", self.name)
                _ip("addr", "add", f"{host_addr}/24", "dev", host_if)
                _ip("link", "set", host_if, "up")
                _ip("-n", self.name, "addr", "add", f"{ns_addr}/24", "dev", ns_if)
                _ip("-n", self.name, "link", "set", ns_if, "up")
        except BaseException:
            self.close()
            raise
        return self

    def exec_prefix(self) -> list[str]:
        return ["ip", "netns", "exec", self.name]

    def cut_redis(self) -> None:
        _ip("link", "set", self.redis_host_if, "down")

    def restore_redis(self) -> None:
        _ip("link", "set", self.redis_host_if, "up")

    def slow_redis(self, delay_ms: int) -> None:
        """Delay every packet the replica sends to Redis (``tc netem``)."""
        subprocess.run(["tc", "-n", self.name, "qdisc", "add", "dev", self.redis_ns_if, "root",
                        "netem", "delay", f"{delay_ms}ms"],
                       check=True, capture_output=True, text=True, timeout=10)

    def netem_missing(self) -> str | None:
        """Why ``tc netem`` cannot be used here (None if it can)."""
        if shutil.which("tc") is None:
            return "tc (iproute2) is not installed"
        try:
            self.slow_redis(0)
        except subprocess.CalledProcessError as exc:
            return f"tc netem refused: {exc.stderr.strip()}"
        self.clear_qdisc()
        return None

    def clear_qdisc(self) -> None:
        subprocess.run(["tc", "-n", self.name, "qdisc", "del", "dev", self.redis_ns_if, "root"],
                       capture_output=True, text=True, timeout=10)

    def qdiscs(self) -> str:
        return subprocess.run(["tc", "-n", self.name, "qdisc", "show", "dev", self.redis_ns_if],
                              capture_output=True, text=True, timeout=10).stdout

    def redis_round_trip(self, port: int) -> float:
        """Seconds one PING to ``REDIS_HOST:port`` takes from inside the
        namespace (measured there, so process start-up is not counted)."""
        probe = ("import socket, time\n"
                 f"s = socket.create_connection(({REDIS_HOST!r}, {port}), timeout=10)\n"
                 "t = time.monotonic(); s.sendall(b'PING\\r\\n'); s.recv(16)\n"
                 "print(time.monotonic() - t)")
        out = subprocess.run([*self.exec_prefix(), sys.executable, "-c", probe],
                             check=True, capture_output=True, text=True, timeout=30)
        return float(out.stdout)

    def close(self) -> None:
        with contextlib.suppress(subprocess.CalledProcessError):
            _ip("netns", "del", self.name)
        for host_if in (self.redis_host_if, self.service_host_if):
            with contextlib.suppress(subprocess.CalledProcessError):
                _ip("link", "del", host_if)

    def exists(self) -> bool:
        out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True,
                             timeout=10).stdout
        return any(line.split()[0] == self.name for line in out.splitlines() if line.strip())
