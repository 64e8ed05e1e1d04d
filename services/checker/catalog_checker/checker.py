"""Judging reads against the writes they could reflect.

A small Polaris (Meta's cache consistency checker): for a set duration it
writes random new values (price, stock, product name, category name) through
random replicas and reads them back through random replicas. Each written
value is unique, so a read tells exactly which write it reflects. A read is
*stale beyond budget* when, at the moment it was sent, a newer write of that
data type had already been answered more than the type's ``maxStaleness``
earlier (the budget comes from the replicas' effective policies, ``GET
/policies``).

Lists are checked too: it moves its products between its categories
(``PATCH /products/{id}`` with a new ``category_id``) and reads the
categories' lists (``GET /categories/{id}/products`` and ``GET
/products?category_id=``). A list read is stale beyond budget when a product
shows up in a category it had already left more than ``maxStaleness`` (of
``product``) earlier, or is missing from the only category it can be in. The
items a list shows are judged like ``GET /products/{id}`` reads.

The products and categories it writes must not be written by anyone else
while it runs (``--products 150-159``, ``--categories 9-10``), or it creates
its own: with ``own_products`` it adds that many new products at start
(nobody else knows their ids), checks only those (no categories: the API
cannot create one) and deletes them when it stops, so a checker left running
in a cluster never touches real data.

Two checks need no timing judgement at all:

* **The acknowledged-write probe.** A write whose answer says its data type
  is ``acknowledged`` (``X-Invalidation: price=active/acknowledged``) and
  names no missing replica (no ``X-Invalidation-Missing``) promises that no
  replica serves the old value any more. Right after such an answer the
  checker reads the entity from every replica; any answer older than the
  write is a broken promise (``ack_probe.stale``), whatever the budget.
* **Convergence.** After the run (every fault healed by then: that is the
  caller's side of the bargain), every entity it wrote must be served, by
  every replica, as the value of its last answered write (or of a later write
  whose answer never came: it may have committed), all replicas agreeing,
  within that type's ``maxStaleness`` of the end of the run. Entities still
  differing then are ``convergence.not_converged``, as are category lists
  that still show a moved product outside the category it converged on, or
  miss it there. The agreed values are in the summary (``final``), so a
  caller can compare them with the database.
"""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
from prometheus_client import Counter

CHECKED = ("price", "stock", "product", "category", "membership")
PAGE = 100  # the largest page the catalog serves
# The field of GET /products/{id} (or /categories/{id}) each data type writes.
FIELD = {"price": "price", "stock": "stock", "product": "name", "category": "name",
         "membership": "category_id"}
CONVERGE_POLL = 0.05  # seconds between two rounds of convergence reads
STALE_EXAMPLES = 20  # stale reads described in the summary (the count is exact)


def shown(url: str) -> str:
    """A replica URL as printed: any user and password in it become ``***``
    (the summary and errors end up in CI logs)."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc="***@" + parts.netloc.rpartition("@")[2]))


@dataclass
class TypeStats:
    budget: float = 1.0
    reads: int = 0
    writes: int = 0
    stale: int = 0
    worst_lag: float = 0.0  # oldest newer-write age seen in a read (within budget or not)


@dataclass
class History:
    """The values one field took, in write order, with when each write was answered."""

    values: list[Any] = field(default_factory=list)
    done: list[float | None] = field(default_factory=list)
    index: dict[Any, int] = field(default_factory=dict)

    def add(self, value: Any, done: float | None) -> int:
        self.index[value] = len(self.values)
        self.values.append(value)
        self.done.append(done)
        return len(self.values) - 1


@dataclass
class Moves:
    """The categories one product was moved to, in write order, with when each
    move was answered (None while in flight)."""

    categories: list[int] = field(default_factory=list)
    done: list[float | None] = field(default_factory=list)

    def add(self, category: int, done: float | None) -> int:
        self.categories.append(category)
        self.done.append(done)
        return len(self.categories) - 1

    def possible(self, before: float) -> set[int]:
        """Where the product may be seen by a read that must reflect every move
        answered before ``before``: the last such move, and every later one."""
        first = 0
        for i, done in enumerate(self.done):
            if done is not None and done < before:
                first = i
        return set(self.categories[first:])


@dataclass
class AckProbe:
    """The acknowledged-write probe's counts (see the module docstring)."""

    writes: int = 0      # acknowledged writes answered with no missing replica
    missing: int = 0     # acknowledged writes that named missing replicas (not probed)
    reads: int = 0
    stale: int = 0
    stale_by_replica: dict[str, int] = field(default_factory=dict)


@dataclass
class Convergence:
    entities: int = 0
    waited: float = 0.0
    not_converged: list[dict[str, Any]] = field(default_factory=list)
    final: list[dict[str, Any]] = field(default_factory=list)


class Checker:
    def __init__(self, urls: list[str], products: list[int], categories: list[int],
                 seed: int, metrics: dict[str, Counter] | None, *,
                 own_products: int = 0, write_token: str | None = None) -> None:
        self.urls = [shown(u) for u in urls]  # as printed; requests go to self._urls
        self._urls = urls
        self.write_token = write_token
        self.own_products = own_products
        self.products = [] if own_products else products
        self.categories = [] if own_products else categories
        self.rng = random.Random(seed)
        self.stats = {dt: TypeStats() for dt in CHECKED}
        self.history: dict[tuple[str, int], History] = {}
        self.moves: dict[int, Moves] = {}
        self.busy: set[tuple[str, int]] = set()
        self.counter = 0
        self.errors: list[str] = []
        self.stale_examples: list[str] = []
        self.server_errors = 0
        self.unauthorized = 0
        self.metrics = metrics
        self.ack = AckProbe()
        self.convergence = Convergence()
        self.written: set[tuple[str, int]] = set()

    def _failed(self, what: str, status: int) -> None:
        self.errors.append(f"{what}: HTTP {status}")
        if status >= 500:
            self.server_errors += 1
        elif status == 401:  # no or wrong write token: nothing is being checked
            self.unauthorized += 1

    def _count(self, name: str, dt: str) -> None:
        if self.metrics is not None:
            self.metrics[name].labels(dt).inc()

    async def create_own(self, client: httpx.AsyncClient) -> None:
        """Add ``own_products`` new products (in the first category) to check."""
        response = await client.get(f"{self._urls[0]}/categories")
        response.raise_for_status()
        items = response.json()["items"]
        if not items:
            raise RuntimeError("the catalog has no category to create products in")
        for n in range(self.own_products):
            response = await client.post(f"{self._urls[0]}/products", json={
                "name": f"staleness checker probe {n}", "category_id": items[0]["id"],
                "price": "1.00", "stock": 0})
            response.raise_for_status()
            self.products.append(response.json()["id"])

    async def delete_own(self, client: httpx.AsyncClient) -> None:
        """Delete the products ``create_own`` added (best effort: we are stopping)."""
        for pid in self.products:
            try:
                await client.delete(f"{self._urls[0]}/products/{pid}")
            except httpx.HTTPError as exc:
                self.errors.append(f"delete own product {pid}: {exc}")

    def _types(self) -> tuple[str, ...]:
        """What this run writes and checks: categories and list membership
        only when it owns categories (``--own-products`` owns none)."""
        if self.categories:
            return CHECKED
        return tuple(t for t in CHECKED if t not in ("category", "membership"))

    async def prepare(self, client: httpx.AsyncClient) -> None:
        if self.own_products:
            await self.create_own(client)
        policies = (await client.get(f"{self._urls[0]}/policies")).json()
        for dt in CHECKED:
            if dt in policies:
                self.stats[dt].budget = float(policies[dt]["maxStaleness"])
        for pid in self.products:
            body = (await client.get(f"{self._urls[0]}/products/{pid}")).json()
            for dt, name in (("price", "price"), ("stock", "stock"), ("product", "name")):
                self.history[dt, pid] = History()
                self.history[dt, pid].add(body[name], time.monotonic())
            self.moves[pid] = Moves()
            self.moves[pid].add(body["category_id"], time.monotonic())
        self.stats["membership"].budget = float(policies["product"]["maxStaleness"])
        for cid in self.categories:
            body = (await client.get(f"{self._urls[0]}/categories/{cid}")).json()
            self.history["category", cid] = History()
            self.history["category", cid].add(body["name"], time.monotonic())

    def _next(self) -> int:
        self.counter += 1
        return self.counter

    async def write_once(self, client: httpx.AsyncClient) -> None:
        dt = self.rng.choice(self._types())
        if dt == "membership" and len(self.categories) < 2:
            return
        ident = self.rng.choice(self.categories if dt == "category" else self.products)
        if (dt, ident) in self.busy:
            return
        self.busy.add((dt, ident))
        index = self.rng.randrange(len(self._urls))
        url, where = self._urls[index], self.urls[index]
        n = self._next()
        try:
            if dt == "price":
                value: Any = f"{n}.{n % 100:02d}"
                req = client.put(f"{url}/products/{ident}/price", json={"price": value})
            elif dt == "stock":
                value = n
                req = client.put(f"{url}/products/{ident}/stock", json={"stock": value})
            elif dt == "product":
                value = f"checked product {ident} v{n}"
                req = client.patch(f"{url}/products/{ident}", json={"name": value})
            elif dt == "membership":
                moves = self.moves[ident]
                value = self.rng.choice([c for c in self.categories
                                         if c != moves.categories[-1]])
                req = client.patch(f"{url}/products/{ident}", json={"category_id": value})
            else:
                value = f"checked category {ident} v{n}"
                req = client.patch(f"{url}/categories/{ident}", json={"name": value})
            hist: History | Moves = (self.moves[ident] if dt == "membership"
                                     else self.history[dt, ident])
            slot = hist.add(value, None)  # known before it can be read
            response = await req
            if response.status_code != 200:
                self._failed(f"write {dt} {ident} on {where}", response.status_code)
                return
            hist.done[slot] = time.monotonic()
            self.stats[dt].writes += 1
            self.written.add((dt, ident))
            self._count("writes", dt)
            if response.headers.get("x-invalidation", "").endswith("/acknowledged"):
                if response.headers.get("x-invalidation-missing"):
                    self.ack.missing += 1
                else:
                    self.ack.writes += 1
                    await self.probe(client, dt, ident, slot)
        finally:
            self.busy.discard((dt, ident))

    def _entity_url(self, url: str, dt: str, ident: int) -> str:
        kind = "categories" if dt == "category" else "products"
        return f"{url}/{kind}/{ident}"

    def _values(self, dt: str, ident: int) -> list[Any]:
        return (self.moves[ident].categories if dt == "membership"
                else self.history[dt, ident].values)

    async def probe(self, client: httpx.AsyncClient, dt: str, ident: int, slot: int) -> None:
        """The acknowledged-write probe: write ``slot`` of (``dt``, ``ident``)
        was acknowledged by every replica, so each must now answer it (or a
        later write's value: the writers go on meanwhile)."""

        async def read(index: int) -> None:
            response = await client.get(self._entity_url(self._urls[index], dt, ident))
            if response.status_code != 200:
                self._failed(f"ack probe of {dt} {ident} on {self.urls[index]}",
                             response.status_code)
                return
            self.ack.reads += 1
            self._count("reads", dt)
            value = response.json()[FIELD[dt]]
            values = self._values(dt, ident)
            if value not in values[slot:]:
                self.ack.stale += 1
                where = self.urls[index]
                self.ack.stale_by_replica[where] = self.ack.stale_by_replica.get(where, 0) + 1
                self._count("stale", dt)
                self.errors.append(f"ack probe: {where} served {dt} {ident} = {value!r}"
                                   f" after the acknowledged write of {values[slot]!r}"
                                   f" (x-cache: {response.headers.get('x-cache', '-')})")

        await asyncio.gather(*[read(i) for i in range(len(self._urls))])

    def judge(self, dt: str, ident: int, value: Any, sent: float,
              where: str = "", cache: str = "") -> None:
        stats, hist = self.stats[dt], self.history[dt, ident]
        stats.reads += 1
        self._count("reads", dt)
        idx = hist.index.get(value)
        if idx is None:
            self.errors.append(f"{dt} {ident}: read a value nobody wrote: {value!r}")
            return
        # The first write after the one read, answered before the read was sent.
        for later in range(idx + 1, len(hist.values)):
            done = hist.done[later]
            if done is not None and done < sent:
                lag = sent - done
                stats.worst_lag = max(stats.worst_lag, lag)
                if lag > stats.budget:
                    stats.stale += 1
                    self._count("stale", dt)
                    if len(self.stale_examples) < STALE_EXAMPLES:
                        self.stale_examples.append(
                            f"{where} served {dt} {ident} = {value!r} {lag:.2f} s after a"
                            f" newer write was answered (x-cache: {cache or '-'})")
                return

    def judge_list(self, category: int, shown: set[int], sent: float) -> None:
        """One read of ``category``'s list (every page): each checked product
        must be where the moves answered more than the budget ago put it."""
        stats = self.stats["membership"]
        before = sent - stats.budget
        for pid, moves in self.moves.items():
            stats.reads += 1
            self._count("reads", "membership")
            possible = moves.possible(before)
            present = pid in shown
            if (present and category not in possible) or (not present and possible == {category}):
                stats.stale += 1
                self._count("stale", "membership")
                where = "in" if present else "missing from"
                self.errors.append(f"product {pid} {where} category {category}'s list; "
                                   f"it may only be in {sorted(possible)}")

    async def read_list(self, client: httpx.AsyncClient, url: str, where: str) -> None:
        """Read every page of one category's list (``url`` is requested,
        ``where`` is what errors print: no credentials)."""
        cid = self.rng.choice(self.categories)
        by_category = self.rng.random() < 0.5
        path = f"/categories/{cid}/products" if by_category else "/products"
        sent = time.monotonic()
        shown: set[int] = set()
        offset, last = 0, max(self.products)
        while True:
            params = {"limit": PAGE, "offset": offset}
            if not by_category:
                params["category_id"] = cid
            response = await client.get(f"{url}{path}", params=params)
            if response.status_code != 200:
                self._failed(f"read list of category {cid} on {where}", response.status_code)
                return
            items = response.json()["items"]
            for item in items:
                pid = item["id"]
                shown.add(pid)
                if pid in self.moves:
                    self.judge("price", pid, item["price"], sent, where, "list")
                    self.judge("stock", pid, item["stock"], sent, where, "list")
                    self.judge("product", pid, item["name"], sent, where, "list")
            if len(items) < PAGE or items[-1]["id"] >= last:
                break
            offset += PAGE
        self.judge_list(cid, shown, sent)

    async def read_once(self, client: httpx.AsyncClient) -> None:
        index = self.rng.randrange(len(self._urls))
        url, where = self._urls[index], self.urls[index]
        draw = self.rng.random()
        if draw < 0.1 and self.categories:
            await self.read_list(client, url, where)
            return
        if draw < 0.3 and self.categories:
            cid = self.rng.choice(self.categories)
            sent = time.monotonic()
            response = await client.get(f"{url}/categories/{cid}")
            if response.status_code != 200:
                self._failed(f"read category {cid} on {where}", response.status_code)
            else:
                self.judge("category", cid, response.json()["name"], sent, where,
                           response.headers.get("x-cache", ""))
            return
        pid = self.rng.choice(self.products)
        sent = time.monotonic()
        response = await client.get(f"{url}/products/{pid}")
        if response.status_code != 200:
            self._failed(f"read product {pid} on {where}", response.status_code)
            return
        body = response.json()
        cache = response.headers.get("x-cache", "")
        self.judge("price", pid, body["price"], sent, where, cache)
        self.judge("stock", pid, body["stock"], sent, where, cache)
        self.judge("product", pid, body["name"], sent, where, cache)

    async def run(self, duration: float, readers: int, writers: int,
                  stop: asyncio.Event, *, read_pause: float = 0.002,
                  write_pause: float = 0.02, converge: bool = True) -> None:
        limits = httpx.Limits(max_connections=readers + writers + 4)
        headers = {"Authorization": f"Bearer {self.write_token}"} if self.write_token else {}
        async with httpx.AsyncClient(timeout=10.0, limits=limits, headers=headers) as client:
            await self.prepare(client)
            deadline = time.monotonic() + duration if duration > 0 else float("inf")

            async def loop(step: Any, pause: float) -> None:
                while time.monotonic() < deadline and not stop.is_set():
                    try:
                        await step(client)
                    except httpx.HTTPError as exc:
                        self.errors.append(f"{type(exc).__name__}: {exc}")
                    await asyncio.sleep(pause)

            try:
                await asyncio.gather(*[loop(self.read_once, read_pause) for _ in range(readers)],
                                     *[loop(self.write_once, write_pause) for _ in range(writers)])
                if converge:
                    await self.converge(client)
            finally:
                if self.own_products:
                    await self.delete_own(client)

    def _acceptable(self, dt: str, ident: int) -> list[Any]:
        """What (``dt``, ``ident``) may hold once everything settled: the last
        answered write's value, or that of a later write never answered."""
        done = (self.moves[ident].done if dt == "membership"
                else self.history[dt, ident].done)
        last = max((i for i, d in enumerate(done) if d is not None), default=0)
        return self._values(dt, ident)[last:]

    async def _answers(self, client: httpx.AsyncClient, dt: str, ident: int) -> dict[str, Any]:
        async def read(index: int) -> Any:
            try:
                response = await client.get(self._entity_url(self._urls[index], dt, ident))
            except httpx.HTTPError as exc:
                return f"<{type(exc).__name__}>"
            if response.status_code != 200:
                return f"<HTTP {response.status_code}>"
            return response.json()[FIELD[dt]]

        answers = await asyncio.gather(*[read(i) for i in range(len(self._urls))])
        return dict(zip(self.urls, answers, strict=True))

    async def converge(self, client: httpx.AsyncClient) -> None:
        """Poll every replica for every entity written until all agree on an
        acceptable value, each type for at most its ``maxStaleness`` from now
        (the end of the run; faults must be healed by then)."""
        started = time.monotonic()
        pending = sorted(self.written)
        self.convergence.entities = len(pending)
        while pending:
            now = time.monotonic()
            still = []
            for dt, ident in pending:
                answers = await self._answers(client, dt, ident)
                agreed = set(map(repr, answers.values()))
                value = next(iter(answers.values()))
                if len(agreed) == 1 and value in self._acceptable(dt, ident):
                    self.convergence.final.append({"data_type": dt, "id": ident,
                                                   "value": value})
                elif now - started <= self.stats[dt].budget:
                    still.append((dt, ident))
                else:
                    self.convergence.not_converged.append({
                        "data_type": dt, "id": ident,
                        "expected": self._acceptable(dt, ident), "answers": answers})
            pending = still
            if pending:
                await asyncio.sleep(CONVERGE_POLL)
        await self._converge_lists(client, started)
        self.convergence.waited = time.monotonic() - started

    async def _list_members(self, client: httpx.AsyncClient, url: str,
                            category: int) -> set[int] | None:
        """The ids ``GET /categories/{id}/products`` shows (every page), or
        None if a page failed."""
        shown: set[int] = set()
        offset, last = 0, max(self.products)
        while True:
            try:
                response = await client.get(f"{url}/categories/{category}/products",
                                            params={"limit": PAGE, "offset": offset})
            except httpx.HTTPError:
                return None
            if response.status_code != 200:
                return None
            items = response.json()["items"]
            shown.update(item["id"] for item in items)
            if len(items) < PAGE or items[-1]["id"] >= last:
                return shown
            offset += PAGE

    async def _converge_lists(self, client: httpx.AsyncClient, started: float) -> None:
        """Every replica's category lists must show each moved product in
        the category it converged on, and in no other, within product's
        ``maxStaleness`` of ``started`` (the end of the run)."""
        home = {item["id"]: item["value"] for item in self.convergence.final
                if item["data_type"] == "membership"}
        if not home:
            return
        budget = self.stats["membership"].budget
        pending = [(i, c) for i in range(len(self._urls)) for c in self.categories]
        while pending:
            late = time.monotonic() - started > budget
            still = []
            for index, category in pending:
                shown = await self._list_members(client, self._urls[index], category)
                wrong = (None if shown is None else
                         sorted(pid for pid, at in home.items()
                                if (pid in shown) != (at == category)))
                if wrong == []:
                    continue
                if not late:
                    still.append((index, category))
                    continue
                self.convergence.not_converged.append({
                    "data_type": "membership-list", "id": category,
                    "replica": self.urls[index],
                    "wrong": "list unreadable" if wrong is None else wrong})
            pending = still
            if pending:
                await asyncio.sleep(CONVERGE_POLL)

    @staticmethod
    def failed(summary: dict[str, Any]) -> bool:
        """Whether a summary is a failed run (the exit status says so)."""
        return bool(summary["stale_reads"] or summary["ack_probe"]["stale_reads"]
                    or summary["convergence"]["not_converged_count"]
                    or summary["server_errors"] or summary["unauthorized_writes"])

    def summary(self, duration: float) -> dict[str, Any]:
        return {
            "duration_s": round(duration, 2),
            "replicas": self.urls,
            "products": self.products,
            "data_types": {dt: {"reads": s.reads, "writes": s.writes, "stale_reads": s.stale,
                                "max_staleness_s": s.budget,
                                "worst_observed_lag_s": round(s.worst_lag, 4)}
                           for dt, s in self.stats.items()},
            "stale_reads": sum(s.stale for s in self.stats.values()),
            "stale_examples": self.stale_examples,
            "ack_probe": {"writes": self.ack.writes, "missing_reported": self.ack.missing,
                          "reads": self.ack.reads, "stale_reads": self.ack.stale,
                          "stale_by_replica": self.ack.stale_by_replica},
            "convergence": {"entities": self.convergence.entities,
                            "waited_s": round(self.convergence.waited, 3),
                            "not_converged": self.convergence.not_converged[:20],
                            "not_converged_count": len(self.convergence.not_converged)},
            "final": self.convergence.final,
            "errors": self.errors[:20],
            "error_count": len(self.errors),
            "server_errors": self.server_errors,
            "unauthorized_writes": self.unauthorized,
        }
