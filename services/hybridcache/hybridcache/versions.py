"""What this replica knows about invalidations, as numbers: pure, no I/O.

Every invalidation in the cluster takes a new version from the cluster clock
(field ``clock`` of ``{prefix}state`` in Redis). An entry loaded at version ``v`` is stale once
any of its tags, or ``*``, carries a version above ``v``. ``serial`` counts
invalidations applied here, so an L1 hit re-checks an entry's tags only after
something changed; ``gaps`` counts gaps (moments this replica may have
missed an invalidation), so a load that started before a gap never reaches L1.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from .keys import ALL_TAG


class Versions:
    __slots__ = ("all", "applied", "clock", "cluster", "gaps", "serial", "tags")

    def __init__(self) -> None:
        self.tags: dict[str, int] = {}
        self.all = 0  # the version of the last "*" invalidation
        self.serial = 0  # bumped by every invalidation applied locally
        self.clock = 0  # highest cluster version seen (a local counter while offline)
        # Highest version received from Redis (never a local one): Redis's
        # clock below it means Redis lost writes (scripts.py, the floor).
        self.cluster = 0
        self.gaps = 0  # gaps so far (not a policy generation)
        # Monotonic time at which each tag's record was last raised here by
        # an invalidation: an L1 entry kept before that may depend on it.
        self.applied: dict[str, float] = {}

    def fresh(self, version: int, tags: Iterable[str]) -> bool:
        """True if no tag of an entry loaded at ``version`` was invalidated since."""
        if self.all > version:
            return False
        versions = self.tags
        return all(versions.get(tag, 0) <= version for tag in tags)

    def apply_tag(self, tag: str, version: int, now: float = 0.0) -> None:
        if tag == ALL_TAG:
            if version > self.all:
                self.all = version
        elif version > self.tags.get(tag, 0):
            self.tags[tag] = version
            self.applied[tag] = now
        self.serial += 1

    def bump_local(self) -> int:
        """A version for an invalidation made while the cluster clock is out of reach."""
        self.clock += 1
        return self.clock

    def seen(self, version: int) -> None:
        """``version`` came from Redis (a script's answer, a backplane message)."""
        if version > self.clock:
            self.clock = version
        if version > self.cluster:
            self.cluster = version

    def plausible(self, version: int, in_flight: int) -> bool:
        """Whether a version announced on the backplane can be real. Redis
        publishes invalidations in the order their versions were allocated,
        so an honest one is at most one above the last version this node saw,
        plus its own invalidations whose answer it has not read yet. Anything
        higher is planted, or this node missed something: either way it is
        not applied, and a resync takes Redis's state instead."""
        return version <= self.clock + 1 + in_flight

    def gap(self) -> None:
        """Forget that anything was verified: this replica may have missed something."""
        self.gaps += 1
        self.serial += 1

    def reload(self, table: Mapping[str, int], clock: int) -> int:
        """Take Redis's tag table and clock as the truth (after a gap, with L1
        empty). A record above the clock cannot be real (planted): it is left
        out; returns how many were."""
        tags = {tag: v for tag, v in table.items() if v <= clock}
        self.all = tags.pop(ALL_TAG, 0)
        self.tags = tags
        self.applied = {}
        self.clock = clock
        self.cluster = max(self.cluster, clock)
        self.serial += 1
        return sum(1 for v in table.values() if v > clock)

    def merge_pruned(self, table: Mapping[str, int], snapshot: int, now: float = 0.0,
                     retention: float = 0.0) -> None:
        """Bound the local tag table by Redis's, read atomically with the
        clock value ``snapshot``. A local record Redis no longer has is
        dropped only if it is at or below that clock (it did not arrive
        after the snapshot) *and* no L1 entry can still depend on it: every
        entry kept before it was raised here is gone (``retention`` is the
        longest an L1 entry is kept). So a record lost in Redis, by pruning
        or otherwise, never makes an invalidated entry valid again. Where
        both know a tag, the higher version wins."""
        merged = {tag: version for tag, version in table.items()
                  if tag != ALL_TAG and version <= snapshot}
        applied = self.applied
        for tag, version in self.tags.items():
            known = merged.get(tag)
            if known is None:
                if version > snapshot or now - applied.get(tag, float("-inf")) <= retention:
                    merged[tag] = version
            elif version > known:
                merged[tag] = version
        self.tags = merged
        self.applied = {tag: t for tag, t in applied.items() if tag in merged}
