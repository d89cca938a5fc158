"""What a cluster backend is and reports: the :class:`ClusterBackend` contract, and members
(Patroni's view) and Citus metadata as a :class:`ClusterTopology`.

The local and the Kubernetes backend both implement the contract and return the same
topology, put together by :func:`cluster_topology` for both, so the CLI, the Dagster resources
and the tests never care which backend answered.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel

from .. import settings
from .progress import Progress

if TYPE_CHECKING:
    from .restore_points import RestorePoints
    from .spec import ClusterSpec

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
    # a parameter changed that takes effect only at the next restart (Patroni's flag)
    pending_restart: bool = False


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


def active_worker_groups(nodes: Iterable[DistNode]) -> list[int]:
    """Worker groups that take shards: an active primary in pg_dist_node with shouldhaveshards.

    The one meaning of "active worker group" for the cluster asset, the balance check, the
    new-workers sensor and `pipeline run`: a group being drained (shouldhaveshards off) is
    leaving, so it neither counts as a worker nor is expected to hold shards.
    """
    return sorted(
        {
            n.groupid
            for n in nodes
            if n.groupid > 0 and n.role == "primary" and n.active and n.should_have_shards
        }
    )


class ClusterTopology(BaseModel):
    scope: str
    database: str
    backend: Literal["local", "kubernetes"]
    members: list[MemberStatus]
    dist_nodes: list[DistNode] = []
    shards: list[NodeShards] = []
    shards_unanswered: str | None = None  # why shards per node are missing, when asked for
    members_unanswered: str | None = None  # why the members are missing (an API not answering)
    coordinator_dsn: str | None = None  # never contains a password
    pooler_dsn: str | None = None  # the pooler in front of the coordinator leader, where on
    read_dsn: str | None = None  # a coordinator standby, reads from the workers' standbys

    @property
    def groups(self) -> list[int]:
        return sorted({m.group for m in self.members})

    def leader(self, group: int) -> MemberStatus | None:
        return next((m for m in self.members if m.group == group and m.role == "leader"), None)

    def members_of(self, group: int) -> list[MemberStatus]:
        return [m for m in self.members if m.group == group]

    @property
    def active_worker_groups(self) -> list[int]:
        return active_worker_groups(self.dist_nodes)


def down_lines(topo: ClusterTopology) -> list[str]:
    """One line per group without a running leader: what each of its members is doing."""
    # Here, not beside the status tables of the CLI: the fault drills and the tests read these
    # lines too, and they sit below the CLI.
    lines = []
    for g in topo.groups:
        members = topo.members_of(g)
        if any(m.role == "leader" and m.state == "running" for m in members):
            continue
        seen = ", ".join(f"{m.name} {m.state}" for m in members)
        lines.append(f"group {g} is down: no running leader ({seen})")
    return lines


def cluster_topology(
    backend: ClusterBackend,
    members: list[MemberStatus],
    read_coordinator: Callable[[ClusterTopology, MemberStatus], ClusterTopology],
    coordinator_dsn: str | None = None,
    pooler_dsn: str | None = None,
    read_dsn: str | None = None,
) -> ClusterTopology:
    """A backend's status, put together the same way by both: Patroni's ``members`` first;
    then, only where the coordinator group has a leader to ask, what ``read_coordinator``
    (given the topology so far and that leader) adds from it: pg_dist_node, the shards. It
    returns the topology to report, so a backend that could not ask in time reports less."""
    topo = ClusterTopology(
        scope=backend.spec.name,
        database=backend.spec.database,
        backend=backend.name,
        members=members,
        coordinator_dsn=coordinator_dsn,
        pooler_dsn=pooler_dsn,
        read_dsn=read_dsn,
    )
    leader = topo.leader(0)
    return topo if leader is None else read_coordinator(topo, leader)


class ClusterBackend(abc.ABC):
    """The contract both backends (local processes, Kubernetes) implement.

    The CLI, the Dagster resources and the tests call only these. Where a ``timeout``
    defaults to ``...``, each backend sets its own (local processes start in seconds, pods
    in minutes). What only one backend can do (stop a local member) lives on that backend.
    """

    # the name `get_backend` knows it by, and the one its topology reports; never a switch:
    # what differs between the backends is a method of this contract
    name: Literal["local", "kubernetes"]
    spec: ClusterSpec

    @abc.abstractmethod
    def up(self, progress: Progress | None = None, timeout: float = ...) -> ClusterTopology:
        """Bring up every group of the spec; return the topology once each has a leader."""

    @abc.abstractmethod
    def ensure_up(self) -> ClusterTopology:
        """The cluster as a pipeline run needs it, started first where starting it is this
        process's business (local processes); a Kubernetes cluster is deployed by its
        operator (`k8s apply`), so a run only observes it."""

    @abc.abstractmethod
    def status(self, with_shards: bool = True) -> ClusterTopology:
        """Members, pg_dist_node and (``with_shards``) shards per node, as they are now."""

    @abc.abstractmethod
    def member_statuses(self) -> list[MemberStatus]:
        """Patroni's view of every member, without asking the coordinator anything."""

    @abc.abstractmethod
    def coordinator_dsn(self) -> str:
        """libpq conninfo of the coordinator leader; never contains a password."""

    @abc.abstractmethod
    def pooler_dsn(self, session: bool = False) -> str | None:
        """libpq conninfo of the pooler before the coordinator's leader (``session``: its
        session pool, else the transaction pool); None where the spec has no pooler."""

    def client_dsn(self) -> str:
        """The way the project's own clients (the Dagster resources, the CLI's data commands)
        come in: ``$CITUS_PIPELINE_DSN`` when set, else the pooler's session pool where the
        spec has a pooler, else the coordinator itself."""
        return settings.DSN.get() or self.pooler_dsn(session=True) or self.coordinator_dsn()

    @abc.abstractmethod
    def add_worker(self, progress: Progress | None = None, timeout: float = ...) -> int:
        """Create the next worker group; returns its group id once it is in pg_dist_node."""

    @abc.abstractmethod
    def remove_worker(self, group: int, transfer_mode: str = "block_writes") -> int:
        """Drain the group's shards (citus_drain_node), then delete it; returns placements moved.

        A failed drain raises DrainError and removes nothing.
        """

    @abc.abstractmethod
    def switchover(self, group: int, candidate: str | None = None, timeout: float = 120) -> str:
        """Planned leader change in ``group`` (to ``candidate``, else a sync standby).

        Returns the new leader's name.
        """

    @abc.abstractmethod
    def failover(self, group: int, candidate: str | None = None, timeout: float = 120) -> str:
        """Forced leader change in ``group``; returns the new leader's name."""

    @abc.abstractmethod
    def restart_member(self, name: str, timeout: float = ...) -> None:
        """Restart one member's PostgreSQL; returns once its group is ready to go on (what
        `rolling.rolling_restart` needs before the next member)."""

    @abc.abstractmethod
    def restore_points(self) -> RestorePoints:
        """Cluster-consistent restore points, taken through the coordinator and recorded
        where they outlive any restore (the state directory; a ConfigMap on Kubernetes)."""


__all__ = [
    "ClusterBackend",
    "ClusterTopology",
    "DistNode",
    "MemberStatus",
    "NodeShards",
    "Progress",
    "Role",
    "active_worker_groups",
    "cluster_topology",
    "down_lines",
]
