"""Every Redis key and channel name the replicas and the operator share.

Part of the contract between cache replicas and the operator: standard library
only, so that ``cache_operator`` can import it without the cache itself.
"""

from __future__ import annotations

from typing import Final

ALL_TAG: Final = "*"


class Keys:
    """Every Redis key and channel name, derived from one key prefix."""

    __slots__ = ("prefix",)

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix

    @property
    def channel(self) -> str:
        """Pub/sub channel carrying invalidations, policies and probes."""
        return f"{self.prefix}backplane"

    @property
    def ack_channel(self) -> str:
        """Pub/sub channel on which nodes confirm messages sent with ``ack``."""
        return f"{self.prefix}acks"

    @property
    def fill_channel(self) -> str:
        """Pub/sub channel announcing that a leased key was filled (or given up)."""
        return f"{self.prefix}fill"

    @property
    def clock(self) -> str:
        """Cluster-wide version counter (INCR); orders loads against invalidations."""
        return f"{self.prefix}clock"

    @property
    def epoch(self) -> str:
        """The clock's starting value, set when Redis has no state. A load that
        read the clock under another epoch (Redis restarted empty meanwhile,
        losing invalidation records) may not write its value."""
        return f"{self.prefix}epoch"

    @property
    def tags(self) -> str:
        """Hash: tag -> version at which it was last invalidated."""
        return f"{self.prefix}tags"

    @property
    def tag_times(self) -> str:
        """Sorted set: tag -> wall time of its last invalidation (for pruning)."""
        return f"{self.prefix}tagtimes"

    @property
    def policies(self) -> str:
        """Hash: dataType -> compiled policy JSON (written by the operator)."""
        return f"{self.prefix}policies"

    @property
    def nodes(self) -> str:
        """Sorted set: node id -> wall time of its last heartbeat."""
        return f"{self.prefix}nodes"

    def entry(self, key: str) -> str:
        return f"{self.prefix}e:{key}"

    def key_mark(self, key: str) -> str:
        """Version at which ``key`` was last removed (guards the stale-set race)."""
        return f"{self.prefix}k:{key}"

    def lease(self, key: str) -> str:
        """Cluster-wide single-flight lease for loading ``key``."""
        return f"{self.prefix}lease:{key}"

    def policy_acks(self, data_type: str) -> str:
        """Hash: node id -> policy generation that node has applied."""
        return f"{self.prefix}policy-acks:{data_type}"

    def probe(self, probe_id: str) -> str:
        """Hash: node id -> wall time at which that node received the probe."""
        return f"{self.prefix}probe:{probe_id}"

    def stats(self, node: str) -> str:
        """Hash of a node's published counters: ``l1_hit:<dt>``, ``l1_miss:<dt>``..."""
        return f"{self.prefix}stats:{node}"
