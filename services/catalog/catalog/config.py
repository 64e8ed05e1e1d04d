"""Configuration from the environment (12-factor): the same names locally and
in the Helm chart, so a replica behaves the same wherever it runs."""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from hybridcache.redis_url import parse_redis_url, with_tls_env

DEFAULT_DATABASE_URL = "sqlite+aiosqlite:///./catalog.db"


def _float(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"{name}: {raw!r} is not a number") from None
    if value <= 0:
        raise ValueError(f"{name}: must be greater than zero, got {raw!r}")
    return value


def _int(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"{name}: {raw!r} is not an integer") from None
    if value <= 0:
        raise ValueError(f"{name}: must be greater than zero, got {raw!r}")
    return value


def _flag(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = (env.get(name) or "").strip().lower()
    if raw == "":
        return default
    if raw in ("1", "true", "yes", "on"):
        return True
    if raw in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"{name}: {raw!r} is not a boolean (use 1 or 0)")


@dataclass(frozen=True, slots=True)
class HttpLimits:
    """Connection-level limits of a replica's HTTP server (http_limits.py)."""

    # Request line plus headers; 431 beyond (414 if the target alone is too long).
    max_head_bytes: int = 16 * 1024
    max_request_line: int = 8 * 1024
    # From a head's first byte to its end; 408 and close beyond.
    header_timeout: float = 10.0
    # A connection with no request in progress is closed after this long.
    keepalive_timeout: float = 5.0
    # Open connections (or requests in flight) above which requests get 503.
    max_connections: int = 1000


def _write_token(env: Mapping[str, str]) -> str | None:
    """The bearer token writes require: CATALOG_WRITE_TOKEN, or the content of
    CATALOG_WRITE_TOKEN_FILE (a mounted Secret; one trailing newline dropped).
    Setting both is refused rather than silently preferring one."""
    value, path = env.get("CATALOG_WRITE_TOKEN") or None, env.get("CATALOG_WRITE_TOKEN_FILE")
    if path:
        if value is not None:
            raise ValueError("set CATALOG_WRITE_TOKEN or CATALOG_WRITE_TOKEN_FILE, not both")
        try:
            value = Path(path).read_text(encoding="utf-8").removesuffix("\n").removesuffix("\r")
        except (OSError, UnicodeDecodeError) as exc:
            raise ValueError(f"CATALOG_WRITE_TOKEN_FILE: cannot read {path}:"
                             f" {type(exc).__name__}") from None
        if not value:
            raise ValueError(f"CATALOG_WRITE_TOKEN_FILE: {path} is empty")
    if value is not None and (value != value.strip() or not value.isprintable()):
        raise ValueError("the write token must be printable, without surrounding spaces")
    return value


def _redis_url(env: Mapping[str, str]) -> str | None:
    """REDIS_URL (any form hybridcache's redis_url.py accepts: one server,
    TLS, Sentinel), with REDIS_TLS_CA_FILE (a private CA bundle) and
    REDIS_TLS_CERT_FILE/REDIS_TLS_KEY_FILE (a client certificate) passed to
    redis-py as the URL's TLS arguments. A malformed URL is refused here,
    at start, with the password masked."""
    url = with_tls_env(env.get("REDIS_URL") or None, env)
    if url is not None:
        parse_redis_url(url)
    return url


def _metrics_port(env: Mapping[str, str]) -> int | None:
    if not env.get("METRICS_PORT"):
        return None
    port = _int(env, "METRICS_PORT", 0)
    if port > 65535:
        raise ValueError(f"METRICS_PORT: {port} is not a TCP port")
    return port


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything a replica needs to know; built once at start."""

    database_url: str = field(default=DEFAULT_DATABASE_URL, repr=False)
    redis_url: str | None = field(default=None, repr=False)
    key_prefix: str = "hc:"
    node_name: str = ""
    log_level: str = "INFO"
    # How long an `acknowledged` write waits for every live replica's ack.
    ack_timeout: float = 2.0
    # Largest request body accepted (413 beyond).
    max_body_bytes: int = 64 * 1024
    # Database connection pool per replica.
    db_pool_size: int = 10
    # How long start-up keeps retrying an unreachable database before giving up
    # (a replica may start before its database, e.g. in a fresh Helm install).
    db_startup_timeout: float = 30.0
    # When set, POST/PUT/PATCH/DELETE need "Authorization: Bearer <token>".
    write_token: str | None = field(default=None, repr=False)
    # Connection-level limits (http_limits.py).
    http: HttpLimits = HttpLimits()
    # Pending connections the kernel queues before accept (listen backlog).
    http_backlog: int = 1024
    # The invalidation outbox (outbox.py, relay.py). Off only for the
    # write-path benchmark's baseline: without it, changes made outside the
    # API and writers dying after commit are not invalidated.
    outbox: bool = True
    # SQLite has no notifications: how often the relay polls the outbox.
    relay_poll_interval: float = 0.1
    # SQLite relay lease: a dead relay is replaced within this (plus a poll).
    relay_lease: float = 2.0
    # How long the relay leaves the outbox rows of an API write to that write
    # (which invalidates them itself) before publishing them anyway.
    relay_grace: float = 0.3
    # When set, /metrics is served on this port only (not on the public one),
    # so a NetworkPolicy can open it to Prometheus alone.
    metrics_port: int | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        return cls(
            database_url=env.get("DATABASE_URL") or DEFAULT_DATABASE_URL,
            redis_url=_redis_url(env),
            key_prefix=env.get("CACHE_KEY_PREFIX", "hc:"),
            node_name=env.get("NODE_NAME") or socket.gethostname(),
            log_level=(env.get("LOG_LEVEL") or "INFO").upper(),
            ack_timeout=_float(env, "ACK_TIMEOUT", 2.0),
            max_body_bytes=_int(env, "MAX_BODY_BYTES", 64 * 1024),
            db_pool_size=_int(env, "DB_POOL_SIZE", 10),
            db_startup_timeout=_float(env, "DB_STARTUP_TIMEOUT", 30.0),
            write_token=_write_token(env),
            http=HttpLimits(
                max_head_bytes=_int(env, "HTTP_MAX_HEADER_BYTES", 16 * 1024),
                max_request_line=_int(env, "HTTP_MAX_REQUEST_LINE", 8 * 1024),
                header_timeout=_float(env, "HTTP_HEADER_TIMEOUT", 10.0),
                keepalive_timeout=_float(env, "HTTP_KEEPALIVE_TIMEOUT", 5.0),
                max_connections=_int(env, "HTTP_MAX_CONNECTIONS", 1000),
            ),
            http_backlog=_int(env, "HTTP_BACKLOG", 1024),
            outbox=_flag(env, "CATALOG_OUTBOX", True),
            relay_poll_interval=_float(env, "RELAY_POLL_INTERVAL", 0.1),
            relay_lease=_float(env, "RELAY_LEASE", 2.0),
            relay_grace=_float(env, "RELAY_GRACE", 0.3),
            metrics_port=_metrics_port(env),
        )
