"""Connection-level limits of a real ``python -m catalog serve`` process, from
raw sockets: an endless header gets 431 at the limit with memory flat and
``/healthz`` answering meanwhile, a long target gets 414, slow and idle
connections are closed within their timeouts, and above the connection bound
requests get 503 while the probes still answer."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.catalog_cluster import Cluster, Replica, http_json
from tests.support.waiting import eventually

pytestmark = pytest.mark.slow  # real replica processes attacked over raw sockets

HEAD_LIMIT = 16 * 1024
ATTACK_BYTES = 96 * 1024 * 1024
CHUNK = b"a" * 65536
# Generous upper bounds: never reached unless the limit does not work.
GIVE_UP = 30.0


def _replica(tmp_path_factory: pytest.TempPathFactory, sqlite_db: str,
             env: dict[str, str]) -> Iterator[Replica]:
    workdir: Path = tmp_path_factory.mktemp("limits")
    with Cluster(1, database_url=sqlite_db, redis_url=None, workdir=workdir,
                 extra_env=env) as cluster:
        yield cluster.replicas[0]


@pytest.fixture(scope="module")
def sqlite_db(tmp_path_factory: pytest.TempPathFactory) -> str:
    from tests.support.catalog_cluster import seed_database

    url = f"sqlite+aiosqlite:///{tmp_path_factory.mktemp('limits-db') / 'catalog.db'}"
    seed_database(url, 5)
    return url


@pytest.fixture(scope="module")
def replica(tmp_path_factory: pytest.TempPathFactory, sqlite_db: str) -> Iterator[Replica]:
    """Default size limits, short timeouts (1 s) so the tests wait little."""
    yield from _replica(tmp_path_factory, sqlite_db,
                        {"HTTP_HEADER_TIMEOUT": "1", "HTTP_KEEPALIVE_TIMEOUT": "1"})


@pytest.fixture(scope="module")
def small_replica(tmp_path_factory: pytest.TempPathFactory, sqlite_db: str) -> Iterator[Replica]:
    """At most 4 connections, long timeouts (connections stay while the test holds them)."""
    yield from _replica(tmp_path_factory, sqlite_db,
                        {"HTTP_MAX_CONNECTIONS": "4", "HTTP_KEEPALIVE_TIMEOUT": "60",
                         "HTTP_HEADER_TIMEOUT": "60"})


def _connect(replica: Replica) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", replica.port), timeout=GIVE_UP)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def _read_response(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """One whole response (Content-Length framed) from a raw socket."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"connection closed before a response: {data!r}"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    while len(body) < int(headers.get("content-length", "0")):
        chunk = sock.recv(65536)
        assert chunk, "connection closed inside the body"
        body += chunk
    return int(lines[0].split()[1]), headers, body


def _closed_by_server(sock: socket.socket) -> bytes:
    """Everything the server still sends, up to its close (recv returns b'')."""
    received = b""
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            return received
        received += chunk


def _peak_rss_kib(replica: Replica) -> int:
    assert replica.proc is not None
    for line in Path(f"/proc/{replica.proc.pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError("no VmHWM in /proc/<pid>/status")


def _header_attack(replica: Replica) -> tuple[int, dict[str, object], int]:
    """Stream a 96 MB header value on one connection; return the status and
    JSON body the server answered with and how many bytes were sent."""
    sock = _connect(replica)
    sent = 0
    done = threading.Event()

    def stream() -> None:
        nonlocal sent
        try:
            sock.sendall(b"GET /products/1 HTTP/1.1\r\nHost: x\r\nX-Flood: ")
            while sent < ATTACK_BYTES and not done.is_set():
                sent += sock.send(CHUNK)
        except OSError:
            pass  # the server closed the connection: what it should do

    sender = threading.Thread(target=stream, daemon=True)
    sender.start()
    try:
        status, _, body = _read_response(sock)
    finally:
        done.set()
        sender.join(GIVE_UP)
        sock.close()
    return status, json.loads(body), sent


def test_huge_header_gets_431_at_the_limit_and_memory_stays_flat(replica: Replica) -> None:
    assert http_json(replica.url + "/products/1")[0] == 200  # warm
    before = _peak_rss_kib(replica)
    status, body, sent = _header_attack(replica)
    assert status == 431, body
    assert body["error"] == "header_too_large" and str(HEAD_LIMIT) in str(body["detail"])
    assert sent < ATTACK_BYTES  # answered (and stopped) long before the stream ended
    grown = _peak_rss_kib(replica) - before
    assert grown < 8 * 1024, f"peak RSS grew by {grown} KiB during the attack"
    assert http_json(replica.url + "/products/1")[0] == 200


def test_healthz_answers_while_header_attacks_run(replica: Replica) -> None:
    stop = threading.Event()
    answers: list[int] = []

    def attack() -> None:
        while not stop.is_set():
            answers.append(_header_attack(replica)[0])

    attackers = [threading.Thread(target=attack, daemon=True) for _ in range(3)]
    for thread in attackers:
        thread.start()
    try:
        eventually_attacked = time.monotonic() + GIVE_UP
        while not answers and time.monotonic() < eventually_attacked:
            status, _, body = http_json(replica.url + "/healthz", timeout=GIVE_UP)
            assert status == 200 and body["status"] == "ok"
        for _ in range(20):
            status, _, body = http_json(replica.url + "/healthz", timeout=GIVE_UP)
            assert status == 200 and body["status"] == "ok"
    finally:
        stop.set()
        for thread in attackers:
            thread.join(GIVE_UP)
    assert answers and set(answers) == {431}


def test_long_request_target_is_414(replica: Replica) -> None:
    with _connect(replica) as sock:
        sock.sendall(b"GET /products/1?" + b"x" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n")
        status, headers, body = _read_response(sock)
    assert status == 414 and headers["content-type"] == "application/json"
    assert json.loads(body)["error"] == "uri_too_long"


def test_many_small_headers_add_up_to_431(replica: Replica) -> None:
    headers = b"".join(b"X-H%d: %s\r\n" % (i, b"v" * 100) for i in range(200))
    with _connect(replica) as sock:
        sock.sendall(b"GET /products/1 HTTP/1.1\r\nHost: x\r\n" + headers + b"\r\n")
        status, _, body = _read_response(sock)
    assert status == 431, body


def test_head_just_under_the_limit_is_served(replica: Replica) -> None:
    request = b"GET /products/1 HTTP/1.1\r\nHost: x\r\nX-Pad: "
    padding = HEAD_LIMIT - len(request) - len(b"\r\n\r\n")
    with _connect(replica) as sock:
        sock.sendall(request + b"p" * padding + b"\r\n\r\n")
        status, _, _ = _read_response(sock)
    assert status == 200


def test_slow_header_is_cut_off_after_the_header_timeout(replica: Replica) -> None:
    """Slowloris: a byte every 0.2 s keeps the idle timer quiet; the header
    timer (1 s from the first byte) still ends it with 408."""
    with _connect(replica) as sock:
        sock.sendall(b"GET /products/1 HTTP/1.1\r\nHost: x\r\n")
        sock.settimeout(0.2)
        answer = b""
        deadline = time.monotonic() + GIVE_UP
        while time.monotonic() < deadline:
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                try:
                    sock.sendall(b"X")  # one more byte of a header name
                except OSError:
                    break
                continue
            except ConnectionResetError:
                break
            if not chunk:
                break
            answer += chunk
        else:
            pytest.fail(f"slow connection still open after {GIVE_UP} s")
    assert answer.startswith(b"HTTP/1.1 408 "), answer
    assert b'"error":"request_timeout"' in answer


def test_idle_connection_is_closed(replica: Replica) -> None:
    """Never sends a byte: closed after the keep-alive timeout (1 s here)."""
    with _connect(replica) as sock:
        assert _closed_by_server(sock) == b""


def test_idle_keepalive_connection_is_closed_after_a_response(replica: Replica) -> None:
    with _connect(replica) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert _read_response(sock)[0] == 200
        assert _closed_by_server(sock) == b""


def test_above_the_connection_bound_requests_get_503_but_probes_answer(
        small_replica: Replica) -> None:
    held = [_connect(small_replica) for _ in range(4)]
    try:
        for sock in held:  # each accepted and idle on keep-alive
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            assert _read_response(sock)[0] == 200
        status, headers, body = http_json(small_replica.url + "/products/1")
        assert status == 503 and body["error"] == "unavailable", body
        assert headers["retry-after"] == "1"
        for probe in ("/healthz", "/readyz"):
            assert http_json(small_replica.url + probe)[0] == 200
    finally:
        for sock in held:
            sock.close()

    import asyncio

    async def served() -> bool:
        return http_json(small_replica.url + "/products/1")[0] == 200

    asyncio.run(eventually(served, timeout=GIVE_UP))
