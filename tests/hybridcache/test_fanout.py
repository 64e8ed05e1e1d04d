"""The backplane's fan-out: batches, acks to the sender only, fill notices to
the waiting nodes only, the lean receive path's guarantees, and a rolling
upgrade with a replica of the last wire revision 1 release."""

from __future__ import annotations

import asyncio
import io
import os
import subprocess
import sys
import tarfile
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis.asyncio as aioredis
from hybridcache import HybridCache

from tests.hybridcache.conftest import MakeNode, Source
from tests.support.redis_server import RedisServer
from tests.support.waiting import eventually

ROOT = Path(__file__).resolve().parents[2]
# The last commit whose hybridcache spoke wire revision 1 only (one message per
# invalidation, acks on the shared channel, fill notices on one channel).
REVISION_1 = "28ecdde55e9527d30be38d921c2e8c4ba765393f"


@pytest.fixture
async def client(redis_server: RedisServer) -> AsyncIterator[aioredis.Redis]:
    redis = aioredis.Redis.from_url(redis_server.url)
    yield redis
    await redis.aclose()


async def burst(node: HybridCache, tags: list[str], ack: float | None = None) -> list[Any]:
    """Invalidate ``tags`` concurrently: all but the first wait for the first
    call, so they leave as batches."""
    return await asyncio.gather(*(node.remove_by_tag(t, ack_timeout=ack) for t in tags))


async def test_concurrent_invalidations_go_out_as_batches_and_all_apply(
    make_node: MakeNode,
) -> None:
    a, b = await make_node("a"), await make_node("b")
    sources = {i: Source(f"v{i}") for i in range(40)}
    for i, src in sources.items():
        await b.get_or_create(f"p:{i}", src, tags=[f"t{i}"])
        await b.get_or_create(f"k:{i}", src)
    await asyncio.gather(burst(a, [f"t{i}" for i in range(40)]),
                         *(a.remove(f"k:{i}") for i in range(40)))
    assert a._node.sender.batches > 0
    await a.remove_by_tag("sync", ack_timeout=5)  # in order: everything before applied
    for i in range(40):
        assert b.peek(f"p:{i}") is None and b.peek(f"k:{i}") is None
    assert not b.stats().resyncs  # batches left in seq order: no false gap


async def test_sets_in_a_batch_store_the_new_value_for_every_replica(
    make_node: MakeNode,
) -> None:
    a, b = await make_node("a"), await make_node("b")
    for i in range(20):
        await b.get_or_create(f"s:{i}", Source("old"))
    await asyncio.gather(*(a.set(f"s:{i}", f"new{i}") for i in range(20)))
    assert a._node.sender.batches > 0
    await a.remove_by_tag("sync", ack_timeout=5)
    for i in range(20):
        assert await b.get_or_create(f"s:{i}", Source("unused")) == f"new{i}"


async def test_acks_in_batches_reach_only_their_sender(
    make_node: MakeNode, client: aioredis.Redis
) -> None:
    a, _b, _c = await make_node("a"), await make_node("b"), await make_node("c")
    shared = client.pubsub()
    await shared.subscribe("hc:acks", "hc:acks:b", "hc:acks:c")
    results = await burst(a, [f"t{i}" for i in range(20)], ack=5)
    assert all(r.complete and r.acked == {"b", "c"} for r in results)
    assert a._node.sender.batches > 0
    heard = []
    while (msg := await shared.get_message(timeout=0.2)) is not None:
        if msg["type"] == "message":
            heard.append(msg["channel"])
    assert heard == []  # no ack went to anyone but a
    assert not a._node._ack_waiters  # every waiter, shared by a batch, was released
    await shared.aclose()


async def test_fill_notices_reach_only_the_nodes_waiting_for_the_key(
    make_node: MakeNode, client: aioredis.Redis
) -> None:
    # b waits for a's lease up to min(lock_lease, socket_timeout): 10 s, not
    # the default 2 s, so a loaded machine cannot make it load on its own.
    a, b = await make_node("a"), await make_node("b", socket_timeout=10.0)
    await make_node("c")  # a bystander, subscribed to nothing of this key
    release = asyncio.Event()

    async def slow() -> str:
        await release.wait()
        return "hot"

    loading = asyncio.ensure_future(a.get_or_create("hot:1", slow))
    await eventually(lambda: b._node.subscription is not None, what="b subscribed")
    # a holds the load's lease before b asks: else b could take it and load.
    await eventually_async(lambda: _exists(client, "hc:lease:hot:1"), what="a's lease")
    waiting = asyncio.ensure_future(b.get_or_create("hot:1", Source("not-run")))

    async def only_b_listens() -> bool:
        return dict(await client.pubsub_numsub("hc:fill:hot:1")) == {b"hc:fill:hot:1": 1}

    await eventually_async(only_b_listens, what="b subscribed to the key's fill channel")
    release.set()
    assert await loading == "hot" and await waiting == "hot"
    await eventually_async(lambda: _no_fill_channels(client), what="b unsubscribed")


async def _exists(client: aioredis.Redis, key: str) -> bool:
    return bool(await client.exists(key))


async def _no_fill_channels(client: aioredis.Redis) -> bool:
    return await client.pubsub_channels("hc:fill:*") == []


async def eventually_async(check: Any, *, what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


def _batch(node: str, seq: int, items: Any) -> bytes:
    return orjson.dumps({"v": 1, "op": "tag", "id": "*", "node": node, "ts": time.time(),
                         "seq": seq, "w": 2, "b": items})


async def test_a_planted_batch_is_refused_and_resyncs(
    make_node: MakeNode, client: aioredis.Redis
) -> None:
    a = await make_node("a")
    await a.get_or_create("p:1", Source("v1"), tags=["t"])
    await client.publish("hc:backplane", _batch("x", 1, [["t", "t", 1], ["t", "u", 10**18]]))
    await eventually(lambda: a.stats().rejected.get("message_version") == 1,
                     what="the planted batch refused")
    await a.wait_connected()
    assert "u" not in a.tag_versions()


async def test_garbage_batches_and_channels_never_stop_the_listener(
    make_node: MakeNode, client: aioredis.Redis
) -> None:
    a, b = await make_node("a"), await make_node("b")
    for junk in (_batch("x", 1, "nope"), _batch("x", 2, []), _batch("x", 3, [["x", "y", 1]]),
                 _batch("x", 4, [["t", 5, 1]]), _batch("x", 5, [["t", "y", True]]),
                 b"\xff\xfe", b'{"v":1,"op":"tag","id":"t","node":"x","ts":1,"seq":6,"w":"2"}'):
        await client.publish("hc:backplane", junk)
    for channel in ("hc:acks:b", "hc:acks", "hc:fill"):
        for junk in (b"\xff", b"{}", b'{"to":"b","seq":[]}'):
            await client.publish(channel, junk)
    result = await a.remove_by_tag("t", ack_timeout=5)
    assert result is not None and result.acked == {"b"}
    assert b.stats().rejected.get("malformed", 0) >= 6
    assert b.connected and not b.stats().resyncs


async def test_a_seq_gap_inside_a_batch_stream_forces_a_resync(
    make_node: MakeNode, client: aioredis.Redis
) -> None:
    a = await make_node("a")
    clock = int(await client.hget("hc:state", "clock") or 0)
    await client.publish("hc:backplane", _batch("x", 1, [["t", "t", clock]]))
    await client.publish("hc:backplane", _batch("x", 3, [["t", "t", clock]]))
    await eventually(lambda: a.stats().resyncs.get("seq_gap") == 1, what="seq gap resync")


# ---------------------------------------------------------------- rolling upgrade


@pytest.fixture(scope="module")
def revision_1(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """hybridcache as it was before wire revision 2, extracted from git."""
    done = subprocess.run(["git", "-C", str(ROOT), "archive", REVISION_1, "services/hybridcache"],
                          capture_output=True, timeout=60)
    if done.returncode != 0:
        pytest.skip(f"commit {REVISION_1[:8]} is not in this checkout's history")
    target = tmp_path_factory.mktemp("revision-1")
    with tarfile.open(fileobj=io.BytesIO(done.stdout)) as tar:
        tar.extractall(target, filter="data")
    return target / "services/hybridcache"


class Peer:
    """A revision 1 replica in its own process (tests/hybridcache/wire_peer.py)."""

    def __init__(self, package: Path, url: str, node_id: str) -> None:
        env = dict(os.environ, PYTHONPATH=f"{package}{os.pathsep}{ROOT}")
        self.proc = subprocess.Popen(
            [sys.executable, str(ROOT / "tests/hybridcache/wire_peer.py"), url, node_id],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, text=True)
        assert self._answer() == {"ready": True}

    def _answer(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        assert line, "the revision 1 replica exited"
        return orjson.loads(line)  # type: ignore[no-any-return]

    async def ask(self, **cmd: Any) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write(orjson.dumps(cmd).decode() + "\n")
        self.proc.stdin.flush()
        return await asyncio.to_thread(self._answer)

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def old_peer(revision_1: Path, redis_server: RedisServer) -> Iterator[Peer]:
    peer = Peer(revision_1, redis_server.url, "old")
    yield peer
    peer.close()


@pytest.mark.slow
async def test_rolling_upgrade_old_and_new_replicas_invalidate_each_other(
    make_node: MakeNode, old_peer: Peer
) -> None:
    new = await make_node("new")
    # New -> old, in batches: the old replica reads a batch as "everything".
    for i in range(10):
        assert (await old_peer.ask(cmd="load", key=f"p:{i}", tags=[f"t{i}"], value=i))["value"] == i
    assert (await old_peer.ask(cmd="peek", key="p:0"))["l1"]
    results = await burst(new, [f"t{i}" for i in range(10)], ack=5)
    assert new._node.sender.batches > 0
    # The old replica answered on the shared acks channel, which new nodes still hear.
    assert all(r.complete and r.acked == {"old"} for r in results)
    for i in range(10):
        assert not (await old_peer.ask(cmd="peek", key=f"p:{i}"))["l1"]
    # Old -> new: single messages without "w"; the new replica acks on the shared channel.
    src = Source("v1")
    await new.get_or_create("q:1", src, tags=["u"])
    assert new.peek("q:1") is not None
    answer = await old_peer.ask(cmd="remove_by_tag", tag="u", ack=5)
    assert answer == {"acked": ["new"], "missing": []}
    assert new.peek("q:1") is None
    assert not new.stats().resyncs and not new.stats().rejected
