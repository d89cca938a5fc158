"""What a drill waits for and looks at, on either backend: the cluster whole again, a new
leader, its registration in pg_dist_node, who is out of recovery.

The predicates are the cluster's own (``cluster.health``); this module only waits on them
through the one polling primitive (``waiting.until``). A read that fails mid-fault (Patroni
or the coordinator not answering) counts as "not yet", never as an answer.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import psycopg

from ..cluster import health
from ..cluster.topology import ClusterBackend, ClusterTopology
from ..errors import ClusterError
from ..waiting import until
from .backends import injector_for
from .injector import FaultInjector

# what a read may raise while the fault lasts: not an answer, only "not yet"
MID_FAULT = (ClusterError, psycopg.Error)


def _status(c: ClusterBackend) -> ClusterTopology:
    return c.status(with_shards=False)


def is_whole(topo: ClusterTopology, c: ClusterBackend, faults: FaultInjector | None = None) -> bool:
    """Every member running or streaming, every group led, each synchronous standby
    streaming, pg_dist_node following Patroni's leaders."""
    f = faults or injector_for(c)
    return health.cluster_is_whole(topo, f.spec, f.expected_members()).holds


def wait_whole(
    c: ClusterBackend, timeout: float = 180, faults: FaultInjector | None = None
) -> ClusterTopology:
    f = faults or injector_for(c)
    return until(
        lambda: _status(c),
        timeout,
        what="the cluster whole again",
        done=lambda t: is_whole(t, c, f),
        ignore=MID_FAULT,
    )


def leader_name(c: ClusterBackend, group: int) -> str:
    """The name of ``group``'s leader now; an error where it has none (nothing to break)."""
    leader = _status(c).leader(group)
    if leader is None:
        raise ClusterError(f"group {group} has no leader to break")
    return leader.name


def sync_standby(topo: ClusterTopology, group: int) -> str | None:
    return next((m.name for m in topo.members_of(group) if m.role in health.SYNC_ROLES), None)


def wait_new_leader(
    c: ClusterBackend,
    group: int,
    old: str,
    timeout: float = 120,
    old_incarnation: object | None = None,
    faults: FaultInjector | None = None,
) -> str:
    """Until Patroni reports a running leader of ``group`` other than ``old`` or, given
    ``old_incarnation``, ``old`` itself in a new process (killed, started again, leading)."""
    f = faults or injector_for(c)

    def restarted() -> bool:
        now = f.incarnation(old) if old_incarnation is not None else None
        return now is not None and now != old_incarnation

    def led(topo: ClusterTopology) -> bool:
        leader = topo.leader(group)
        if leader is None or leader.state != "running":
            return False
        return leader.name != old or restarted()

    topo = until(
        lambda: _status(c), timeout, what=f"group {group}: a new leader", done=led, ignore=MID_FAULT
    )
    return topo.leader(group).name


def wait_registered(c: ClusterBackend, group: int, leader: str, timeout: float = 120) -> None:
    """Until pg_dist_node's primary row of ``group`` names ``leader`` (Patroni's Citus
    support updates it on the coordinator)."""

    def named(topo: ClusterTopology) -> bool:
        member = next((m for m in topo.members if m.name == leader), None)
        return member is not None and any(
            n.groupid == group and n.role == "primary" and n.host == member.host
            for n in topo.dist_nodes
        )

    until(
        lambda: _status(c),
        timeout,
        what=f"group {group}: {leader} in pg_dist_node",
        done=named,
        ignore=MID_FAULT,
    )


@dataclass
class LeaderChange:
    old: str
    new: str
    seconds: float  # from the fault to a new leader registered in pg_dist_node


def wait_leader_change(
    c: ClusterBackend, group: int, old: str, since: float, timeout: float = 180
) -> LeaderChange:
    """Until ``group`` has a running leader other than ``old`` and pg_dist_node names it;
    ``since`` (monotonic) is when the fault began."""
    deadline = time.monotonic() + timeout
    new = wait_new_leader(c, group, old, timeout)
    wait_registered(c, group, new, max(0.0, deadline - time.monotonic()))
    return LeaderChange(old, new, time.monotonic() - since)


def wait_ha(c: ClusterBackend, faults: FaultInjector, timeout: float = 240) -> ClusterTopology:
    """The topology once every member of the spec's groups runs (as the platform judges it)
    and every group streams to a synchronous standby: until then a group whose leader goes
    has no standby Patroni may promote (in synchronous mode only the /sync key's standby
    races), and roles still change."""
    spec = faults.spec
    for g in range(spec.workers.groups + 1):
        until(
            lambda g=g: faults.members_ready(g),
            timeout,
            2,
            f"group {g}: every member ready",
            ignore=MID_FAULT,
        )
    return until(
        lambda: _status(c),
        timeout,
        2,
        "a streaming synchronous standby in every group",
        done=lambda topo: health.every_sync_standby_streams(topo, spec).holds,
        ignore=MID_FAULT,
    )


def primaries(c: ClusterBackend, group: int, faults: FaultInjector | None = None) -> list[str]:
    """Members of ``group`` whose PostgreSQL is out of recovery right now (split brain if >1)."""
    f = faults or injector_for(c)
    return [name for name in f.member_names(group) if f.out_of_recovery(name)]


__all__ = [
    "MID_FAULT",
    "LeaderChange",
    "is_whole",
    "leader_name",
    "primaries",
    "sync_standby",
    "wait_ha",
    "wait_leader_change",
    "wait_new_leader",
    "wait_registered",
    "wait_whole",
]
