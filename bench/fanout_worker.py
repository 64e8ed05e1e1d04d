"""One process of bench_fanout: a role driven over stdin/stdout by the bench.

Roles (argv[1]):

- ``replicas URL K NAME``: K HybridCache instances (several per process when
  cores are short), each counting the remote invalidations it applies and
  their lag (the writer stamps ``time.monotonic_ns()`` into the tag name;
  CLOCK_MONOTONIC is shared by every process on the host).
- ``bare URL CHANNEL``: redis-py's own PubSub receive loop plus an orjson
  decode per message: the ceiling for a redis-py subscriber.
- ``hiredis URL CHANNEL``: an asyncio Protocol feeding hiredis's Reader plus an
  orjson decode: the floor for any Python subscriber.
- ``writer URL NAME``: a HybridCache that invalidates tags on command.
- ``rawpub URL CHANNEL``: publishes the unbatched single-message stream (what a
  writer sent before batching) for the ceiling and floor loops.

Commands on stdin, one JSON object a line: ``{"cmd": "start"}`` resets the
counters, ``{"cmd": "stop"}`` prints them; the writer and rawpub take
``{"cmd": "run", "rate": R, "seconds": D}`` and ``{"cmd": "acked", "n": K}``.
Every answer is one JSON line on stdout.
"""

from __future__ import annotations

import asyncio
import sys
import threading
import time
from typing import Any
from urllib.parse import urlparse

import hiredis
import orjson
import redis.asyncio as aioredis

LAG_SAMPLES = 200_000


def _say(obj: dict[str, Any]) -> None:
    sys.stdout.write(orjson.dumps(obj).decode() + "\n")
    sys.stdout.flush()


def _commands(loop: asyncio.AbstractEventLoop) -> asyncio.Queue[dict[str, Any]]:
    """Lines from stdin, read on a thread, handed to the loop."""
    queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

    def read() -> None:
        for line in sys.stdin:
            loop.call_soon_threadsafe(queue.put_nowait, orjson.loads(line))
        loop.call_soon_threadsafe(queue.put_nowait, {"cmd": "exit"})

    threading.Thread(target=read, daemon=True).start()
    return queue


class Meter:
    """Counts and lag samples of one receiving process since ``start``."""

    def __init__(self) -> None:
        self.start()

    def start(self) -> None:
        self.count = 0
        self.lags: list[int] = []
        self.cpu0 = time.process_time()
        self.wall0 = time.monotonic()

    def stamp(self, stamped_ns: int) -> None:
        self.count += 1
        if len(self.lags) < LAG_SAMPLES:
            self.lags.append(time.monotonic_ns() - stamped_ns)

    def report(self, **extra: Any) -> dict[str, Any]:
        return {"cpu": time.process_time() - self.cpu0, "wall": time.monotonic() - self.wall0,
                "count": self.count, "lags": self.lags, **extra}


async def _serve(meter: Meter, **extra: Any) -> None:
    queue = _commands(asyncio.get_running_loop())
    _say({"ready": True})
    while True:
        cmd = (await queue.get())["cmd"]
        if cmd == "start":
            meter.start()
            _say({"started": True})
        elif cmd == "stop":
            _say(meter.report(**{k: v() if callable(v) else v for k, v in extra.items()}))
        elif cmd == "exit":
            return


def _stamp_of(ident: str) -> int | None:
    if ident.startswith("b"):
        try:
            return int(ident[1:])
        except ValueError:
            return None
    return None


async def replicas(url: str, k: int, name: str) -> None:
    from hybridcache import CacheOptions, HybridCache

    meter = Meter()

    def observed(op: str, ident: str, origin: str) -> None:
        if origin == "remote":
            stamp = _stamp_of(ident)
            if stamp is not None:
                meter.stamp(stamp)

    caches = [HybridCache(CacheOptions(redis_url=url, node_id=f"{name}-{i}"))
              for i in range(k)]
    for cache in caches:
        await cache.start(connect_timeout=30)
        cache.on_invalidated(observed)
    for cache in caches:
        await cache.wait_connected(30)

    def resyncs() -> int:
        return sum(sum(c.stats().resyncs.values()) for c in caches)

    await _serve(meter, instances=k, resyncs=resyncs)
    for cache in caches:
        await cache.close()


async def bare(url: str, channel: str) -> None:
    meter = Meter()
    client = aioredis.Redis.from_url(url)
    pubsub = client.pubsub()
    await pubsub.subscribe(channel)

    async def loop() -> None:
        while True:
            msg = await pubsub.get_message(timeout=1.0)
            if msg is not None and msg["type"] == "message":
                stamp = _stamp_of(orjson.loads(msg["data"])["id"])
                if stamp is not None:
                    meter.stamp(stamp)

    task = asyncio.create_task(loop())
    await _serve(meter, instances=1)
    task.cancel()


class _HiredisProtocol(asyncio.Protocol):
    def __init__(self, meter: Meter, channel: str) -> None:
        self.meter = meter
        self.channel = channel.encode()
        self.reader = hiredis.Reader()
        self.subscribed = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        name = self.channel
        transport.write(b"*2\r\n$9\r\nSUBSCRIBE\r\n$%d\r\n%s\r\n" % (len(name), name))

    def data_received(self, data: bytes) -> None:
        reader = self.reader
        reader.feed(data)
        while (reply := reader.gets()) is not False:
            if reply[0] == b"message":
                stamp = _stamp_of(orjson.loads(reply[2])["id"])
                if stamp is not None:
                    self.meter.stamp(stamp)
            elif reply[0] == b"subscribe" and not self.subscribed.done():
                self.subscribed.set_result(True)


async def raw_hiredis(url: str, channel: str) -> None:
    meter = Meter()
    parts = urlparse(url)
    loop = asyncio.get_running_loop()
    _, protocol = await loop.create_connection(lambda: _HiredisProtocol(meter, channel),
                                               parts.hostname, parts.port)
    await protocol.subscribed
    await _serve(meter, instances=1)


async def _paced(rate: float, seconds: float, fire: Any, cap: int = 2048) -> dict[str, Any]:
    """Call ``fire(n)`` so that ``rate`` calls a second are issued for
    ``seconds``; ``fire`` starts them and returns how many were really
    started (a writer with ``cap`` calls outstanding starts none)."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    issued = 0
    while True:
        now = loop.time()
        if now - start >= seconds:
            break
        due = int((now - start) * rate) - issued
        if due > 0:
            issued += await fire(due)
        # Sleep until the next one is due rather than a fixed 1 ms tick (no
        # wake-up that has nothing to send); at high rates they go in
        # bunches, one wake-up a millisecond at most.
        wake = start + (issued + 1) / rate
        await asyncio.sleep(max(0.001, wake - loop.time()))
    return {"issued": issued, "seconds": loop.time() - start}


async def writer(url: str, name: str) -> None:
    from hybridcache import CacheOptions, HybridCache

    cache = HybridCache(CacheOptions(redis_url=url, node_id=name))
    await cache.start(connect_timeout=30)
    await cache.wait_connected(30)
    queue = _commands(asyncio.get_running_loop())
    outstanding: set[asyncio.Task[Any]] = set()
    cap = 2048

    calls: list[int] = []  # ns from issued to the writer's call returning

    async def one() -> None:
        stamp = time.monotonic_ns()
        await cache.remove_by_tag(f"b{stamp}")
        if len(calls) < LAG_SAMPLES:
            calls.append(time.monotonic_ns() - stamp)

    async def fire(n: int) -> int:
        n = min(n, cap - len(outstanding))
        for _ in range(max(0, n)):
            task = asyncio.create_task(one())
            outstanding.add(task)
            task.add_done_callback(outstanding.discard)
        return max(0, n)

    _say({"ready": True})
    while True:
        cmd = await queue.get()
        if cmd["cmd"] == "run":
            cpu0 = time.process_time()
            calls.clear()
            result = await _paced(cmd["rate"], cmd["seconds"], fire)
            if outstanding:
                await asyncio.wait(outstanding, timeout=10)
            _say({**result, "cpu": time.process_time() - cpu0, "calls": calls})
        elif cmd["cmd"] == "acked":
            complete = 0
            for _ in range(cmd["n"]):
                res = await cache.remove_by_tag(f"b{time.monotonic_ns()}", ack_timeout=5)
                complete += bool(res is not None and res.complete)
            _say({"complete": complete})
        elif cmd["cmd"] == "exit":
            break
    await cache.close()


async def rawpub(url: str, channel: str) -> None:
    client = aioredis.Redis.from_url(url)
    queue = _commands(asyncio.get_running_loop())
    seq = 0

    async def fire(n: int) -> int:
        nonlocal seq
        async with client.pipeline(transaction=False) as pipe:
            for _ in range(n):
                seq += 1
                pipe.publish(channel, orjson.dumps(
                    {"v": 1, "op": "tag", "id": f"b{time.monotonic_ns()}", "node": "rawpub",
                     "ts": time.time(), "seq": seq, "ver": seq, "rt": time.time()}))
            await pipe.execute()
        return n

    _say({"ready": True})
    while True:
        cmd = await queue.get()
        if cmd["cmd"] == "run":
            _say(await _paced(cmd["rate"], cmd["seconds"], fire))
        elif cmd["cmd"] == "exit":
            break
    await client.aclose()


async def cg_receive(kind: str, url: str, m: int) -> None:
    """Receive ``m`` invalidations and exit: run under callgrind by the bench,
    twice with different ``m``, so the difference is the cost of the
    messages alone (start-up cancels out)."""
    done = asyncio.get_running_loop().create_future()
    count = 0

    def one() -> None:
        nonlocal count
        count += 1
        if count >= m and not done.done():
            done.set_result(None)

    if kind == "bare":
        client = aioredis.Redis.from_url(url)
        pubsub = client.pubsub()
        await pubsub.subscribe(CG_CHANNEL)
        while (await pubsub.get_message(timeout=1.0)) is None:
            pass  # the subscribe confirmation
        _say({"ready": True})
        while not done.done():
            msg = await pubsub.get_message(timeout=1.0)
            if msg is not None and msg["type"] == "message":
                orjson.loads(msg["data"])
                one()
    elif kind == "hiredis":
        parts = urlparse(url)

        class Counting(asyncio.Protocol):
            reader = hiredis.Reader()

            def connection_made(self, transport: asyncio.BaseTransport) -> None:
                assert isinstance(transport, asyncio.Transport)
                name = CG_CHANNEL.encode()
                transport.write(b"*2\r\n$9\r\nSUBSCRIBE\r\n$%d\r\n%s\r\n" % (len(name), name))

            def data_received(self, data: bytes) -> None:
                self.reader.feed(data)
                while (reply := self.reader.gets()) is not False:
                    if reply[0] == b"message":
                        orjson.loads(reply[2])
                        one()
                    elif reply[0] == b"subscribe":
                        _say({"ready": True})

        await asyncio.get_running_loop().create_connection(Counting, parts.hostname, parts.port)
        await done
    else:
        from hybridcache import CacheOptions, HybridCache

        cache = HybridCache(CacheOptions(redis_url=url, node_id="cg", heartbeat_interval=30,
                                         heartbeat_timeout=120, backplane_lease=90))
        await cache.start(connect_timeout=120)
        await cache.wait_connected(120)
        cache.on_invalidated(lambda op, ident, origin: one() if origin == "remote" else None)
        _say({"ready": True})
        await done
        await cache.close()


CG_CHANNEL = "bench:cg"


def main(argv: list[str]) -> None:
    role, url, *rest = argv
    if role == "replicas":
        asyncio.run(replicas(url, int(rest[0]), rest[1]))
    elif role == "bare":
        asyncio.run(bare(url, rest[0]))
    elif role == "hiredis":
        asyncio.run(raw_hiredis(url, rest[0]))
    elif role == "writer":
        asyncio.run(writer(url, rest[0]))
    elif role == "rawpub":
        asyncio.run(rawpub(url, rest[0]))
    elif role == "cgrecv":
        asyncio.run(cg_receive(argv[1], argv[2], int(argv[3])))  # kind, url, m
    else:
        raise SystemExit(f"unknown role {role!r}")


if __name__ == "__main__":
    main(sys.argv[1:])
