"""What a cluster backend reports: members (Patroni view) and Citus metadata.

The local and the Kubernetes backend both return :class:`ClusterTopology`, so the CLI,
the Dagster resources and the tests never care which backend answered.
"""

from __future__ import annotations

import abc
from typing import Literal

from pydantic import BaseModel

Role = Literal["leader", "sync_standby", "quorum_standby", "replica", "unknown"]


class MemberStatus(BaseModel):
    group: int
    name: str
    host: str
    port: int
    role: Role
    state: str  # running | streaming | starting | stopped | unreachable | ...
    timeline: int | None = None
    lag_mb: float | None = None
    api_url: str | None = None


class DistNode(BaseModel):
    """One row of pg_dist_node on the coordinator."""

    nodeid: int
    groupid: int
    host: str
    port: int
    role: str  # primary | secondary | unavailable
    active: bool
    should_have_shards: bool


class NodeShards(BaseModel):
    groupid: int
    host: str
    port: int
    shards: int
    bytes: int


class ClusterTopology(BaseModel):
    scope: str
    database: str
    backend: Literal["local", "kubernetes"]
    members: list[MemberStatus]
    dist_nodes: list[DistNode] = []
    shards: list[NodeShards] = []
    coordinator_dsn: str | None = None  # never contains a password

    @property
    def groups(self) -> list[int]:
        return sorted({m.group for m in self.members})

    def leader(self, group: int) -> MemberStatus | None:
        return next((m for m in self.members if m.group == group and m.role == "leader"), None)

    def members_of(self, group: int) -> list[MemberStatus]:
        return [m for m in self.members if m.group == group]

    @property
    def active_worker_groups(self) -> list[int]:
        """Worker groups that have an active primary in pg_dist_node."""
        return sorted(
            {
                n.groupid
                for n in self.dist_nodes
                if n.groupid > 0 and n.role == "primary" and n.active
            }
        )


class ClusterBackend(abc.ABC):
    """The contract both backends (local processes, Kubernetes) implement."""

    name: str

    @abc.abstractmethod
    def up(self) -> ClusterTopology: ...

    @abc.abstractmethod
    def status(self) -> ClusterTopology: ...

    @abc.abstractmethod
    def coordinator_dsn(self) -> str: ...

    @abc.abstractmethod
    def add_worker(self) -> int:
        """Create the next worker group; returns its group id once it is in pg_dist_node."""

    @abc.abstractmethod
    def remove_worker(self, group: int) -> None:
        """Drain the group's shards with citus_drain_node, then delete it; refuse if the drain fails."""

    @abc.abstractmethod
    def switchover(self, group: int, candidate: str | None = None) -> str: ...

    @abc.abstractmethod
    def failover(self, group: int, candidate: str | None = None) -> str: ...


__all__ = ["ClusterBackend", "ClusterTopology", "DistNode", "MemberStatus", "NodeShards", "Role"]
