"""Operator configuration, from the environment (12-factor)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field

from .workload import WorkloadRef

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
NODE_NAME = "cache-operator"  # the operator's node id on the backplane
# The operator's own finalizer: on every policy it handled, removed by its delete
# handler (or by the ``cleanup`` command when the operator is gone).
FINALIZER = "caching.hybridcache.io/cleanup"


def redis_url_from(env: Mapping[str, str]) -> str:
    """REDIS_URL (one server, TLS or Sentinel: hybridcache's redis_url.py
    has the forms), with REDIS_TLS_CA_FILE and REDIS_TLS_CERT_FILE /
    REDIS_TLS_KEY_FILE as redis-py's TLS URL arguments; a malformed one is
    a ConfigError naming the problem, password masked."""
    from hybridcache.redis_url import parse_redis_url, with_tls_env

    try:
        url = with_tls_env(env.get("REDIS_URL", "").strip() or DEFAULT_REDIS_URL, env)
        assert url is not None
        parse_redis_url(url)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    return url


class ConfigError(ValueError):
    """An environment variable with a value the operator cannot use."""


def _number(env: Mapping[str, str], name: str, default: float, *, minimum: float) -> float:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name}: expected a number of seconds, got {raw!r}") from None
    if value < minimum:
        raise ConfigError(f"{name}: must be at least {minimum:g}, got {raw!r}")
    return value


def _port(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    if not raw.isdigit() or not 0 <= int(raw) <= 65535:
        raise ConfigError(f"{name}: expected a TCP port (0 disables), got {raw!r}")
    return int(raw)


def _workload(env: Mapping[str, str], name: str) -> WorkloadRef | None:
    raw = env.get(name, "").strip()
    if not raw:
        return None
    try:
        return WorkloadRef.parse(raw)
    except ValueError as exc:
        raise ConfigError(f"{name}: {exc}") from None


@dataclass(frozen=True, slots=True)
class Config:
    """Everything the operator reads from its environment.

    - ``REDIS_URL``: the Redis the catalog replicas share.
    - ``CACHE_KEY_PREFIX``: prefix of every key and channel (default ``hc:``).
    - ``WATCH_NAMESPACE``: comma-separated namespaces; empty = all namespaces.
    - ``PROBE_INTERVAL``: seconds between fleet-health rounds (default 10).
    - ``METRICS_PORT``: port of ``/metrics`` (default 9100; 0 disables).
    - ``LIVENESS_ENDPOINT``: kopf's liveness URL
      (default ``http://0.0.0.0:8080/healthz``; empty disables).
    - ``REPLICA_TIMEOUT``: a replica whose last heartbeat is older than this
      many seconds is not live (default 10, as the library's own window).
    - ``CATALOG_WORKLOAD``: ``deployment/<name>`` or ``statefulset/<name>`` in
      each policy's namespace, whose desired replicas are the ones expected to
      apply the policy; empty = count only the live replicas.
    - ``REDIS_RETRY_DELAY``: seconds between retries of a Redis call that failed
      (default 5); a delete is retried ``DELETE_RETRIES`` times, then its
      finalizer is released anyway.
    - ``EPOCH_POLL_INTERVAL``: seconds between reads of the invalidation
      state's epoch (default 1); a new epoch means Redis lost its state, and
      every policy this operator owns is republished (``cache_operator.epoch``).
    """

    redis_url: str = field(default=DEFAULT_REDIS_URL, repr=False)  # holds the password
    key_prefix: str = "hc:"
    namespaces: tuple[str, ...] = ()
    probe_interval: float = 10.0
    metrics_port: int = 9100
    liveness_endpoint: str | None = "http://0.0.0.0:8080/healthz"
    replica_timeout: float = 10.0
    catalog_workload: WorkloadRef | None = None
    redis_retry_delay: float = 5.0
    epoch_poll_interval: float = 1.0

    @property
    def clusterwide(self) -> bool:
        return not self.namespaces

    @property
    def probe_wait(self) -> float:
        """How long a round waits for the replicas to answer a probe."""
        return max(0.2, min(2.0, self.probe_interval / 2))

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Config:
        env = os.environ if env is None else env
        namespaces = tuple(
            ns.strip() for ns in env.get("WATCH_NAMESPACE", "").split(",") if ns.strip()
        )
        liveness = env.get("LIVENESS_ENDPOINT", "http://0.0.0.0:8080/healthz").strip() or None
        return cls(
            redis_url=redis_url_from(env),
            key_prefix=env.get("CACHE_KEY_PREFIX", "hc:"),
            namespaces=namespaces,
            probe_interval=_number(env, "PROBE_INTERVAL", 10.0, minimum=0.1),
            metrics_port=_port(env, "METRICS_PORT", 9100),
            liveness_endpoint=liveness,
            replica_timeout=_number(env, "REPLICA_TIMEOUT", 10.0, minimum=0.1),
            catalog_workload=_workload(env, "CATALOG_WORKLOAD"),
            redis_retry_delay=_number(env, "REDIS_RETRY_DELAY", 5.0, minimum=0.1),
            epoch_poll_interval=_number(env, "EPOCH_POLL_INTERVAL", 1.0, minimum=0.05),
        )
