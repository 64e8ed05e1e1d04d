"""What a ``REDIS_URL`` may say, checked before anything connects.

One parser for every component (the library's ``CacheOptions.redis_url``,
the catalog, the operator), so each accepts the same forms and rejects a
bad one with the same words:

- ``redis://[user:password@]host:port/db`` and ``rediss://…`` (TLS), and
  ``unix:///path.sock?db=N``: one server (what redis-py's ``from_url`` reads);
- ``redis+sentinel://[user:password@]h1:26379,h2:26379/<master>/<db>``
  (``rediss+sentinel://`` for TLS to the sentinels and the master): the
  master of that name, found through Sentinel, followed across failovers.
  The URL's credentials serve the sentinels too unless
  ``?sentinel_username=&sentinel_password=`` give their own;
- ``redis+cluster://[user:password@]h1:7000,h2:7001,h3:7002`` (``rediss+cluster://``
  for TLS): a Redis Cluster; the hosts are seeds (any reachable one gives
  the topology, which the client then follows), database 0 only.

TLS files come as redis-py's query arguments (``ssl_ca_certs``,
``ssl_certfile``, ``ssl_keyfile``); :func:`with_tls_env` adds them from
``REDIS_TLS_CA_FILE`` / ``REDIS_TLS_CERT_FILE`` / ``REDIS_TLS_KEY_FILE``.

Every error is a ``ValueError`` that names the URL with its password masked
(:func:`redact`): these messages end up in logs and Kubernetes Events.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Literal
from urllib.parse import parse_qsl, quote, unquote, urlencode

from redis.asyncio.connection import URL_QUERY_ARGUMENT_PARSERS, parse_url

MASK: Final = "***"
Mode = Literal["standalone", "sentinel", "cluster"]

_SCHEMES: Final[dict[str, tuple[Mode, bool]]] = {
    "redis": ("standalone", False), "rediss": ("standalone", True),
    "unix": ("standalone", False),
    "redis+sentinel": ("sentinel", False), "rediss+sentinel": ("sentinel", True),
    "redis+cluster": ("cluster", False), "rediss+cluster": ("cluster", True),
}
# Query arguments holding credentials: masked wherever a URL is shown.
_SECRET_QUERY: Final = frozenset({"password", "sentinel_password"})
# Query arguments of our own (not redis-py connection arguments).
_SENTINEL_QUERY: Final = ("sentinel_username", "sentinel_password")
# Query arguments redis-py takes as connection arguments (typed by its URL
# parser, or strings); anything else would fail at the first connection.
_KNOWN_QUERY: Final = frozenset({*URL_QUERY_ARGUMENT_PARSERS, "password", "username",
                                 "client_name", "ssl_ca_certs", "ssl_ca_path", "ssl_certfile",
                                 "ssl_keyfile", "ssl_cert_reqs", "ssl_password",
                                 *_SENTINEL_QUERY})
# Environment variable -> redis-py's TLS argument.
TLS_ENV: Final = {"REDIS_TLS_CA_FILE": "ssl_ca_certs",
                  "REDIS_TLS_CERT_FILE": "ssl_certfile",
                  "REDIS_TLS_KEY_FILE": "ssl_keyfile"}


def redact(url: str) -> str:
    """``url`` as it may be printed: the password (userinfo and secret query
    arguments) masked; scheme, user, hosts, path and other arguments kept, so
    the message still says where it tried to connect. Split at the *last*
    ``@`` rather than parsed: a password holding ``@ / ? #`` must not leak
    its tail through a parser that saw another host in it."""
    scheme, slashes, rest = url.partition("://")
    if not slashes:
        return MASK if "@" in url or ":" in url else url
    userinfo, at, hostpart = rest.rpartition("@")
    if at:
        user, colon, _password = userinfo.partition(":")
        userinfo = f"{user}:{MASK}@" if colon else f"{MASK}@"
    hostpart, question, query = hostpart.partition("?")
    if question:
        pairs = parse_qsl(query, keep_blank_values=True)
        query = "?" + urlencode(
            [(k, MASK if k.lower() in _SECRET_QUERY else v) for k, v in pairs], safe="*/")
    return f"{scheme}://{userinfo}{hostpart}{query}"


def secrets_of(url: str) -> tuple[str, ...]:
    """The credentials in ``url`` (raw and percent-decoded), for masking an
    error text that quotes one without the URL around it."""
    _scheme, _, rest = url.partition("://")
    userinfo, at, hostpart = rest.rpartition("@")
    found: list[str] = []
    if at:
        user, colon, password = userinfo.partition(":")
        found.append(password if colon else user)
    found += [v for k, v in parse_qsl(hostpart.partition("?")[2]) if k.lower() in _SECRET_QUERY]
    return tuple(dict.fromkeys(s for f in found for s in (f, unquote(f)) if s))


def _fail(url: str, problem: str) -> ValueError:
    return ValueError(f"REDIS_URL {redact(url)}: {problem}")


@dataclass(frozen=True, slots=True)
class RedisTarget:
    """A parsed REDIS_URL: which servers, in which mode, and the connection
    arguments (redis-py's) every connection to them takes."""

    url: str = field(repr=False)  # holds the password: show ``shown`` instead
    mode: Mode
    tls: bool
    hosts: tuple[tuple[str, int], ...]  # the server, the sentinels or the seeds
    master: str | None  # sentinel: the monitored master's name
    connection: Mapping[str, Any] = field(repr=False)  # db, credentials, TLS, ...
    sentinel_auth: Mapping[str, str] = field(repr=False)

    @property
    def shown(self) -> str:
        return redact(self.url)


def _hosts(url: str, netloc: str, default_port: int) -> tuple[tuple[str, int], ...]:
    hostlist = netloc.rpartition("@")[2]
    if not hostlist:
        raise _fail(url, "no host")
    hosts = []
    for item in hostlist.split(","):
        item = item.strip()
        if item.startswith("["):  # [IPv6]:port
            host, _, tail = item[1:].partition("]")
            port_text = tail.removeprefix(":")
        else:
            host, _, port_text = item.partition(":")
        if not host:
            raise _fail(url, f"an empty host in {hostlist!r}")
        if not port_text:
            port = default_port
        elif port_text.isdigit() and 0 < int(port_text) < 65536:
            port = int(port_text)
        else:
            raise _fail(url, f"{port_text!r} is not a TCP port (host {host!r})")
        hosts.append((unquote(host), port))
    return tuple(hosts)


def _db(url: str, text: str) -> int:
    if not text:
        return 0
    if not text.isdigit():
        raise _fail(url, f"the database must be a number, got {text!r}")
    return int(text)


def parse_redis_url(url: str) -> RedisTarget:
    """Check ``url`` and say what it names; ``ValueError`` (password masked)
    for anything that could not connect as written."""
    if not isinstance(url, str) or not url.strip():
        raise ValueError("REDIS_URL is empty")
    scheme, slashes, _ = url.partition("://")
    if not slashes or scheme.lower() not in _SCHEMES:
        known = ", ".join(f"{s}://" for s in _SCHEMES)
        raise _fail(url, f"unknown scheme {scheme!r} (expected one of {known})"
                    if slashes else "not a URL (expected redis://host:port/db)")
    mode, tls = _SCHEMES[scheme.lower()]
    # Split by hand: urlsplit refuses "h1:1,h2:2" as a port.
    rest = url.partition("://")[2]
    rest, _, _fragment = rest.partition("#")
    rest, _, query = rest.partition("?")
    netloc, slash, path = rest.partition("/")
    pairs = parse_qsl(query, keep_blank_values=True)
    unknown = sorted({k for k, _ in pairs} - _KNOWN_QUERY)
    if unknown:
        raise _fail(url, f"unknown query argument {unknown[0]!r}")
    sentinel_auth = {k.removeprefix("sentinel_"): v for k, v in pairs if k in _SENTINEL_QUERY}
    plain_query = urlencode([(k, v) for k, v in pairs if k not in _SENTINEL_QUERY])
    if sentinel_auth and mode != "sentinel":
        raise _fail(url, "sentinel_username/sentinel_password need redis+sentinel://")
    userinfo = netloc.rpartition("@")[0]
    auth = f"{userinfo}@" if "@" in netloc else ""
    master: str | None = None
    if scheme.lower() == "unix":
        hosts: tuple[tuple[str, int], ...] = ()
        db_path = ""
    elif mode == "sentinel":
        hosts = _hosts(url, netloc, 26379)
        parts = path.split("/") if slash else []
        if not parts or not parts[0]:
            raise _fail(url, "no master name (expected redis+sentinel://host:26379/<master>/<db>)")
        if len(parts) > 2:
            raise _fail(url, f"unexpected path {'/' + path!r} (expected /<master>/<db>)")
        master = unquote(parts[0])
        db_path = parts[1] if len(parts) == 2 else ""
    else:
        hosts = _hosts(url, netloc, 6379)
        if mode == "standalone" and len(hosts) > 1:
            raise _fail(url, "several hosts need redis+sentinel:// or redis+cluster://")
        db_path = path
    if _db(url, db_path) and mode == "cluster":
        raise _fail(url, f"Redis Cluster has only database 0, got /{db_path}")
    # redis-py reads the credentials, database and query arguments of one
    # server; for Sentinel the connection arguments are the master's.
    one = (url if scheme.lower() == "unix" else
           f"{'rediss' if tls else 'redis'}://{auth}{hosts[0][0]}:{hosts[0][1]}/"
           f"{db_path or 0}{'?' + plain_query if plain_query else ''}")
    try:
        connection = parse_url(one)
    except (ValueError, TypeError) as exc:
        raise _fail(url, str(exc).replace(one, redact(one))) from None
    for name in ("host", "port", "connection_class", "path"):
        if scheme.lower() != "unix":
            connection.pop(name, None)  # type: ignore[misc]
    return RedisTarget(url=url, mode=mode, tls=tls, hosts=hosts, master=master,
                       connection=dict(connection), sentinel_auth=sentinel_auth)


def with_tls_env(url: str | None, env: Mapping[str, str] | None = None) -> str | None:
    """``url`` with ``REDIS_TLS_CA_FILE`` (a private CA bundle),
    ``REDIS_TLS_CERT_FILE`` and ``REDIS_TLS_KEY_FILE`` (a client certificate)
    added as redis-py's TLS query arguments. Only a TLS URL can use them;
    a file that cannot be read is named now rather than at the first
    connection."""
    env = os.environ if env is None else env
    files = {arg: env[name] for name, arg in TLS_ENV.items() if env.get(name)}
    if url is None or not files:
        return url
    if not url.partition("://")[0].lower().startswith("rediss"):
        names = ", ".join(n for n, a in TLS_ENV.items() if a in files)
        raise ValueError(f"{names} needs a TLS URL (rediss://, rediss+sentinel:// or rediss+cluster://)"
                         f" in REDIS_URL, got {redact(url)}")
    if ("ssl_certfile" in files) != ("ssl_keyfile" in files):
        raise ValueError("REDIS_TLS_CERT_FILE and REDIS_TLS_KEY_FILE go together")
    for name, arg in TLS_ENV.items():
        if arg in files and not os.access(files[arg], os.R_OK):
            raise ValueError(f"{name}: cannot read {files[arg]}")
    extra = "&".join(f"{arg}={quote(path, safe='')}" for arg, path in files.items())
    return f"{url}{'&' if '?' in url else '?'}{extra}"


__all__ = ["RedisTarget", "parse_redis_url", "redact", "secrets_of", "with_tls_env"]
