"""Command line: ``python -m cache_operator run | apply | validate | cleanup``.

- ``run``: the kopf operator (in-cluster service account or a kubeconfig),
  configured from the environment (see :mod:`cache_operator.config`).
- ``apply -f policies.yaml --redis-url ...``: validate CacheInvalidationPolicy
  documents and publish them exactly as the operator would, without Kubernetes.
  If any document is invalid, nothing is published and the exit code is 2.
- ``validate -f policies.yaml``: the same checks, publishing nothing.
- ``cleanup --namespace NS``: delete the policies of a namespace and see their
  finalizers released (by the operator, else by itself after ``--timeout``);
  the chart's pre-delete hook (:mod:`cache_operator.cleanup`).

Nothing printed carries a secret (Redis URLs are redacted), and what is
printed is bounded: policy files are read up to a size limit, without YAML
aliases (:mod:`cache_operator.documents`), and at most
:data:`MAX_ERROR_LINES` errors are shown, each at most
:data:`MAX_ERROR_CHARS` long.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import os
import sys
from collections.abc import Sequence

from .config import Config, ConfigError
from .documents import DocumentError, read_bounded
from .redaction import redact, redact_url, secrets_of
from .validation import PolicyDocument, PolicyFileError, load_policies

EXIT_FAILED = 1
EXIT_INVALID = 2
EXIT_UNAVAILABLE = 3
MAX_ERROR_LINES = 20
MAX_ERROR_CHARS = 300


class ErrorPrinter:
    """Prints errors to stderr, at most ``limit`` lines of at most ``width``
    characters: a hostile file yields a short report, not megabytes."""

    def __init__(self, limit: int = MAX_ERROR_LINES, width: int = MAX_ERROR_CHARS) -> None:
        self.limit = limit
        self.width = width
        self.count = 0

    def __call__(self, line: str) -> None:
        self.count += 1
        if self.count <= self.limit:
            if len(line) > self.width:
                line = f"{line[:self.width]}... ({len(line)} characters)"
            print(line, file=sys.stderr)

    def summary(self) -> None:
        if self.count > self.limit:
            print(f"... and {self.count - self.limit} more errors (not shown)", file=sys.stderr)


def _read(path: str) -> str:
    if path == "-":
        return read_bounded(sys.stdin.buffer)
    with open(path, "rb") as f:
        return read_bounded(f)


def _load(paths: Sequence[str], error: ErrorPrinter) -> list[PolicyDocument] | None:
    docs: list[PolicyDocument] = []
    failed = False
    seen: dict[tuple[str, str], str] = {}
    for path in paths:
        try:
            text = _read(path)
        except OSError as exc:
            error(f"error: {path}: {exc.strerror or exc}")
            failed = True
            continue
        except DocumentError as exc:
            error(f"error: {path}: {exc}")
            failed = True
            continue
        try:
            loaded = load_policies(text, source=f"cli:{path}")
        except PolicyFileError as exc:
            for line in exc.errors:
                error(f"error: {path}: {line}")
            failed = True
            continue
        for doc in loaded:
            key = (doc.namespace, doc.policy.data_type)
            if key in seen:
                error(f"error: {path}: document {doc.index + 1} ({doc.name}): spec.dataType: "
                      f"{doc.policy.data_type!r} is already governed by {seen[key]}")
                failed = True
            seen[key] = f"{doc.ref} in {path}"
        docs.extend(loaded)
    return None if failed else docs


async def _publish(docs: list[PolicyDocument], redis_url: str, prefix: str) -> None:
    from hybridcache.keys import Keys
    from hybridcache.redis_clients import is_cluster, redis_client
    from hybridcache.redis_url import with_tls_env

    from .publisher import PolicyPublisher

    url = with_tls_env(redis_url)  # REDIS_TLS_* files as TLS arguments
    assert url is not None
    redis = redis_client(url, socket_timeout=5, socket_connect_timeout=5)
    try:
        publisher = PolicyPublisher(redis, Keys(prefix, cluster=is_cluster(redis)))
        for doc in docs:
            policy = doc.policy
            # Without Kubernetes there is no metadata.generation: bump the stored one
            # when the policy changes, so replicas' acknowledgements stay meaningful.
            stored = await publisher.stored(policy.data_type)
            if stored is None:
                generation = max(policy.generation, 1)
            elif stored.same_spec(policy):
                generation = max(stored.generation, policy.generation)
            else:
                generation = max(stored.generation + 1, policy.generation)
            policy = dataclasses.replace(policy, generation=generation)
            await publisher.publish(policy)
            print(f"published {policy.data_type} ({policy.strategy}, generation "
                  f"{policy.generation}) from {doc.ref} to {publisher.keys.policies}")
    finally:
        await redis.aclose()


def cmd_apply(args: argparse.Namespace) -> int:
    errors = ErrorPrinter()
    docs = _load(args.filename, errors)
    errors.summary()
    if docs is None:
        print("nothing was published: fix the documents above and apply again",
              file=sys.stderr)
        return EXIT_INVALID
    if args.dry_run:
        for doc in docs:
            print(f"valid: {doc.ref} ({doc.policy.data_type}, {doc.policy.strategy})")
        return 0
    from redis.exceptions import RedisClusterException, RedisError

    try:
        asyncio.run(_publish(docs, args.redis_url, args.key_prefix))
    # ValueError: a malformed URL or CA file; RedisClusterException: a
    # cluster without a master for some slot (outside RedisError).
    except (RedisError, RedisClusterException, OSError, ValueError) as exc:
        detail = redact(str(exc), secrets_of(args.redis_url))
        print(f"error: cannot publish to {redact_url(args.redis_url)}: {detail}",
              file=sys.stderr)
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

    configure(verbose=args.verbose, secrets=secrets_of(config.redis_url))
    metrics = Metrics(process=True)
    if config.metrics_port:
        metrics.serve(config.metrics_port)
    try:
        asyncio.run(operate(config, metrics))
    except asyncio.CancelledError:
        pass
    return 0


def cmd_cleanup(args: argparse.Namespace) -> int:
    from .cleanup import Cleanup, CleanupError
    from .kubeclient import api_client

    try:
        client = api_client()
    except Exception as exc:  # the kubernetes client's config errors have no common base
        print(f"error: no Kubernetes API configuration: {exc}", file=sys.stderr)
        return EXIT_UNAVAILABLE
    try:
        report = Cleanup(client, args.namespace, key_prefix=args.key_prefix,
                         poll=args.poll).run(args.timeout)
    except CleanupError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    finally:
        client.close()
    print(f"done: {len(report.gone)} released by the operator, "
          f"{len(report.released_here)} released by this command")
    return 0


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must not be negative, got {text!r}")
    return value


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

    clean = sub.add_parser("cleanup", help="delete the policies of namespaces and see their "
                                            "finalizers released (uninstall)")
    clean.add_argument("-n", "--namespace", action="append", required=True,
                       help="namespace whose CacheInvalidationPolicies are deleted; "
                            "may be repeated")
    clean.add_argument("--timeout", type=_seconds, default=60.0,
                       help="seconds to wait for the operator before releasing finalizers "
                            "(default 60)")
    clean.add_argument("--poll", type=_seconds, default=1.0, help=argparse.SUPPRESS)
    clean.add_argument("--key-prefix", default=os.environ.get("CACHE_KEY_PREFIX", "hc:"),
                       help="key prefix named in the events' HDEL hint (default: "
                            "$CACHE_KEY_PREFIX or hc:)")
    clean.set_defaults(func=cmd_cleanup)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args))
