"""Free loopback ports for the servers a test starts (Redis, replicas, metrics)."""

from __future__ import annotations

import socket


def free_port() -> int:
    """A port nobody listens on right now. The kernel may hand it out again
    before the caller binds it, which on loopback in a test run is rare enough."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
