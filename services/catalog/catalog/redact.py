"""URLs as they may be shown: in logs, errors and command output.

Database and Redis URLs carry passwords (``postgresql://app:secret@db/catalog``,
``redis://:secret@redis:6379/0``); anything that prints one prints it through
``redact_url`` so the password never reaches a log collector.
"""

from __future__ import annotations

from urllib.parse import unquote, urlsplit

HIDDEN = "***"


def redact_url(url: str) -> str:
    """``url`` with its password and its query (which may carry one, e.g.
    ``?password=``) replaced by ``***``. Text that does not parse as a URL but
    holds an ``@`` loses everything before the last ``@``: a mistyped URL is
    exactly when a password could otherwise slip through."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return HIDDEN
    head, sep, _rest = url.partition("?")
    if sep:
        url = f"{head}?{HIDDEN}"
    if "@" not in parts.netloc:
        return url if "@" not in head else f"{HIDDEN}@{head.rpartition('@')[2]}" + (
            f"?{HIDDEN}" if sep else "")
    userinfo, _, host = parts.netloc.rpartition("@")
    user, colon, _password = userinfo.partition(":")
    netloc = f"{user}:{HIDDEN}@{host}" if colon else f"{user}@{host}"
    return url.replace(parts.netloc, netloc, 1)


def scrub(text: str, *urls: str | None) -> str:
    """``text`` (say, a driver's error message) with the password of each of
    ``urls`` removed, in case the driver quoted it back."""
    for url in urls:
        if not url:
            continue
        try:
            password = urlsplit(url).password
        except ValueError:
            continue
        if password:
            for form in {password, unquote(password)}:
                text = text.replace(form, HIDDEN)
    return text
