"""redis-py clients for a parsed REDIS_URL, whatever its mode.

Built on redis-py's own pieces, never a client of our own: one server gets a
plain (or bounded) connection pool; a cluster gets redis-py's asyncio
``RedisCluster`` (seeded with the URL's hosts); Sentinel gets ``Sentinel.master_for``,
whose pool asks the sentinels for the master's address before every new
connection and drops a connection that finds the server demoted
(READONLY), so every client made here follows a failover by reconnecting.
Callers keep their own rules about retries and timeouts.
"""

from __future__ import annotations

import asyncio
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.connection import Connection, ConnectionPool, SSLConnection
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import MasterNotFoundError, Sentinel
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError, ResponseError, TimeoutError

from .redis_pool import BoundedConnectionPool, BoundedSentinelPool, OwningSentinelPool
from .redis_url import RedisTarget, parse_redis_url

# A client of any mode: one server or Sentinel (Redis), or a cluster.
AnyRedis = aioredis.Redis | RedisCluster


def is_cluster(client: AnyRedis) -> bool:
    """Whether ``client`` talks to a Redis Cluster (sharded pub/sub, the
    cluster key layout: ``Keys(prefix, cluster=True)``)."""
    return isinstance(client, RedisCluster)


class ExplainingSentinel(Sentinel):
    """redis-py's Sentinel, whose "no master" error says, per sentinel, why:
    redis-py's names each sentinel by the repr of a whole client and each
    reason by its exception class only ("network:ConnectionError"), which
    tells an operator nothing. Same lookup, same rules (the first sentinel
    that vouches for a master wins and is asked first next time)."""

    async def discover_master(self, service_name: str) -> tuple[str, int]:
        problems: list[str] = []
        for index, sentinel in enumerate(self.sentinels):
            kwargs = sentinel.connection_pool.connection_kwargs
            where = f"{kwargs.get('host')}:{kwargs.get('port')}"
            try:
                masters = await sentinel.sentinel_masters()
            except (ConnectionError, TimeoutError, ResponseError) as exc:
                problems.append(f"{where}: {exc}")
                continue
            state = masters.get(service_name) if isinstance(masters, dict) else None
            if not state:
                problems.append(f"{where}: monitors no master named {service_name!r}")
            elif self.check_master_state(state, service_name):
                self.sentinels[0], self.sentinels[index] = sentinel, self.sentinels[0]
                return state["ip"], state["port"]
            else:
                problems.append(f"{where}: master {state['ip']}:{state['port']} is down"
                                " (failover in progress?)")
        raise MasterNotFoundError(f"no master {service_name!r} from the sentinels: "
                                  + "; ".join(problems))


class RedisConnector:
    """Makes the clients of one target; for Sentinel, shares one manager
    (the connections to the sentinels) between them until ``aclose``."""

    def __init__(self, target: RedisTarget, *, socket_timeout: float | None = None,
                 owns_manager: bool = False) -> None:
        self.target = target
        self._owns_manager = owns_manager
        self.sentinel: ExplainingSentinel | None = None
        if target.mode == "sentinel":
            conn = target.connection
            auth = target.sentinel_auth or {
                k: conn[k] for k in ("username", "password") if conn.get(k)}
            # No retry per sentinel: the next sentinel is the retry. redis-py's
            # default (3 attempts with backoff each) made a client that
            # cannot reach or trust any sentinel wait ~10 s before saying so,
            # and a dead sentinel slow down every failover lookup.
            sentinel_kwargs: dict[str, Any] = dict(auth, retry=Retry(NoBackoff(), 0))
            if socket_timeout is not None:
                sentinel_kwargs.update(socket_timeout=socket_timeout,
                                       socket_connect_timeout=socket_timeout)
            if target.tls:
                sentinel_kwargs["ssl"] = True
                sentinel_kwargs.update({k: v for k, v in conn.items() if k.startswith("ssl_")})
            self.sentinel = ExplainingSentinel(  # type: ignore[no-untyped-call]
                list(target.hosts), sentinel_kwargs=sentinel_kwargs)

    def client(self, *, max_connections: int | None = None, **options: Any) -> AnyRedis:
        """A client (it owns its pool); ``max_connections`` bounds it, the
        callers beyond waiting their turn; ``options`` are redis-py
        connection arguments (timeouts, retry, health checks)."""
        target = self.target
        kwargs: dict[str, Any] = {**target.connection, **options}
        if self.sentinel is not None:
            assert target.master is not None
            pool_class: type[OwningSentinelPool] = OwningSentinelPool
            if max_connections is not None:
                pool_class = BoundedSentinelPool
                kwargs["max_connections"] = max_connections
            return self.sentinel.master_for(  # type: ignore[no-any-return]
                target.master, connection_pool_class=pool_class, ssl=target.tls,
                owns_manager=self._owns_manager, **kwargs)
        if target.mode == "cluster":
            return cluster_client(target, max_connections=max_connections, **options)
        if "path" not in kwargs:  # a unix:// URL names its own connection class
            host, port = target.hosts[0]
            kwargs.update(host=host, port=port,
                          connection_class=SSLConnection if target.tls else Connection)
        pool: ConnectionPool
        if max_connections is not None:
            pool = BoundedConnectionPool(max_connections=max_connections, **kwargs)
        else:
            pool = ConnectionPool(**kwargs)
        return aioredis.Redis.from_pool(pool)

    async def aclose(self) -> None:
        """Close the connections to the sentinels (the clients close their own)."""
        if self.sentinel is not None:
            await self.sentinel.aclose()


class BoundedRedisCluster(RedisCluster):
    """redis-py's RedisCluster with at most ``max_commands`` commands in
    flight; callers beyond wait their turn. redis-py's own bound is per
    node and fails a command (MaxConnectionsError) instead of waiting, so a
    burst of misses larger than the pool would fail on a cluster where it
    waits on one server (``BoundedConnectionPool``)."""

    def __init__(self, *args: Any, max_commands: int, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._slots = asyncio.Semaphore(max_commands)

    async def execute_command(self, *args: Any, **kwargs: Any) -> Any:
        async with self._slots:
            return await super().execute_command(*args, **kwargs)


def cluster_client(target: RedisTarget, *, max_connections: int | None = None,
                   **options: Any) -> RedisCluster:
    """redis-py's asyncio RedisCluster for a ``redis+cluster://`` target: the
    URL's hosts are seeds, the topology is read from them and followed
    (MOVED and ASK redirections, a re-read after a failover).
    ``max_connections`` bounds the commands in flight (callers beyond wait,
    as on one server), and so the connections to each server. ``retry``
    applies to the cluster client's own attempts (redis-py retries a failed
    node after re-reading the topology)."""
    kwargs: dict[str, Any] = {k: v for k, v in {**target.connection, **options}.items()
                              if k != "db"}
    if target.tls:
        kwargs["ssl"] = True
    retry = kwargs.pop("retry", None)
    nodes = [ClusterNode(host, port) for host, port in target.hosts]
    retry = retry if retry is not None else Retry(NoBackoff(), 1)
    if max_connections is None:
        return RedisCluster(startup_nodes=nodes, retry=retry, **kwargs)
    # Headroom per node for what does not pass execute_command (pipelines,
    # topology reads).
    return BoundedRedisCluster(startup_nodes=nodes, retry=retry,
                               max_connections=max_connections + 8,
                               max_commands=max_connections, **kwargs)


def redis_client(url: str, **options: Any) -> AnyRedis:
    """One client for ``url`` that closes everything it opened when it is
    closed: for tools with a single connection (the operator, the CLI).
    ``ValueError`` (password masked) if the URL is malformed."""
    target = parse_redis_url(url)
    timeout = options.get("socket_connect_timeout", options.get("socket_timeout"))
    return RedisConnector(target, socket_timeout=timeout, owns_manager=True).client(**options)
