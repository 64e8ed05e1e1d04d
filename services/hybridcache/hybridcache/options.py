"""Configuration objects: one per cache (CacheOptions), one per entry (EntryOptions)."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .serializers import Serializer


def default_node_id() -> str:
    """NODE_NAME (the pod name in Kubernetes), else host name and process id."""
    return os.environ.get("NODE_NAME") or f"{socket.gethostname()}-{os.getpid()}"


@dataclass(frozen=True, slots=True)
class EntryOptions:
    """How one entry is cached. Durations are seconds.

    ``local_expiration`` is clamped to ``expiration``. ``jitter`` adds up to that
    many seconds at random to both lifetimes so that entries written together do
    not all expire together. Cached values are shared objects: a value returned
    from L1 is the very object in the cache, so callers must not mutate it;
    set ``copy_on_read`` to get a fresh deserialized copy on every read instead.
    """

    expiration: float = 300.0
    local_expiration: float | None = None
    jitter: float = 0.0
    skip_l1_read: bool = False
    skip_l1_write: bool = False
    skip_l2_read: bool = False
    skip_l2_write: bool = False
    copy_on_read: bool = False
    # Eager refresh: a hit on an entry older than this fraction of its L1
    # lifetime reloads it in the background (through the factory, once, with
    # the usual single flight), so hot keys never expire in front of callers.
    eager_refresh: float | None = None
    # Fail-safe: on factory error or timeout serve the last value (if any) for
    # up to fail_safe_max_duration after it expired, and retry the factory no
    # more often than every fail_safe_throttle seconds meanwhile.
    fail_safe: bool = False
    fail_safe_max_duration: float = 3600.0
    fail_safe_throttle: float = 10.0
    # Factory timeouts: soft applies only when a fail-safe value exists (it is
    # served and the factory finishes in the background); hard always applies.
    factory_soft_timeout: float | None = None
    factory_hard_timeout: float | None = None
    # Label for metrics; default: the key's text before its first ':'.
    data_type: str | None = None

    def __post_init__(self) -> None:
        for name in ("expiration", "fail_safe_max_duration", "fail_safe_throttle"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"EntryOptions.{name} must be a positive number, got {value!r}")
        for name in ("local_expiration", "factory_soft_timeout", "factory_hard_timeout"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, (int, float)) or value <= 0):
                raise ValueError(
                    f"EntryOptions.{name} must be a positive number or None, got {value!r}")
        if self.eager_refresh is not None and not 0 < self.eager_refresh < 1:
            raise ValueError("EntryOptions.eager_refresh must be a fraction in (0, 1),"
                             f" got {self.eager_refresh!r}")
        if not isinstance(self.jitter, (int, float)) or self.jitter < 0:
            raise ValueError(f"EntryOptions.jitter must be >= 0, got {self.jitter!r}")

    @property
    def l1_expiration(self) -> float:
        local = self.local_expiration
        return self.expiration if local is None or local > self.expiration else local


DEFAULT_ENTRY_OPTIONS = EntryOptions()


@dataclass(frozen=True, slots=True)
class Adaptive:
    """What a factory may return instead of a bare value, to decide how the
    value is cached once it knows what it loaded: its own lifetimes
    (``options``), its own ``tags``, or ``cache=False`` to hand the value to
    its callers without storing it anywhere (e.g. a "not found" that should
    not be remembered). The caller always receives ``value``."""

    value: Any
    options: EntryOptions | None = None
    tags: Iterable[str] | None = None
    cache: bool = True


@dataclass(frozen=True, slots=True)
class CacheOptions:
    """One cache instance (one replica on the backplane)."""

    redis_url: str | None = None
    key_prefix: str = "hc:"
    node_id: str = field(default_factory=default_node_id)
    default_entry_options: EntryOptions = DEFAULT_ENTRY_OPTIONS
    # L1 bounds: whichever is reached first evicts (second-chance / CLOCK order).
    l1_max_entries: int = 100_000
    l1_max_bytes: int = 256 * 1024 * 1024
    maximum_key_length: int = 1024
    maximum_tag_length: int = 256
    maximum_tags_per_entry: int = 64
    maximum_payload_bytes: int = 1024 * 1024
    serializer: Serializer | None = None  # None: JSON (orjson)
    # Cluster-wide single flight: a Redis lease per missing key.
    distributed_lock: bool = True
    lock_lease: float = 10.0
    # How long invalidation records (tag versions, removed-key marks) are kept;
    # entry lifetimes are clamped to it so no entry can outlive its records.
    invalidation_record_ttl: float = 86400.0
    # Backplane liveness: ping the subscription this often; silence for
    # heartbeat_timeout is treated as a gap (L1 flushed, tags reloaded).
    heartbeat_interval: float = 1.0
    heartbeat_timeout: float = 3.0
    # The backplane lease L: this node serves from L1 only while it heard its
    # own heartbeat echoed through its subscription within L (so it provably
    # received everything published until then). When it runs out, L1 is
    # flushed and the node resynchronises. An acknowledged write waits for a
    # silent member at most until that member's lease provably ran out.
    backplane_lease: float = 2.0
    reconnect_backoff_max: float = 2.0
    # Per-node counters are published to Redis this often for the operator.
    stats_interval: float = 5.0
    socket_timeout: float = 2.0
    # Redis connections per cache. A burst of misses waits for a free one
    # rather than opening a connection per concurrent call.
    max_connections: int = 32
    # Wall clock (seconds since the epoch) used for message timestamps and lag;
    # injectable so tests can run a node with a skewed clock.
    clock: Callable[[], float] | None = None
    # Monotonic clock (seconds) for everything measured locally: L1 lifetimes,
    # eager refresh, fail-safe windows and throttles, the lease wait deadline.
    # Injectable so tests can move time forward exactly instead of sleeping.
    monotonic: Callable[[], float] = time.monotonic

    def __post_init__(self) -> None:
        if self.redis_url is not None:
            # Imported here: the options must not load redis-py for the
            # modules (policy, keys) the operator imports without a cache.
            from .redis_url import parse_redis_url

            parse_redis_url(self.redis_url)  # a malformed URL is named now, not at connect
        if not self.backplane_lease > self.heartbeat_interval:
            raise ValueError("CacheOptions.backplane_lease must be longer than heartbeat_interval"
                             f" ({self.backplane_lease!r} <= {self.heartbeat_interval!r})")
        if not isinstance(self.key_prefix, str):
            raise ValueError(f"CacheOptions.key_prefix must be a string, got {self.key_prefix!r}")
        if not self.node_id or not isinstance(self.node_id, str):
            raise ValueError(
                f"CacheOptions.node_id must be a non-empty string, got {self.node_id!r}")
        for name in ("l1_max_entries", "l1_max_bytes", "maximum_key_length", "max_connections",
                     "maximum_tag_length", "maximum_payload_bytes"):
            value = getattr(self, name)
            if not isinstance(value, int) or value <= 0:
                raise ValueError(f"CacheOptions.{name} must be a positive integer, got {value!r}")
