"""A Redis Cluster on loopback: three masters and three replicas, each a real
``redis-server --cluster-enabled yes`` process, formed by
``redis-cli --cluster create ... --cluster-replicas 1 --cluster-yes`` (the
tool operators use, so the test forms the cluster the documented way).

Tuned to start and fail over fast: a short ``cluster-node-timeout`` (a
master is declared failed, and its replica promoted, within about a second
of a ``kill -9``), no persistence, diskless replication without the default
5 s wait, and the cluster bus on its own free port (``cluster-port``) rather
than the default port + 10000, which may fall outside the port range or be
taken. Meant to be started once per test module: forming a cluster costs a
few seconds."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

from tests.support.ports import free_port
from tests.support.redis_server import RedisServer
from tests.support.waiting import wait_until

SLOTS = 16384


class RedisCluster:
    """3 masters + 3 replicas (``masters`` x (1 + ``replicas``) servers)."""

    def __init__(self, *, masters: int = 3, replicas: int = 1,
                 node_timeout_ms: int = 500) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="hc-cluster-"))
        self.node_timeout_ms = node_timeout_ms
        self.replicas = replicas
        self.servers = [self._server() for _ in range(masters * (1 + replicas))]

    def _server(self) -> RedisServer:
        port = free_port()
        return RedisServer(port, args=(
            "--cluster-enabled", "yes",
            "--cluster-port", str(free_port()),
            "--cluster-config-file", str(self.dir / f"nodes-{port}.conf"),
            "--cluster-node-timeout", str(self.node_timeout_ms),
            # A replica must take over even if it lost its link a while ago
            # (it was killed and restarted by a test, say).
            "--cluster-replica-validity-factor", "0",
            "--repl-diskless-sync", "yes", "--repl-diskless-sync-delay", "0",
        ))

    @property
    def ports(self) -> list[int]:
        return [s.port for s in self.servers]

    def url(self, auth: str = "") -> str:
        """The ``redis+cluster://`` URL naming every server as a seed."""
        hosts = ",".join(f"127.0.0.1:{p}" for p in self.ports)
        return f"redis+cluster://{auth}{hosts}"

    def start(self) -> RedisCluster:
        for server in self.servers:
            server.start()
        if len(self.servers) == 1:
            # One shard (a benchmark's baseline): redis-cli --cluster create
            # wants three masters; a single node just takes every slot.
            self.servers[0].cli("cluster", "addslotsrange", "0", str(SLOTS - 1))
            wait_until(self.healthy, timeout=30, interval=0.05, what="the 1-node cluster")
            return self
        subprocess.run(
            ["redis-cli", "--cluster", "create", *(f"127.0.0.1:{p}" for p in self.ports),
             "--cluster-replicas", str(self.replicas), "--cluster-yes"],
            capture_output=True, text=True, timeout=60, check=True)
        wait_until(self.healthy, timeout=30, interval=0.05,
                   what="the cluster to cover every slot with every replica in sync")
        return self

    def nodes(self, via: RedisServer | None = None) -> list[dict[str, str]]:
        """CLUSTER NODES as seen by ``via`` (default: any live server), one
        dict per node: id, port, flags, master (id or '-'), slots."""
        server = via or next(s for s in self.servers if s.process is not None)
        rows = []
        for line in server.cli("cluster", "nodes").splitlines():
            parts = line.split()
            rows.append({"id": parts[0], "port": parts[1].split("@")[0].rsplit(":", 1)[1],
                         "flags": parts[2], "master": parts[3], "link": parts[7],
                         "slots": " ".join(parts[8:])})
        return rows

    def masters(self) -> list[RedisServer]:
        """The servers that are masters now (with slots), by CLUSTER NODES."""
        ports = {int(n["port"]) for n in self.nodes()
                 if "master" in n["flags"] and "fail" not in n["flags"] and n["slots"]}
        return [s for s in self.servers if s.port in ports]

    def healthy(self) -> bool:
        """Every live server says the cluster is ok, and every live replica
        is in sync with its master."""
        for server in self.servers:
            if server.process is None:
                continue
            if "cluster_state:ok" not in server.cli("cluster", "info"):
                return False
            info = server.cli("info", "replication")
            if "role:slave" in info and "master_link_status:up" not in info:
                return False
        return True

    def master_of_slot(self, slot: int) -> RedisServer:
        for row in self.nodes():
            if "master" not in row["flags"] or "fail" in row["flags"]:
                continue
            for part in row["slots"].split():
                if part.startswith("["):
                    continue  # a slot being migrated or imported
                lo, _, hi = part.partition("-")
                if int(lo) <= slot <= int(hi or lo):
                    return next(s for s in self.servers if s.port == int(row["port"]))
        raise LookupError(f"no master serves slot {slot}")

    def replica_of(self, master: RedisServer) -> RedisServer:
        rows = self.nodes()
        master_id = next(r["id"] for r in rows if int(r["port"]) == master.port)
        port = next(int(r["port"]) for r in rows
                    if r["master"] == master_id and "fail" not in r["flags"])
        return next(s for s in self.servers if s.port == port)

    def kill_master(self, slot: int) -> RedisServer:
        """kill -9 the master serving ``slot``; returns its replica, which
        the cluster should promote (see ``wait_promoted``)."""
        master = self.master_of_slot(slot)
        replica = self.replica_of(master)
        master.kill()
        return replica

    def wait_promoted(self, replica: RedisServer, timeout: float = 20.0) -> None:
        wait_until(lambda: "role:master" in replica.cli("info", "replication")
                   and "cluster_state:ok" in replica.cli("cluster", "info"),
                   timeout=timeout, interval=0.05,
                   what=f"the cluster to promote :{replica.port}")

    def stop(self) -> None:
        for server in self.servers:
            server.stop()
            shutil.rmtree(server.dir, ignore_errors=True)
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> RedisCluster:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc: object) -> None:
        self.stop()


def node_id(server: RedisServer) -> str:
    return server.cli("cluster", "myid")


def migrate_slot(cluster: RedisCluster, slot: int, to: RedisServer) -> int:
    """Move ``slot`` to master ``to`` as ``redis-cli --cluster reshard`` does,
    one slot at a time: IMPORTING/MIGRATING, MIGRATE its keys in batches,
    then SETSLOT NODE on every master (the target first). Returns how many
    keys moved. Clients meanwhile get ASK / TRYAGAIN, then MOVED."""
    source = cluster.master_of_slot(slot)
    if source.port == to.port:
        return 0
    source_id, target_id = node_id(source), node_id(to)
    to.cli("cluster", "setslot", str(slot), "importing", source_id)
    source.cli("cluster", "setslot", str(slot), "migrating", target_id)
    moved = 0
    while keys := source.cli("cluster", "getkeysinslot", str(slot), "100").split():
        source.cli("migrate", "127.0.0.1", str(to.port), "", "0", "5000", "keys", *keys)
        moved += len(keys)
    for server in (to, source, *(m for m in cluster.masters() if m not in (to, source))):
        server.cli("cluster", "setslot", str(slot), "node", target_id)
    return moved
