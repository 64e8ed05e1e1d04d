"""Consistency checker: ``python -m catalog_checker --url U1 --url U2 ...``.

Writes unique values through random catalog replicas and reads them back
through random replicas (``checker.Checker``). It prints a JSON summary (per
data type: reads, writes, stale reads, worst staleness seen) and exits 1 if any
read was stale beyond budget, any response was a 5xx or a write was refused
for want of the write token (401). With
``--metrics-port`` it also serves ``catalog_checker_stale_reads_total{data_type}``
(and reads/writes counters) for Prometheus; ``--duration 0`` runs until
interrupted.

The products and categories it writes must not be written by anyone else
while it runs (``--products 150-159``, ``--categories 9-10``); with
``--own-products N`` it creates N products of its own instead, checks only
those and deletes them when it stops (what the Helm chart runs). Replicas with
a write token need it: ``CATALOG_WRITE_TOKEN`` in the environment (or
``--write-token``). Replica URLs are printed without any credentials in them.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import signal
import sys
import time

import httpx
import orjson
from prometheus_client import CollectorRegistry, Counter, start_http_server

from .checker import CHECKED, Checker, shown


def _range(text: str) -> list[int]:
    low, _, high = text.partition("-")
    try:
        first, last = int(low), int(high or low)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not N or N-M") from None
    if first < 1 or last < first:
        raise argparse.ArgumentTypeError(f"{text!r} is not a range of positive ids")
    return list(range(first, last + 1))


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if not 0 <= value <= 1000:
        raise argparse.ArgumentTypeError(f"{text!r} is not between 0 and 1000")
    return value


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not 0 <= value <= 60:
        raise argparse.ArgumentTypeError(f"{text!r} is not between 0 and 60 seconds")
    return value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m catalog_checker", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", action="append", required=True, help="a replica (repeat)")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds; 0 = forever")
    parser.add_argument("--products", type=_range, default=_range("150-159"))
    parser.add_argument("--categories", type=_range, default=_range("9-10"))
    parser.add_argument("--own-products", type=_count, default=0,
                        help="create N products of its own, check only those, delete them at exit")
    parser.add_argument("--readers", type=int, default=8)
    parser.add_argument("--writers", type=int, default=2)
    parser.add_argument("--read-pause", type=_seconds, default=0.002,
                        help="seconds each reader waits between reads (lower the rate)")
    parser.add_argument("--write-pause", type=_seconds, default=0.02,
                        help="seconds each writer waits between writes")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--metrics-port", type=int, default=None)
    parser.add_argument("--write-token", default=os.environ.get("CATALOG_WRITE_TOKEN"),
                        help="bearer token for writes (default: $CATALOG_WRITE_TOKEN; prefer"
                             " the variable, a flag is visible to other users in ps)")
    args = parser.parse_args(argv)

    metrics = None
    if args.metrics_port is not None:
        registry = CollectorRegistry()
        metrics = {
            "stale": Counter("catalog_checker_stale_reads_total",
                             "Reads served stale beyond the data type's maxStaleness.",
                             ["data_type"], registry=registry),
            "reads": Counter("catalog_checker_reads_total", "Reads judged.", ["data_type"],
                             registry=registry),
            "writes": Counter("catalog_checker_writes_total", "Writes made.", ["data_type"],
                              registry=registry),
        }
        for dt in CHECKED:
            for counter in metrics.values():
                counter.labels(dt)
        start_http_server(args.metrics_port, registry=registry)

    checker = Checker([u.rstrip("/") for u in args.url], args.products, args.categories,
                      args.seed if args.seed is not None else random.randrange(1 << 30), metrics,
                      own_products=args.own_products, write_token=args.write_token or None)

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError):
                loop.add_signal_handler(sig, stop.set)
        await checker.run(args.duration, args.readers, args.writers, stop,
                          read_pause=args.read_pause, write_pause=args.write_pause)

    started = time.monotonic()
    try:
        asyncio.run(run())
    except httpx.HTTPStatusError as exc:
        # Setting up (reading policies, creating its own products) failed: say
        # which request and why, without a traceback.
        status = exc.response.status_code
        hint = (": pass the replicas' write token in CATALOG_WRITE_TOKEN or --write-token"
                if status == 401 else "")
        sys.stderr.write(f"checker could not prepare: {exc.request.method}"
                         f" {shown(str(exc.request.url))} -> {status}{hint}\n")
        return 1
    except httpx.HTTPError as exc:
        sys.stderr.write(f"checker could not reach a replica: {type(exc).__name__}: {exc}\n")
        return 1
    summary = checker.summary(time.monotonic() - started)
    sys.stdout.write(orjson.dumps(summary, option=orjson.OPT_INDENT_2).decode() + "\n")
    if summary["unauthorized_writes"]:
        sys.stderr.write("writes were refused (401): pass the replicas' write token in"
                         " CATALOG_WRITE_TOKEN or --write-token\n")
    failed = summary["stale_reads"] or summary["server_errors"] or summary["unauthorized_writes"]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
