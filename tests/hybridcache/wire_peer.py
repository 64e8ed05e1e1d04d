"""A replica driven over stdin/stdout, run by the rolling-upgrade test with
whichever ``hybridcache`` is first on PYTHONPATH (there: the last release that
spoke wire revision 1, extracted from git).

Usage: python tests/hybridcache/wire_peer.py REDIS_URL NODE_ID
One JSON command a line, one JSON answer a line:
  {"cmd": "load", "key": k, "tags": [...], "value": v} -> {"value": ...}
  {"cmd": "peek", "key": k}                              -> {"l1": bool}
  {"cmd": "remove_by_tag", "tag": t, "ack": seconds}     -> {"acked": [...], "missing": [...]}
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any

import orjson
from hybridcache import CacheOptions, HybridCache


async def main(url: str, node_id: str) -> None:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    async with HybridCache(CacheOptions(redis_url=url, node_id=node_id,
                                        heartbeat_interval=0.2, heartbeat_timeout=1.0)) as cache:
        await cache.wait_connected()
        print(orjson.dumps({"ready": True}).decode(), flush=True)
        while line := await reader.readline():
            cmd: dict[str, Any] = orjson.loads(line)
            answer: dict[str, Any]
            if cmd["cmd"] == "load":
                value = cmd["value"]

                async def factory(value: Any = value) -> Any:
                    return value

                answer = {"value": await cache.get_or_create(cmd["key"], factory,
                                                             tags=cmd["tags"])}
            elif cmd["cmd"] == "peek":
                answer = {"l1": cache.peek(cmd["key"]) is not None}
            elif cmd["cmd"] == "remove_by_tag":
                result = await cache.remove_by_tag(cmd["tag"], ack_timeout=cmd["ack"])
                assert result is not None
                answer = {"acked": sorted(result.acked), "missing": sorted(result.missing)}
            else:
                answer = {"error": f"unknown command {cmd['cmd']!r}"}
            print(orjson.dumps(answer).decode(), flush=True)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
