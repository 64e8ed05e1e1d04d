"""Every Redis key and channel name the replicas and the operator share.

Part of the contract between cache replicas and the operator: standard library
only, so that ``cache_operator`` can import it without the cache itself.
"""

from __future__ import annotations

from typing import Final

ALL_TAG: Final = "*"


class Keys:
    """Every Redis key and channel name, derived from one key prefix.

    Two layouts (docs/design.md, "Redis Cluster: key layout"). The standalone
    one (also Sentinel's) is ``<prefix><name>``, unchanged since the first
    release. The cluster one (``cluster=True``) puts everything the
    invalidation scripts touch atomically in one hash slot, the *state slot*,
    by the hash tag ``{<prefix>}``; and each cache key's entry, lease and
    fill channel in one slot of their own, by the hash tag ``{k:<key>}``, so
    that entries spread over every shard while the script that stores an
    entry, releases its lease and wakes its waiters stays in one slot.
    """

    __slots__ = ("_shared", "cluster", "prefix")

    def __init__(self, prefix: str, *, cluster: bool = False) -> None:
        if cluster and ("{" in prefix or "}" in prefix):
            # A brace in the prefix would make Redis hash every entry by the
            # prefix (one slot for the whole cache) or split the state.
            raise ValueError(
                f"key prefix {prefix!r} must not contain '{{' or '}}' on Redis Cluster "
                "(the cache places keys in hash slots with {...} hash tags)")
        self.prefix = prefix
        self.cluster = cluster
        # The state slot's names start with `_shared`; per-key names put the
        # key in a hash tag (see `_per_key`).
        self._shared = "{" + prefix + "}" if cluster else prefix

    def _per_key(self, kind: str, key: str) -> str:
        """``<prefix><kind><key>``, or on a cluster ``<prefix><kind>{k:<key>}``:
        the tag always starts with ``k:`` so it is never empty (Redis hashes
        the whole name when it is) and is the same for every name of ``key``
        (Redis takes it up to the first ``}``, which is inside ``key`` or
        the closing one, the same place for each kind)."""
        if self.cluster:
            return f"{self.prefix}{kind}{{k:{key}}}"
        return f"{self.prefix}{kind}{key}"

    @property
    def channel(self) -> str:
        """Pub/sub channel carrying invalidations, policies and probes."""
        return f"{self._shared}backplane"

    @property
    def ack_channel(self) -> str:
        """Pub/sub channel on which wire revision 1 nodes confirm messages
        sent with ``ack`` (every node heard every ack: N^2 deliveries). Still
        subscribed, silent once every replica speaks revision 2."""
        return f"{self._shared}acks"

    def ack_channel_for(self, node: str) -> str:
        """Pub/sub channel on which a node hears the confirmations of its
        own messages sent with ``ack`` (wire revision 2): only the sender."""
        return f"{self._shared}acks:{node}"

    @property
    def fill_channel(self) -> str:
        """Pub/sub channel on which wire revision 1 nodes announce that a
        leased key was filled (or given up); still subscribed, for them."""
        return f"{self._shared}fill"

    def fill_channel_for(self, key: str) -> str:
        """Pub/sub channel announcing that leased ``key`` was filled (or given
        up): subscribed only by the nodes waiting for that key, while they wait.
        On a cluster it lives in the state slot, like every channel the
        subscription hears (one connection, to that slot's master)."""
        return f"{self._shared}fill:{key}"

    def mark(self, key: str) -> str:
        """Cluster layout only: the version at which ``key`` was last removed
        or set, kept in the entry's slot (the ``marks`` hash is in the state
        slot, which the script storing an entry cannot read): a load older
        than it is refused there. Expires with the invalidation records."""
        return self._per_key("m:", key)

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
        return f"{self._shared}state"

    @property
    def marks(self) -> str:
        """Hash: ``epoch`` and ``k:<key>`` -> version at which the key was
        last removed or set (voids loads of it that started before). Stamped
        with the same epoch as ``state``; losing one of the two is losing both."""
        return f"{self._shared}marks"

    @property
    def tag_times(self) -> str:
        """Sorted set: tag -> Redis time of its last invalidation (for pruning)."""
        return f"{self._shared}tagtimes"

    @property
    def mark_times(self) -> str:
        """Sorted set: key -> Redis time of its last removal (for pruning)."""
        return f"{self._shared}marktimes"

    @property
    def policies(self) -> str:
        """Hash: dataType -> compiled policy JSON (written by the operator)."""
        return f"{self._shared}policies"

    @property
    def nodes(self) -> str:
        """Sorted set: node id -> wall time of its last heartbeat."""
        return f"{self._shared}nodes"

    def entry(self, key: str) -> str:
        return self._per_key("e:", key)

    def heartbeat_channel(self, node: str) -> str:
        """Pub/sub channel on which Redis echoes a node's heartbeat back to it
        (the backplane lease: see ``HybridCache`` docs, "lease")."""
        return f"{self._shared}hb:{node}"

    def lease(self, key: str) -> str:
        """Cluster-wide single-flight lease for loading ``key``."""
        return self._per_key("lease:", key)

    def policy_acks(self, data_type: str) -> str:
        """Hash: node id -> policy generation that node has applied."""
        return f"{self._shared}policy-acks:{data_type}"

    def probe(self, probe_id: str) -> str:
        """Hash: node id -> wall time at which that node received the probe."""
        return f"{self.prefix}probe:{probe_id}"

    def stats(self, node: str) -> str:
        """Hash of a node's published counters: ``l1_hit:<dt>``, ``l1_miss:<dt>``..."""
        return f"{self.prefix}stats:{node}"
