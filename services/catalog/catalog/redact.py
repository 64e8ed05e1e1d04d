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
    ``?password=``) replaced by ``***``; the user name stays.

    Split at the *last* ``@`` rather than parsed: a password with an unencoded
    ``@ / ? #`` (or a mistyped scheme) makes a URL parser see another host or a
    fragment and print the password's tail. Hiding too much is the safe error.
    """
    left, at, right = url.rpartition("@")
    host, question, _query = right.partition("?")
    shown = f"{host}?{HIDDEN}" if question else host
    if not at:
        return shown
    scheme, slashes, userinfo = left.partition("://")
    if not slashes:
        return f"{HIDDEN}@{shown}"
    user, colon, _password = userinfo.partition(":")
    return f"{scheme}://{user}{':' + HIDDEN if colon else ''}@{shown}"


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
