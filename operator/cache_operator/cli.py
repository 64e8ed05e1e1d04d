"""Command line: ``python -m cache_operator run | apply | validate``.

- ``run``: the kopf operator (in-cluster service account or a kubeconfig),
  configured from the environment (see :mod:`cache_operator.config`).
- ``apply -f policies.yaml --redis-url ...``: validate CacheInvalidationPolicy
  documents and publish them exactly as the operator would, without Kubernetes.
  If any document is invalid, nothing is published and the exit code is 2.
- ``validate -f policies.yaml``: the same checks, publishing nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import os
import sys
from collections.abc import Sequence

from .config import Config, ConfigError
from .validation import PolicyDocument, PolicyFileError, load_policies

EXIT_INVALID = 2
EXIT_UNAVAILABLE = 3


def _read(path: str) -> str:
    if path == "-":
        return sys.stdin.read()
    with open(path, encoding="utf-8") as f:
        return f.read()


def _load(paths: Sequence[str]) -> list[PolicyDocument] | None:
    docs: list[PolicyDocument] = []
    failed = False
    seen: dict[tuple[str, str], str] = {}
    for path in paths:
        try:
            text = _read(path)
        except OSError as exc:
            print(f"error: {path}: {exc.strerror or exc}", file=sys.stderr)
            failed = True
            continue
        try:
            loaded = load_policies(text, source=f"cli:{path}")
        except PolicyFileError as exc:
            for line in exc.errors:
                print(f"error: {path}: {line}", file=sys.stderr)
            failed = True
            continue
        for doc in loaded:
            key = (doc.namespace, doc.policy.data_type)
            if key in seen:
                print(f"error: {path}: document {doc.index + 1} ({doc.name}): spec.dataType: "
                      f"{doc.policy.data_type!r} is already governed by {seen[key]}",
                      file=sys.stderr)
                failed = True
            seen[key] = f"{doc.ref} in {path}"
        docs.extend(loaded)
    return None if failed else docs


async def _publish(docs: list[PolicyDocument], redis_url: str, prefix: str) -> None:
    from hybridcache.keys import Keys
    from redis.asyncio import Redis

    from .config import with_ca_file
    from .store import PolicyStore

    redis = Redis.from_url(with_ca_file(redis_url, os.environ.get("REDIS_TLS_CA_FILE")),
                           socket_timeout=5, socket_connect_timeout=5)
    try:
        store = PolicyStore(redis, Keys(prefix))
        for doc in docs:
            policy = doc.policy
            # Without Kubernetes there is no metadata.generation: bump the stored one
            # when the policy changes, so replicas' acknowledgements stay meaningful.
            stored = await store.stored(policy.data_type)
            if stored is None:
                generation = max(policy.generation, 1)
            elif stored.same_spec(policy):
                generation = max(stored.generation, policy.generation)
            else:
                generation = max(stored.generation + 1, policy.generation)
            policy = dataclasses.replace(policy, generation=generation)
            await store.publish(policy)
            print(f"published {policy.data_type} ({policy.strategy}, generation "
                  f"{policy.generation}) from {doc.ref} to {store.keys.policies}")
    finally:
        await redis.aclose()


def cmd_apply(args: argparse.Namespace) -> int:
    docs = _load(args.filename)
    if docs is None:
        print("nothing was published: fix the documents above and apply again",
              file=sys.stderr)
        return EXIT_INVALID
    if args.dry_run:
        for doc in docs:
            print(f"valid: {doc.ref} ({doc.policy.data_type}, {doc.policy.strategy})")
        return 0
    from redis.exceptions import RedisError

    try:
        asyncio.run(_publish(docs, args.redis_url, args.key_prefix))
    except (RedisError, OSError, ConfigError) as exc:
        print(f"error: cannot publish to {args.redis_url}: {exc}", file=sys.stderr)
        return EXIT_UNAVAILABLE
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from .handlers import operate
    from .metrics import Metrics

    try:
        config = Config.from_env()
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_INVALID
    from .logs import configure

    configure(verbose=args.verbose)
    metrics = Metrics(process=True)
    if config.metrics_port:
        metrics.serve(config.metrics_port)
    try:
        asyncio.run(operate(config, metrics))
    except asyncio.CancelledError:
        pass
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m cache_operator",
        description="CacheInvalidationPolicy operator for hybridcache.")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run the kopf operator (in-cluster or kubeconfig)")
    run.add_argument("-v", "--verbose", action="store_true")
    run.set_defaults(func=cmd_run)

    for name, helptext in (("apply", "validate and publish policies without Kubernetes"),
                           ("validate", "validate policy documents only")):
        p = sub.add_parser(name, help=helptext)
        p.add_argument("-f", "--filename", action="append", required=True,
                       help="YAML file with CacheInvalidationPolicy documents ('-' = stdin);"
                            " may be repeated")
        if name == "apply":
            p.add_argument("--redis-url", default=os.environ.get("REDIS_URL"),
                           required=not os.environ.get("REDIS_URL"),
                           help="Redis the replicas share (default: $REDIS_URL)")
            p.add_argument("--key-prefix", default=os.environ.get("CACHE_KEY_PREFIX", "hc:"),
                           help="key and channel prefix (default: $CACHE_KEY_PREFIX or hc:)")
            p.add_argument("--dry-run", action="store_true", help="validate only")
        else:
            p.set_defaults(dry_run=True)
        p.set_defaults(func=cmd_apply)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args))
