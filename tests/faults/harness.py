"""The fault suite's harness: a checker pass around one fault, and what every
pass must show afterwards.

A pass runs the consistency checker (``catalog_checker.Checker``, in a thread
of the test process, against real replica processes) from before a fault is
injected until after it healed, then its convergence check. The fault is
named in every failure, so a violation says which fault produced it. What
each pass must show (issue "Correct when Redis forgets and when a writer
dies"):

* 0 reads stale beyond the data type's ``maxStaleness``;
* 0 stale answers right after an acknowledged write that named no missing
  replica (the checker's acknowledged-write probe);
* 0 responses with a 5xx status;
* 0 lost writes: every entity the checker wrote holds, in the database, the
  value every replica converged on, which is its last answered write (or a
  later one whose answer never came);
* convergence within ``maxStaleness`` after the pass.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import httpx
from catalog_checker import Checker
from hybridcache.policy import Policy

from tests.support import plain_sql
from tests.support import policy_publish as publish

WRITE_TOKEN = "faults-write-token"
# What the suite runs under. price is `acknowledged`, so the checker's probe
# has writes to probe; category is `ttl` with short lifetimes, so its names
# converge within a pass (the default ttl keeps them 30 s). stock and product
# keep their defaults (active, eventual, 1 s).
SUITE_POLICIES = (
    Policy("price", "active", 600.0, 30.0, ("product:{id}",), "acknowledged", 1.0,
           generation=101, source="faults/price-acknowledged"),
    Policy("category", "ttl", 1.0, 0.5, (), "eventual", 1.5, generation=102,
           source="faults/category-short-ttl"),
)
PRODUCTS = list(range(150, 158))
CATEGORIES = [9, 10]


def publish_suite_policies(redis_url: str, prefix: str, nodes: Iterable[str]) -> None:
    publish.publish(redis_url, prefix, SUITE_POLICIES)
    names = list(nodes)
    for policy in SUITE_POLICIES:
        publish.wait_applied(redis_url, prefix, policy.data_type, policy.generation, names,
                             timeout=20.0)


class _Pass(Checker):
    """A checker that says when it is prepared (its history read) and can be
    stopped from another thread."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.ready = threading.Event()
        self.loop: asyncio.AbstractEventLoop | None = None
        self.stop_event: asyncio.Event | None = None
        self.probed_at: list[float] = []

    async def prepare(self, client: httpx.AsyncClient) -> None:
        await super().prepare(client)
        self.ready.set()

    async def probe(self, client: httpx.AsyncClient, dt: str, ident: int, slot: int) -> None:
        self.probed_at.append(time.monotonic())
        await super().probe(client, dt, ident, slot)

    async def main(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.stop_event = asyncio.Event()
        await self.run(0, readers=4, writers=2, stop=self.stop_event, read_pause=0.005,
                       write_pause=0.03)

    def stop(self) -> None:
        assert self.loop is not None and self.stop_event is not None
        with contextlib.suppress(RuntimeError):  # its loop already ended (it failed)
            self.loop.call_soon_threadsafe(self.stop_event.set)


@dataclass
class PassResult:
    fault: str
    summary: dict[str, Any]
    lost_writes: list[str] = field(default_factory=list)

    def violations(self) -> list[str]:
        s = self.summary
        out = []
        if s["stale_reads"]:
            per_type = {dt: v["stale_reads"] for dt, v in s["data_types"].items()
                        if v["stale_reads"]}
            out.append(f"{s['stale_reads']} reads stale beyond budget {per_type}")
        if s["ack_probe"]["stale_reads"]:
            out.append(f"{s['ack_probe']['stale_reads']} stale reads after a clean ack")
        if s["server_errors"]:
            out.append(f"{s['server_errors']} responses with a 5xx status")
        if s["convergence"]["not_converged_count"]:
            out.append(f"{s['convergence']['not_converged_count']} entities not converged:"
                       f" {s['convergence']['not_converged'][:3]}")
        if self.lost_writes:
            out.append(f"{len(self.lost_writes)} lost writes: {self.lost_writes[:5]}")
        # An acknowledged write either named missing replicas or was probed.
        # Under load a short pass can have every one of them name some (a new
        # epoch reports `members-unknown` for its first L + 0.5 s): still a
        # pass that checked what the system promised.
        acknowledged = s["ack_probe"]["writes"] + s["ack_probe"]["missing_reported"]
        if s["data_types"]["price"]["writes"] == 0 or acknowledged == 0:
            out.append("the pass made no acknowledged write: it checked nothing")
        return out

    def check(self) -> None:
        problems = self.violations()
        assert not problems, (f"fault {self.fault!r}: " + "; ".join(problems)
                              + f"\nerrors: {self.summary['errors'][:10]}"
                              + f"\nstale: {self.summary.get('stale_examples', [])[:10]}")


def run_pass(fault: str, urls: list[str], database_url: str, inject: Callable[[], None],
             heal: Callable[[], None], window: float, *, lead: float = 0.5,
             tail: float = 1.0, seed: int = 1) -> PassResult:
    """Run the checker, inject ``fault`` ``lead`` s after it started checking,
    heal it ``window`` s later (the fault's duration, not a synchronisation),
    keep checking ``tail`` s, then converge; the result says what it saw."""
    checker = _Pass(urls, PRODUCTS, CATEGORIES, seed, None, write_token=WRITE_TOKEN)
    failure: list[BaseException] = []

    def body() -> None:
        try:
            asyncio.run(checker.main())
        except BaseException as exc:  # handed to the test thread
            failure.append(exc)
            checker.ready.set()

    thread = threading.Thread(target=body, name=f"checker-{fault}", daemon=True)
    started = healed = time.monotonic()
    thread.start()
    try:
        assert checker.ready.wait(30), f"{fault}: the checker never got ready"
        if failure:
            raise failure[0]
        time.sleep(lead)
        try:
            inject()
            time.sleep(window)
        finally:
            heal()
            healed = time.monotonic()
        time.sleep(tail)
    finally:
        if checker.loop is not None:
            checker.stop()
        thread.join(60)
    assert not thread.is_alive(), f"{fault}: the checker did not stop"
    if failure:
        raise failure[0]
    summary = checker.summary(time.monotonic() - started)
    # How many clean acknowledged writes the probe checked once the fault healed.
    summary["ack_probe"]["writes_after_heal"] = sum(t >= healed for t in checker.probed_at)
    if os.environ.get("FAULTS_VERBOSE"):
        print(fault, {k: v for k, v in summary.items() if k != "final"})
    return PassResult(fault, summary, lost_writes(database_url, summary["final"]))


def _database_values(database_url: str) -> dict[tuple[str, int], Any]:
    """Everything the checker writes, as the database holds it (one query)."""
    ids = ", ".join(map(str, PRODUCTS))
    rows = plain_sql.run(database_url, f"""
        SELECT 'price', product_id, cents::text FROM prices WHERE product_id IN ({ids})
        UNION ALL SELECT 'stock', product_id, quantity::text FROM stock
            WHERE product_id IN ({ids})
        UNION ALL SELECT 'product', id, name FROM products WHERE id IN ({ids})
        UNION ALL SELECT 'membership', id, category_id::text FROM products WHERE id IN ({ids})
        UNION ALL SELECT 'category', id, name FROM categories
            WHERE id IN ({", ".join(map(str, CATEGORIES))})""")
    out: dict[tuple[str, int], Any] = {}
    for dt, ident, raw in rows:
        value: Any = raw
        if dt == "price":
            value = Decimal(raw) / 100
        elif dt in ("stock", "membership"):
            value = int(raw)
        out[dt, int(ident)] = value
    return out


def lost_writes(database_url: str, final: list[dict[str, Any]]) -> list[str]:
    """Entities whose database value is not the one every replica converged
    on (the checker's last answered write, or a later unanswered one)."""
    stored = _database_values(database_url)
    lost = []
    for item in final:
        dt, ident, value = item["data_type"], item["id"], item["value"]
        served = Decimal(value) if dt == "price" else value
        if stored.get((dt, ident)) != served:
            lost.append(f"{dt} {ident}: database {stored.get((dt, ident))!r}, replicas {value!r}")
    return lost


def served(client: httpx.Client, url: str, product_id: int) -> str:
    response = client.get(f"{url}/products/{product_id}")
    assert response.status_code == 200, (url, response.status_code, response.text)
    return str(response.json()["price"])


def stale_after(client: httpx.Client, urls: list[str], product_id: int, new: str,
                changed: float, budget: float, timeout: float = 10.0) -> list[str]:
    """Read ``product_id``'s price from every replica until each serves
    ``new``; a read sent more than ``budget`` after ``changed`` (when the
    change was known committed) that still shows another price is stale
    beyond budget, the checker's rule for a change it did not make itself."""
    stale: list[str] = []
    pending = set(urls)
    deadline = changed + budget + timeout
    while pending and time.monotonic() < deadline:
        for url in sorted(pending):
            sent = time.monotonic()
            price = served(client, url, product_id)
            if price == new:
                pending.discard(url)
            elif sent - changed > budget:
                stale.append(f"{url} served {price} {sent - changed:.2f}s after the change")
        time.sleep(0.02)
    stale.extend(f"{url} never served {new}" for url in sorted(pending))
    return stale
