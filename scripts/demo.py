"""`make demo` / `make demo-down`: Redis + 3 catalog replicas on loopback and a
short scripted scenario showing what the hybrid cache does across replicas.

State (pids, logs, the SQLite database) lives under .demo/ in the repository.
Run through the project's virtualenv: ``.venv/bin/python scripts/demo.py up``.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# The replica runner and the policy publisher are shared with the tests
# (tests/support), so the demo runs replicas exactly as the test suites do.
sys.path.insert(0, str(ROOT))
STATE = ROOT / ".demo"
POLICIES = ROOT / "scripts" / "demo-policies.yaml"
PREFIX = "hc:"
REPLICAS = 3
PRODUCT = 42
CATEGORY = 3


def say(text: str = "") -> None:
    print(text, flush=True)


def step(text: str) -> None:
    say(f"\n\033[1m== {text}\033[0m")


def port_free(port: int) -> bool:
    with socket.socket() as s:
        # As servers do: connections of a previous run in TIME_WAIT do not block us.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def pick_port(preferred: int) -> int:
    if port_free(preferred):
        return preferred
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# ---------------------------------------------------------------- pid files

def _ours(pid: int, marker: str) -> bool:
    """True if ``pid`` is alive and still the process we started (cmdline check)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        try:
            os.kill(pid, 0)
        except OSError:
            return False
        return True  # no /proc (macOS): trust the pid file
    return marker in cmdline


def running() -> list[tuple[Path, int, str]]:
    out = []
    for pidfile in sorted(STATE.glob("*.pid")):
        try:
            pid = int(pidfile.read_text().split()[0])
        except (OSError, ValueError, IndexError):
            continue
        marker = "redis-server" if pidfile.stem == "redis" else "catalog"
        if _ours(pid, marker):
            out.append((pidfile, pid, marker))
    return out


def down() -> int:
    procs = running()
    for _pidfile, pid, _ in procs:
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 10
    for _pidfile, pid, marker in procs:
        while _ours(pid, marker) and time.monotonic() < deadline:
            time.sleep(0.05)
        if _ours(pid, marker):
            os.kill(pid, signal.SIGKILL)
    for pidfile in STATE.glob("*.pid"):
        pidfile.unlink()
    (STATE / "write-token").unlink(missing_ok=True)
    say(f"stopped {len(procs)} demo process(es)" if procs else "no demo processes running")
    return 0


# ---------------------------------------------------------------- up

def start_redis() -> str:
    url = os.environ.get("REDIS_URL")
    if url:
        say(f"using REDIS_URL={shown(url)}")
        return url
    binary = shutil.which("redis-server")
    if binary is None:
        say("redis-server is not installed. Install it (Debian/Ubuntu: `sudo apt-get install"
            " redis-server`, macOS: `brew install redis`) or set REDIS_URL=redis://host:port/0.")
        raise SystemExit(1)
    port = pick_port(6390)
    log = open(STATE / "redis.log", "ab")  # noqa: SIM115 (handed to the child)
    proc = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                             "--appendonly", "no", "--dir", str(STATE)],
                            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            start_new_session=True)
    (STATE / "redis.pid").write_text(f"{proc.pid}\n")
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2) as s:
                s.sendall(b"PING\r\n")
                if s.recv(16).startswith(b"+PONG"):
                    say(f"redis-server on 127.0.0.1:{port} (pid {proc.pid})")
                    return f"redis://127.0.0.1:{port}/0"
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"redis-server did not start; see {STATE / 'redis.log'}")


def apply_policies(redis_url: str, urls: list[str], path: Path = POLICIES) -> None:
    from tests.support import policy_publish

    if importlib.util.find_spec("cache_operator") is not None:
        cmd = [sys.executable, "-m", "cache_operator", "apply", "-f", str(path),
               "--redis-url", redis_url, "--key-prefix", PREFIX]
        say(f"$ python -m cache_operator apply -f {path.relative_to(ROOT)}"
            f" --redis-url {shown(redis_url)} --key-prefix {PREFIX}")
        subprocess.run(cmd, check=True)
    else:
        say("(cache_operator is not installed: publishing the same policies with"
            " tests/support/policy_publish.py, as the operator would)")
        import yaml
        from hybridcache.policy import Policy

        docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
        policy_publish.publish(redis_url, PREFIX, [
            Policy.from_spec(d["spec"], generation=1, source=f"demo/{d['metadata']['name']}")
            for d in docs])
    import yaml

    from tests.support.catalog_cluster import http_json

    # Applied means: every replica's effective policy now says what the file says.
    wanted = {d["spec"]["dataType"]: (d["spec"].get("strategy", "active"),
                                      d["spec"].get("consistency", "eventual"))
              for d in yaml.safe_load_all(path.read_text()) if d}
    deadline = time.monotonic() + 15
    for url in urls:
        while True:
            effective = http_json(f"{url}/policies")[2]
            if all((effective[dt]["strategy"], effective[dt]["consistency"]) == want
                   for dt, want in wanted.items()):
                break
            if time.monotonic() > deadline:
                raise SystemExit(f"{url} did not apply the policies in 15 s: {effective}")
            time.sleep(0.05)
    say("every replica applied the policies (GET /policies on each)")


def shown(url: str) -> str:
    """A Redis URL as printed: its password (if any) as ``***``."""
    from catalog.redact import redact_url

    return redact_url(url)


def up() -> int:
    from tests.support.catalog_cluster import Cluster, http_json, seed_database

    STATE.mkdir(exist_ok=True)
    if running():
        say("a demo is already running; stopping it first")
        down()
    step("1. Redis (L2 + backplane), a seeded SQLite database, 3 replicas")
    redis_url = start_redis()
    db_path = STATE / "catalog.db"
    for leftover in STATE.glob("catalog.db*"):
        leftover.unlink()
    database_url = f"sqlite+aiosqlite:///{db_path}"
    seed_database(database_url, 1000)
    say(f"seeded {db_path} (1000 products) with `python -m catalog seed --products 1000`")
    ports = []
    for preferred in range(8001, 8001 + REPLICAS):
        ports.append(pick_port(preferred) if preferred not in ports else pick_port(0))
    # A fresh write token per run: the replicas refuse writes without it.
    token = secrets.token_urlsafe(24)
    token_file = STATE / "write-token"
    token_file.unlink(missing_ok=True)
    token_file.touch(mode=0o600)  # before the token is written: never world-readable
    token_file.write_text(token + "\n")
    cluster = Cluster(REPLICAS, database_url=database_url, redis_url=redis_url, workdir=STATE,
                      key_prefix=PREFIX, ports=ports,
                      extra_env={"CATALOG_WRITE_TOKEN_FILE": str(token_file)})
    cluster.start(detach=True)
    for replica in cluster.replicas:
        assert replica.proc is not None
        (STATE / f"{replica.name}.pid").write_text(f"{replica.proc.pid}\n")
        say(f"{replica.name}: {replica.url}  (pid {replica.proc.pid},"
            f" log .demo/{replica.name}.log)")
    say("writes need the bearer token in .demo/write-token (made for this run)")

    step("2. Policies: how each data type is cached")
    apply_policies(redis_url, cluster.urls)
    _, _, policies = http_json(cluster.urls[0] + "/policies")
    for dt, p in policies.items():
        tags = ", ".join(p["tags"]) or "-"
        say(f"  {dt:9} {p['strategy']:6} expiration {p['expiration']:>6g}s  L1 "
            f"{p['localExpiration']:>4g}s  tags: {tags}")

    urls = cluster.urls
    names = [r.name for r in cluster.replicas]
    step(f"3. Read product {PRODUCT} twice on every replica: database once, then L1")
    for name, url in zip(names, urls, strict=True):
        for _ in range(2):
            _, headers, body = http_json(f"{url}/products/{PRODUCT}")
            say(f"  {name}: price {body['price']:>7}  X-Cache: {headers['x-cache']}")
    old_price = body["price"]

    step(f"4. Change the price on {names[0]}; the others drop their copy via the backplane")
    new_price = "123.45" if old_price != "123.45" else "54.32"
    t0 = time.perf_counter()
    status, headers, body = http_json(f"{urls[0]}/products/{PRODUCT}/price", method="PUT",
                                      body={"price": new_price}, token=token)
    answered = time.perf_counter() - t0
    say(f"  PUT {urls[0]}/products/{PRODUCT}/price {{\"price\": \"{new_price}\"}} -> {status}"
        f" in {answered * 1000:.1f} ms; invalidated tags: {headers['x-invalidated-tags']}")
    seen: dict[str, float] = {}
    deadline = time.monotonic() + 10
    while len(seen) < len(urls) and time.monotonic() < deadline:
        for name, url in zip(names, urls, strict=True):
            if name not in seen and http_json(f"{url}/products/{PRODUCT}")[2]["price"] == new_price:
                seen[name] = time.perf_counter() - t0
    for name, url in zip(names, urls, strict=True):
        _, headers, body = http_json(f"{url}/products/{PRODUCT}")
        say(f"  {name}: price {body['price']:>7}  X-Cache: {headers['x-cache']}")
    if len(seen) == len(urls):
        say(f"  every replica served the new price {max(seen.values()) * 1000:.1f} ms after the"
            " write was sent (including this script's own HTTP round trips)")
    else:
        say(f"  WARNING: not every replica served the new price within 10 s: {seen}")

    step("5. consistency: acknowledged for price: a write waits until every replica confirmed")
    ack_policy = STATE / "price-acknowledged.yaml"
    ack_policy.write_text(
        "apiVersion: caching.hybridcache.io/v1alpha1\nkind: CacheInvalidationPolicy\n"
        "metadata: {name: price}\nspec: {dataType: price, strategy: active, expiration: 10m,"
        " localExpiration: 30s, tags: ['price:{id}', 'product:{id}'],"
        " invalidates: ['price:{id}'], consistency: acknowledged,"
        " maxStaleness: 1s}\n")
    apply_policies(redis_url, urls, ack_policy)
    for url in urls:  # every replica holds the price in L1 again
        http_json(f"{url}/products/{PRODUCT}")
    newer = "99.90" if new_price != "99.90" else "88.80"
    t0 = time.perf_counter()
    status, headers, _ = http_json(f"{urls[2]}/products/{PRODUCT}/price", method="PUT",
                                   body={"price": newer}, token=token)
    answered = time.perf_counter() - t0
    missing = headers.get("x-invalidation-missing", "none")
    say(f"  PUT on {names[2]} -> {status} in {answered * 1000:.1f} ms"
        f" ({headers['x-invalidation']}; unconfirmed replicas: {missing})")
    for name, url in zip(names, urls, strict=True):  # no polling: read once, right away
        _, headers, body = http_json(f"{url}/products/{PRODUCT}")
        say(f"  {name}: price {body['price']:>7}  X-Cache: {headers['x-cache']}")

    step(f"6. Rename category {CATEGORY} on {names[0]}: category is a ttl type, so no"
         " invalidation; replicas keep their copy until it expires")
    _, _, cat = http_json(f"{urls[1]}/categories/{CATEGORY}")
    say(f"  {names[1]}: category {CATEGORY} is {cat['name']!r} (now cached)")
    new_name = cat["name"] + " & More"
    t0 = time.perf_counter()
    _, headers, _ = http_json(f"{urls[0]}/categories/{CATEGORY}", method="PATCH",
                              body={"name": new_name}, token=token)
    say(f"  PATCH on {names[0]} -> name {new_name!r}; X-Invalidation: {headers['x-invalidation']}")
    shown = -1
    deadline = time.monotonic() + 40
    while time.monotonic() < deadline:
        _, _, cat = http_json(f"{urls[1]}/categories/{CATEGORY}")
        elapsed = time.perf_counter() - t0
        if cat["name"] == new_name:
            say(f"  {names[1]}: {cat['name']!r} after {elapsed:.1f} s (the cached copy expired;"
                f" policy expiration {policies['category']['expiration']:g}s)")
            break
        if int(elapsed) // 3 != shown:
            shown = int(elapsed) // 3
            say(f"  {names[1]}: still {cat['name']!r} after {elapsed:4.1f} s (cached)")
        time.sleep(0.25)

    step("The replicas keep running")
    for name, url in zip(names, urls, strict=True):
        say(f"  {name}: {url}   e.g. curl -si {url}/products/{PRODUCT}")
    say(f"  metrics: {urls[0]}/metrics   readiness: {urls[0]}/readyz"
        f"   Redis: {shown(redis_url)}")
    say(f"  a write: curl -si -X PUT {urls[0]}/products/{PRODUCT}/price"
        " -H \"Authorization: Bearer $(cat .demo/write-token)\""
        " -H 'Content-Type: application/json' -d '{\"price\": \"9.99\"}'")
    say("  consistency checker: CATALOG_WRITE_TOKEN=$(cat .demo/write-token)"
        " .venv/bin/catalog-checker " + " ".join(f"--url {u}" for u in urls) + " --duration 10")
    say("  stop everything: make demo-down")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("command", choices=["up", "down"])
    args = parser.parse_args()
    return up() if args.command == "up" else down()


if __name__ == "__main__":
    sys.exit(main())
