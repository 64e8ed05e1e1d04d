"""No secret in output: the Redis password never appears in what ``apply`` and
``run`` print or log, nor in what the operator writes to the API (status,
Events), whether Redis is unreachable or refuses the password."""

from __future__ import annotations

import logging
import subprocess
import sys
from typing import Any

import pytest
from cache_operator.logs import JsonFormatter
from cache_operator.redaction import MASK, redact, redact_url, secrets_of

from tests.operator.conftest import CIP, ROOT, eventually
from tests.operator.crd_tools import EXAMPLES
from tests.operator.test_e2e import cip, condition, events
from tests.support.redis_server import free_port

PASSWORD = "s3cr3t-Pa55word"


@pytest.mark.parametrize(("url", "shown"), [
    (f"redis://:{PASSWORD}@10.0.0.1:6379/0", "redis://:***@10.0.0.1:6379/0"),
    (f"rediss://operator:{PASSWORD}@redis:6380/1", "rediss://operator:***@redis:6380/1"),
    (f"redis://{PASSWORD}@redis:6379", "redis://***@redis:6379"),
    (f"redis://redis:6379/0?password={PASSWORD}&socket_timeout=5",
     "redis://redis:6379/0?password=***&socket_timeout=5"),
    (f"unix://:{PASSWORD}@/run/redis.sock?db=0", "unix://:***@/run/redis.sock?db=0"),
    ("redis://redis:6379/0", "redis://redis:6379/0"),
    ("redis://:@redis:6379/0", "redis://:@redis:6379/0"),
])
def test_redact_url(url: str, shown: str) -> None:
    assert redact_url(url) == shown
    assert PASSWORD not in redact(f"error: cannot reach {url}, giving up")


def test_redact_text_and_literal_secrets() -> None:
    url = f"redis://:{PASSWORD}@r:6379/0"
    assert redact(f"'{url}' failed") == "'redis://:***@r:6379/0' failed"
    assert secrets_of(url) == (PASSWORD,)
    assert secrets_of("redis://:p%40ss@r/0") == ("p%40ss", "p@ss")
    assert redact(f"AUTH {PASSWORD} refused", secrets_of(url)) == f"AUTH {MASK} refused"
    assert redact_url(f"redis://:{PASSWORD}@[::1/0") == "redis://***"  # unparsable: nothing


def test_log_lines_are_redacted() -> None:
    formatter = JsonFormatter(secrets=[PASSWORD])
    try:
        raise ConnectionError(f"to redis://:{PASSWORD}@r:6379/0")
    except ConnectionError:
        exc_info = sys.exc_info()
    record = logging.LogRecord("x", logging.WARNING, __file__, 1, "cannot use %s (%s)",
                               (f"redis://u:{PASSWORD}@r/0", PASSWORD), exc_info)
    line = formatter.format(record)
    assert PASSWORD not in line and "redis://u:***@r/0" in line and MASK in line


def apply(url: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "cache_operator", "apply", "-f", str(EXAMPLES),
                           "--redis-url", url], capture_output=True, text=True, timeout=60,
                          cwd=ROOT)


def test_apply_never_prints_the_password(redis_server: Any) -> None:
    unreachable = apply(f"redis://:{PASSWORD}@127.0.0.1:{free_port()}/0")
    assert unreachable.returncode == 3
    assert "error: cannot publish to redis://:***@127.0.0.1:" in unreachable.stderr

    redis_server.cli("CONFIG", "SET", "requirepass", "the-right-one")
    refused = apply(f"redis://:{PASSWORD}@127.0.0.1:{redis_server.port}/0")
    assert refused.returncode == 3
    assert refused.stderr.startswith(
        f"error: cannot publish to redis://:***@127.0.0.1:{redis_server.port}/0: ")
    for proc in (unreachable, refused):
        assert PASSWORD not in proc.stdout + proc.stderr


@pytest.mark.slow
async def test_run_never_logs_or_posts_the_password(
        kube: Any, kubectl: Any, start_operator: Any, redis_server: Any) -> None:
    redis_server.cli("CONFIG", "SET", "requirepass", "the-right-one")
    refused = start_operator(
        REDIS_URL=f"redis://:{PASSWORD}@127.0.0.1:{redis_server.port}/0",
        REDIS_RETRY_DELAY="0.2")
    await kubectl.apply(cip("price"))

    def price() -> dict[str, Any] | None:
        return kube.call(kube.api.get, CIP, "default", "price")  # type: ignore[no-any-return]

    await eventually(lambda: condition(price(), "Applied").get("reason") == "RedisUnavailable",
                     what="Applied=False RedisUnavailable")
    status_message = condition(price(), "Applied")["message"]
    assert status_message.startswith("cannot reach Redis") and PASSWORD not in status_message
    await eventually(lambda: "fleet health round failed" in refused.output(),
                     what="a failed health round logged")
    refused.stop()
    unreachable = start_operator(
        REDIS_URL=f"redis://:{PASSWORD}@127.0.0.1:{free_port()}/0", REDIS_RETRY_DELAY="0.2")
    await eventually(lambda: "fleet health round failed" in unreachable.output(),
                     what="a failed health round logged")
    await kubectl.arun("delete", "--wait=false", "cip", "price")
    await eventually(lambda: price() is None, what="finalizer released without Redis")
    unreachable.stop()

    for op in (refused, unreachable):
        assert PASSWORD not in op.output()
    posted = " ".join(str(e.get("message")) for e in events(kube))
    assert "cannot reach Redis" in posted and PASSWORD not in posted
