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
        """Pub/sub channel on which wire revision 1 nodes confirm messages
        sent with ``ack`` (every node heard every ack: N^2 deliveries). Still
        subscribed, silent once every replica speaks revision 2."""
        return f"{self.prefix}acks"

    def ack_channel_for(self, node: str) -> str:
        """Pub/sub channel on which a node hears the confirmations of its
        own messages sent with ``ack`` (wire revision 2): only the sender."""
        return f"{self.prefix}acks:{node}"

    @property
    def fill_channel(self) -> str:
        """Pub/sub channel on which wire revision 1 nodes announce that a
        leased key was filled (or given up); still subscribed, for them."""
        return f"{self.prefix}fill"

    def fill_channel_for(self, key: str) -> str:
        """Pub/sub channel announcing that leased ``key`` was filled (or given
        up): subscribed only by the nodes waiting for that key, while they wait."""
        return f"{self.prefix}fill:{key}"

    @property
    def state(self) -> str:
        """Hash of the invalidation state: ``epoch``, ``clock`` (the cluster
        version counter, HINCRBY) and ``t:<tag>`` -> version at which the tag
        was last invalidated. No TTL: it must never be chosen for eviction
        (``volatile-*`` policies). If it is lost anyway, the next script
        starts a new ``epoch`` (the clock's new starting value, above every
        version handed out before) and replicas flush L1 and refuse older L2
        entries. An operator can watch ``HGET {prefix}state epoch`` to learn
        that Redis lost its state (and republish policies)."""
        return f"{self.prefix}state"

    @property
    def marks(self) -> str:
        """Hash: ``epoch`` and ``k:<key>`` -> version at which the key was
        last removed or set (voids loads of it that started before). Stamped
        with the same epoch as ``state``; losing one of the two is losing both."""
        return f"{self.prefix}marks"

    @property
    def tag_times(self) -> str:
        """Sorted set: tag -> Redis time of its last invalidation (for pruning)."""
        return f"{self.prefix}tagtimes"

    @property
    def mark_times(self) -> str:
        """Sorted set: key -> Redis time of its last removal (for pruning)."""
        return f"{self.prefix}marktimes"

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

    def heartbeat_channel(self, node: str) -> str:
        """Pub/sub channel on which Redis echoes a node's heartbeat back to it
        (the backplane lease: see ``HybridCache`` docs, "lease")."""
        return f"{self.prefix}hb:{node}"

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
