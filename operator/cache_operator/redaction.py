"""Secrets out of everything the operator prints, logs or writes to the
Kubernetes API (status messages, Events).

``REDIS_URL`` usually carries the password (``redis://:<password>@host``, or
``?password=`` in the query, which redis-py accepts too). Any text that might
contain a URL (an error message, an argument echoed back) goes through
:func:`redact` before it is shown; the JSON log formatter applies it to every
line as a backstop, and also removes the configured password wherever it
appears literally (an error quoting it without the URL around it).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Final
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

MASK: Final = "***"
# Query parameters whose values are credentials.
_SECRET_PARAMS: Final = frozenset(
    {"password", "passwd", "pass", "pwd", "token", "secret", "auth", "access_token",
     "sentinel_password"})
# Anything that looks like scheme://..., up to whitespace, a quote or a bracket.
_URL: Final = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"<>()\[\]{}]+")


def redact_url(url: str) -> str:
    """``url`` with its password (userinfo and secret query parameters) masked;
    user, host, port, path and other parameters are kept, so the message still
    says where the operator tried to connect."""
    try:
        parts = urlsplit(url)
    except ValueError:  # e.g. an invalid IPv6 host: show nothing of it
        return f"{url.partition('://')[0]}://{MASK}"
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, _, hostport = netloc.rpartition("@")
        user, sep, password = userinfo.partition(":")
        if sep and password:
            netloc = f"{user}:{MASK}@{hostport}"
        elif not sep and user:
            # redis://<secret>@host: redis-py takes it as a user name, but a
            # lone userinfo is often a token; mask it rather than guess.
            netloc = f"{MASK}@{hostport}"
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        if any(k.lower() in _SECRET_PARAMS for k, _ in pairs):
            query = urlencode([(k, MASK if k.lower() in _SECRET_PARAMS else v)
                               for k, v in pairs], safe="*")
    if netloc == parts.netloc and query == parts.query:
        return url
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """``text`` with every URL in it passed through :func:`redact_url`, and every
    literal occurrence of ``secrets`` masked."""
    out = _URL.sub(lambda m: redact_url(m.group(0)), text)
    for secret in secrets:
        if secret:
            out = out.replace(secret, MASK)
    return out


def secrets_of(url: str) -> tuple[str, ...]:
    """The credentials inside a URL (its password and secret query values), for
    :func:`redact`'s literal pass."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return ()
    found = [parts.password] if parts.password else []
    if parts.username and parts.password is None and "@" in parts.netloc:
        found.append(parts.username)
    found += [v for k, v in parse_qsl(parts.query) if k.lower() in _SECRET_PARAMS and v]
    # urlsplit keeps %-escapes: the decoded form may be what an error quotes.
    return tuple(dict.fromkeys(s for f in found for s in (f, unquote(f)) if s))
