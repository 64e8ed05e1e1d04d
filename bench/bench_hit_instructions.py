"""Instructions per cached ``GET /products/{id}``: the catalog vs a bare
Starlette endpoint returning the same JSON, counted by valgrind's callgrind.

Wall-clock request rates on a shared machine move with whatever else runs;
instruction counts do not. Each server is the real thing (uvicorn, httptools,
uvloop; the catalog through ``python -m catalog serve``, so with its protocol
subclass, middleware, routing, metrics and L1) running under
``valgrind --tool=callgrind``; the client is this process, outside valgrind, on
one keep-alive connection. After a warm-up the counters are zeroed
(``callgrind_control -z``), N requests are sent, and the counters are dumped
(``callgrind_control -d``): the total is the server's instructions for exactly
those N requests, the kernel excluded.

The catalog runs without Redis (L1 and SQLite) and with its outbox relay's
polling slowed down, so no timer work lands between the zero and the dump;
the hit path is the same with Redis (a hit never touches it).

Run: ``.venv/bin/python -m bench bench_hit_instructions`` (about two minutes;
``BENCH_REQUESTS`` sets N, default 2000). Keep the dumps with
``BENCH_KEEP=dir``, then ``callgrind_annotate dir/catalog.out.*``.
The target ratio (bare/catalog instructions) mirrors bench_catalog_http's.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PRODUCT = 42
REQUESTS = int(os.environ.get("BENCH_REQUESTS", "2000"))
WARMUP = 500
TARGET = 0.95


class Client:
    """One blocking keep-alive HTTP/1.1 connection (the load is not measured)."""

    def __init__(self, port: int, path: str) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=120)
        self.request = f"GET {path} HTTP/1.1\r\nHost: bench\r\n\r\n".encode()
        self.buffer = b""

    def get(self) -> tuple[bytes, bytes]:
        self.sock.sendall(self.request)
        while b"\r\n\r\n" not in self.buffer:
            self._more()
        head, _, self.buffer = self.buffer.partition(b"\r\n\r\n")
        match = re.search(rb"(?i)content-length:\s*(\d+)", head)
        if not head.startswith(b"HTTP/1.1 200") or match is None:
            raise RuntimeError(head.decode(errors="replace"))
        length = int(match.group(1))
        while len(self.buffer) < length:
            self._more()
        body, self.buffer = self.buffer[:length], self.buffer[length:]
        return head, body

    def _more(self) -> None:
        chunk = self.sock.recv(65536)
        if not chunk:
            raise RuntimeError("server closed the connection")
        self.buffer += chunk

    def close(self) -> None:
        self.sock.close()


def _connect(port: int, path: str, timeout: float = 300.0) -> Client:
    deadline = time.monotonic() + timeout
    while True:
        try:
            client = Client(port, path)
            client.get()
            return client
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def _control(flag: str, pid: int) -> None:
    subprocess.run(["callgrind_control", flag, str(pid)], check=True,
                   capture_output=True, timeout=120)


def _count(name: str, argv: list[str], env: dict[str, str], port: int, path: str,
           work: Path) -> tuple[int, bytes, bytes]:
    """(instructions for REQUESTS requests, last response head, body)."""
    out = work / f"{name}.out"
    cmd = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}.%p",
           "--dump-instr=no", *argv]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        client = _connect(port, path)
        for _ in range(WARMUP):
            client.get()
        _control("-z", proc.pid)
        for _ in range(REQUESTS):
            head, body = client.get()
        _control("-d", proc.pid)
        client.close()
        dumps = sorted(work.glob(f"{name}.out.{proc.pid}.*"), key=lambda p: p.stat().st_mtime)
        text = dumps[-1].read_text()
        match = re.search(r"^(?:summary|totals): (\d+)", text, re.M)
        if match is None:
            raise RuntimeError(f"no totals in {dumps[-1]}")
        return int(match.group(1)), head, body
    finally:
        proc.terminate()
        proc.wait(60)


def main() -> int:
    if shutil.which("valgrind") is None or shutil.which("callgrind_control") is None:
        print("valgrind (callgrind) is not installed: skipped")
        return 0
    root = Path(__file__).resolve().parent.parent
    sys.path.insert(0, str(root))
    from tests.support.catalog_cluster import seed_database
    from tests.support.ports import free_port

    keep = os.environ.get("BENCH_KEEP")
    with tempfile.TemporaryDirectory(prefix="bench-instr-") as tmp:
        work = Path(keep) if keep else Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        database_url = f"sqlite+aiosqlite:///{Path(tmp) / 'catalog.db'}"
        seed_database(database_url, 100)
        env = dict(os.environ, DATABASE_URL=database_url, LOG_LEVEL="WARNING",
                   NODE_NAME="bench", RELAY_POLL_INTERVAL="3600", RELAY_LEASE="7200")
        env.pop("REDIS_URL", None)
        path = f"/products/{PRODUCT}"
        port = free_port()
        catalog, head, body = _count(
            "catalog", [sys.executable, "-m", "catalog", "serve", "--port", str(port)],
            env, port, path, work)
        if b"x-cache: product=l1, price=l1, stock=l1" not in head.lower():
            raise RuntimeError(f"not an L1 hit:\n{head.decode()}")
        port = free_port()
        bare, _, bare_body = _count(
            "bare", [sys.executable, str(Path(__file__).with_name("bench_catalog_http.py")),
                     "--bare", str(port), body.decode()], env, port, path, work)
        assert bare_body == body
    per_cat, per_bare = catalog / REQUESTS, bare / REQUESTS
    ratio = per_bare / per_cat
    print(f"server instructions per request (callgrind, {REQUESTS} requests after"
          f" {WARMUP} warm-up, one keep-alive connection):")
    print(f"  bare Starlette GET {path} (same JSON): {per_bare:9.0f}")
    print(f"  catalog GET {path} (L1 hits x3):       {per_cat:9.0f}"
          f"  ({per_cat - per_bare:+.0f})")
    print(f"ratio bare/catalog (the catalog's speed as a fraction of bare): {ratio:.3f}x"
          f" target >= {TARGET}x -> {'OK' if ratio >= TARGET else 'BELOW TARGET'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
