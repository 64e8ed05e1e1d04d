"""JSON logs, one object per line, in the same shape as the catalog's
(``ts``, ``time``, ``level``, ``logger``, ``node``, ``msg``, ``exc``), so one
log pipeline parses both. kopf's per-object loggers add the resource they are
about as ``object``.

Written here rather than imported: the operator never imports the catalog.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Iterable
from typing import Any

import orjson

from .config import NODE_NAME
from .redaction import redact


class JsonFormatter(logging.Formatter):
    """``secrets`` (e.g. the Redis password) are masked wherever they appear,
    and every URL in a message or traceback has its credentials masked."""

    def __init__(self, node: str = NODE_NAME, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        self.node = node
        self.secrets = tuple(secrets)

    def format(self, record: logging.LogRecord) -> str:
        body: dict[str, Any] = {
            "ts": round(record.created, 6),
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "node": self.node,
            "msg": redact(record.getMessage(), self.secrets),
        }
        k8s = getattr(record, "k8s_ref", None)  # set by kopf's object loggers
        if isinstance(k8s, dict) and k8s.get("name"):
            body["object"] = f"{k8s.get('namespace') or ''}/{k8s['name']}".lstrip("/")
        if record.exc_info:
            body["exc"] = redact(self.formatException(record.exc_info), self.secrets)
        return orjson.dumps(body, default=str).decode()


def configure(*, verbose: bool = False, node: str = NODE_NAME,
              secrets: Iterable[str] = ()) -> None:
    """Route every logger (ours, kopf's, the clients') to stderr as JSON."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(node, secrets))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
