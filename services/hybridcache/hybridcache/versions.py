"""What this replica knows about invalidations, as numbers: pure, no I/O.

Every invalidation in the cluster takes a new version from the cluster clock
(``{prefix}clock`` in Redis). An entry loaded at version ``v`` is stale once
any of its tags, or ``*``, carries a version above ``v``. ``serial`` counts
invalidations applied here, so an L1 hit re-checks an entry's tags only after
something changed; ``gaps`` counts gaps (moments this replica may have
missed an invalidation), so a load that started before a gap never reaches L1.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from .keys import ALL_TAG


class Versions:
    __slots__ = ("all", "clock", "gaps", "serial", "tags")

    def __init__(self) -> None:
        self.tags: dict[str, int] = {}
        self.all = 0  # the version of the last "*" invalidation
        self.serial = 0  # bumped by every invalidation applied locally
        self.clock = 0  # highest cluster version seen (a local counter while offline)
        self.gaps = 0  # gaps so far (not a policy generation)

    def fresh(self, version: int, tags: Iterable[str]) -> bool:
        """True if no tag of an entry loaded at ``version`` was invalidated since."""
        if self.all > version:
            return False
        versions = self.tags
        return all(versions.get(tag, 0) <= version for tag in tags)

    def apply_tag(self, tag: str, version: int) -> None:
        if tag == ALL_TAG:
            if version > self.all:
                self.all = version
        elif version > self.tags.get(tag, 0):
            self.tags[tag] = version
        self.serial += 1

    def bump_local(self) -> int:
        """A version for an invalidation made while the cluster clock is out of reach."""
        self.clock += 1
        return self.clock

    def seen(self, version: int) -> None:
        if version > self.clock:
            self.clock = version

    def gap(self) -> None:
        """Forget that anything was verified: this replica may have missed something."""
        self.gaps += 1
        self.serial += 1

    def reload(self, table: Mapping[str, int], clock: int) -> None:
        """Take Redis's tag table and clock as the truth (after a gap)."""
        tags = dict(table)
        self.all = tags.pop(ALL_TAG, 0)
        self.tags = tags
        self.clock = clock

    def merge_pruned(self, table: Mapping[str, int], snapshot: int) -> None:
        """Bound the local tag table by Redis's, read atomically with the
        clock value ``snapshot``: a local record above that clock arrived after
        the snapshot and is kept; one at or below it that Redis no longer has
        was pruned there (older than the record TTL), and no entry can still
        need it. Where both know a tag, the higher version wins."""
        merged = {tag: version for tag, version in table.items() if tag != ALL_TAG}
        for tag, version in self.tags.items():
            known = merged.get(tag)
            if known is None:
                if version > snapshot:
                    merged[tag] = version
            elif version > known:
                merged[tag] = version
        self.tags = merged
