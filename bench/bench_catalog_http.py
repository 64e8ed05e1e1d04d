"""Cached ``GET /products/{id}`` on one catalog replica vs a bare Starlette
endpoint returning the same JSON: same uvicorn settings (uvloop, httptools,
no access log, one process), same load generator (wrk when installed, else a
Python keep-alive client in its own process), measured in the same run.

Target: catalog >= 0.95x bare. Run: ``.venv/bin/python -m bench bench_catalog_http``.
Wall-clock rates move with the machine's load; ``bench_hit_instructions``
counts the same two servers' instructions per request, which do not.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil

PRODUCT = 42
SECONDS = float(os.environ.get("BENCH_SECONDS", "2"))
CONNECTIONS = 32
RUNS = int(os.environ.get("BENCH_RUNS", "7"))
TARGET = 0.95


# ---------------------------------------------------------------- bare server

def serve_bare(port: int, body: bytes) -> None:
    """The peer: Starlette + uvicorn, one route, the same bytes every time."""
    import uvicorn
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

    async def product(request: Request) -> Response:
        int(request.path_params["id"])
        return Response(body, media_type="application/json")

    app = Starlette(routes=[Route("/products/{id}", product, methods=["GET"])])
    uvicorn.run(app, host="127.0.0.1", port=port, loop="uvloop", http="httptools",
                access_log=False, log_level="warning", server_header=False)


# ---------------------------------------------------------------- load generators

def wrk(url: str, seconds: float) -> tuple[float, int]:
    """(requests per second, requests completed)."""
    out = subprocess.run(["wrk", "-t1", f"-c{CONNECTIONS}", f"-d{seconds:g}s", url],
                         capture_output=True, text=True, check=True).stdout
    rate = re.search(r"Requests/sec:\s+([\d.]+)", out)
    count = re.search(r"(\d+) requests in", out)
    if rate is None or count is None or "Non-2xx" in out:
        raise RuntimeError(f"wrk failed or saw errors:\n{out}")
    return float(rate.group(1)), int(count.group(1))


async def _pyload(host: str, port: int, path: str, seconds: float) -> tuple[float, int]:
    request = f"GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode()
    done = 0
    deadline = time.monotonic() + seconds

    async def conn() -> None:
        nonlocal done
        reader, writer = await asyncio.open_connection(host, port)
        while time.monotonic() < deadline:
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            if not head.startswith(b"HTTP/1.1 200"):
                raise RuntimeError(head.decode(errors="replace"))
            length = int(re.search(rb"(?i)content-length:\s*(\d+)", head).group(1))  # type: ignore[union-attr]
            await reader.readexactly(length)
            done += 1
        writer.close()

    started = time.monotonic()
    await asyncio.gather(*[conn() for _ in range(CONNECTIONS)])
    return done / (time.monotonic() - started), done


def pyload(url: str, seconds: float) -> tuple[float, int]:
    """The fallback load generator, in its own process so it does not share the
    server's interpreter."""
    out = subprocess.run([sys.executable, __file__, "--load", url, str(seconds)],
                         capture_output=True, text=True, check=True).stdout
    rate, count = out.strip().splitlines()[-1].split()
    return float(rate), int(count)


def measured(load: Any, url: str, pid: int, seconds: float) -> tuple[float, float]:
    """Run the load; return (requests/s, requests per CPU-second of the server).

    The second figure is what one server core can do, and depends much less on
    whatever else the (shared, 2-core) machine is running than wall-clock req/s.
    """
    proc = psutil.Process(pid)
    before = proc.cpu_times()
    rate, count = load(url, seconds)
    after = proc.cpu_times()
    cpu = (after.user - before.user) + (after.system - before.system)
    return rate, count / cpu if cpu > 0 else float("nan")


def pin(server_pids: list[int]) -> str:
    """Servers on the last CPU, the load generator (this process and what it
    starts) on the others: on a 2-core machine the two would otherwise fight
    for the same core, and the ratio would measure the scheduler."""
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        return "not pinned (one CPU)"
    for pid in server_pids:
        psutil.Process(pid).cpu_affinity([cpus[-1]])
    os.sched_setaffinity(0, cpus[:-1])
    return f"servers pinned to CPU {cpus[-1]}, load generator to CPU {cpus[:-1]}"


# ---------------------------------------------------------------- run

def _wait_http(url: str, timeout: float = 20.0) -> None:
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=1) as resp:
                if resp.status == 200:
                    return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{url} did not answer")


def main() -> int:
    root = Path(__file__).resolve().parent.parent
    sys.path.insert(0, str(root))
    from tests.support.catalog_cluster import Cluster, http_json, seed_database
    from tests.support.ports import free_port
    from tests.support.redis_server import RedisServer

    use_wrk = shutil.which("wrk") and os.environ.get("BENCH_LOADGEN", "wrk") == "wrk"
    load = wrk if use_wrk else pyload
    tool = f"wrk -t1 -c{CONNECTIONS}" if load is wrk else \
        f"python asyncio keep-alive client, {CONNECTIONS} connections (install wrk for better)"
    with tempfile.TemporaryDirectory(prefix="bench-catalog-") as tmp, RedisServer() as redis:
        work = Path(tmp)
        database_url = f"sqlite+aiosqlite:///{work / 'catalog.db'}"
        seed_database(database_url, 100)
        with Cluster(1, database_url=database_url, redis_url=redis.url, workdir=work,
                     extra_env={"LOG_LEVEL": "WARNING"}) as cluster:
            catalog_url = f"{cluster.urls[0]}/products/{PRODUCT}"
            _, headers, body = http_json(catalog_url)
            _, headers, body = http_json(catalog_url)
            assert headers["x-cache"] == "product=l1, price=l1, stock=l1", headers
            import orjson

            bare_port = free_port()
            bare = subprocess.Popen([sys.executable, __file__, "--bare", str(bare_port),
                                     orjson.dumps(body).decode()])
            try:
                bare_url = f"http://127.0.0.1:{bare_port}/products/{PRODUCT}"
                _wait_http(bare_url)
                load(bare_url, 1.0)  # warm-up both
                load(catalog_url, 1.0)
                assert cluster.replicas[0].proc is not None
                pids = {"bare": bare.pid, "catalog": cluster.replicas[0].proc.pid}
                pinning = pin(list(pids.values()))
                urls = {"bare": bare_url, "catalog": catalog_url}
                results: dict[str, list[float]] = {"bare": [], "catalog": []}
                per_cpu: dict[str, list[float]] = {"bare": [], "catalog": []}
                # Pairs run back to back (bare, then catalog) so that both see the same
                # background load on a shared machine; the median pair ratio is reported.
                for _ in range(RUNS):
                    for name in ("bare", "catalog"):
                        rate, capacity = measured(load, urls[name], pids[name], SECONDS)
                        results[name].append(rate)
                        per_cpu[name].append(capacity)
            finally:
                bare.terminate()
                bare.wait(10)
    bare_rps, cat_rps = max(results["bare"]), max(results["catalog"])
    pair_ratios = sorted(c / b for b, c in zip(results["bare"], results["catalog"], strict=True))
    ratio = pair_ratios[len(pair_ratios) // 2]
    print(f"load generator: {tool}, {SECONDS:g}s per run, {RUNS} back-to-back pairs;"
          f" {pinning}")
    print(f"bare Starlette GET /products/{PRODUCT} (same JSON):    best {bare_rps:7.0f} req/s"
          f"  (runs: {', '.join(f'{r:.0f}' for r in results['bare'])})")
    print(f"catalog GET /products/{PRODUCT} (L1 hits x3, X-Cache): best {cat_rps:7.0f} req/s"
          f"  (runs: {', '.join(f'{r:.0f}' for r in results['catalog'])})")
    print(f"ratio catalog/bare, median of pairs: {ratio:.2f}x (pairs: "
          f"{', '.join(f'{r:.2f}' for r in pair_ratios)}; best vs best: "
          f"{cat_rps / bare_rps:.2f}x) target >= {TARGET}x -> "
          f"{'OK' if ratio >= TARGET else 'BELOW TARGET'}")
    cpu_bare, cpu_cat = statistics.median(per_cpu["bare"]), statistics.median(per_cpu["catalog"])
    print(f"requests per server CPU-second (median): bare {cpu_bare:.0f}, catalog {cpu_cat:.0f}"
          f" -> {cpu_cat / cpu_bare:.2f}x ({1e6 / cpu_bare:.0f} vs {1e6 / cpu_cat:.0f} us"
          " of server CPU per request)")
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--bare":
        serve_bare(int(sys.argv[2]), sys.argv[3].encode())
    elif len(sys.argv) > 1 and sys.argv[1] == "--load":
        from urllib.parse import urlsplit

        parts = urlsplit(sys.argv[2])
        rate = asyncio.run(_pyload(parts.hostname or "127.0.0.1", parts.port or 80,
                                   parts.path, float(sys.argv[3])))
        print(f"{rate[0]:.1f} {rate[1]}")
    else:
        sys.exit(main())
