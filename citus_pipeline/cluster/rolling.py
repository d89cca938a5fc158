"""Restarts of the members' PostgreSQL through Patroni: rolling (one member at a time, every
group led throughout) or all at once.

What a parameter that needs a restart (``shared_buffers``, ``max_connections``, a library)
asks for. In each group the standbys go first, each streaming again before the next; then
the leader hands over to its synchronous standby (a switchover: clients of that group see
one short pause, not an outage) and is restarted as a standby. Worker groups go before the
coordinator, so the coordinator's Patroni is steady while it follows the workers' handovers.
With ``pending_only`` only the members Patroni flags ``pending_restart`` are restarted, and a
group none of whose members is flagged keeps its leader.
"""

from __future__ import annotations

from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Protocol

from ..errors import ClusterError
from .topology import ClusterTopology, Progress


class Restartable(Protocol):
    """A backend that can restart one member: through its Patroni's REST API (local), or by
    deleting its pod for its StatefulSet to recreate (Kubernetes)."""

    def status(self, with_shards: bool = True) -> ClusterTopology: ...
    def switchover(self, group: int, candidate: str | None = None, timeout: float = 120) -> str: ...
    def restart_member(self, name: str, timeout: float = 120) -> None: ...


def restart_order(groups: Iterable[int]) -> list[int]:
    """Worker groups in order, the coordinator (group 0) last."""
    gs = sorted(set(groups))
    return [g for g in gs if g != 0] + [g for g in gs if g == 0]


def rolling_restart(
    backend: Restartable,
    groups: Iterable[int] | None = None,
    pending_only: bool = False,
    progress: Progress | None = None,
) -> list[str]:
    """Restart the members of ``groups`` (default: all) one at a time; returns their names in
    the order they were restarted."""
    topo = backend.status(with_shards=False)
    order = restart_order(groups if groups is not None else topo.groups)
    unknown = [g for g in order if g not in topo.groups]
    if unknown:
        raise ClusterError(f"no group(s) {unknown} in the cluster (groups: {topo.groups})")
    plan = []
    for g in order:
        members = topo.members_of(g)
        leader = topo.leader(g)
        if leader is None:
            raise ClusterError(f"group {g} has no leader: restart nothing until it has one")
        todo = [m for m in members if not pending_only or m.pending_restart]
        standbys = [m.name for m in todo if m.name != leader.name]
        plan.append(
            (g, standbys, leader.name if any(m.name == leader.name for m in todo) else None)
        )
    total = sum(len(s) + (leader is not None) for _, s, leader in plan)
    done: list[str] = []

    def step(name: str, what: str) -> None:
        if progress:
            progress(f"{what} {name}", len(done), total)

    for g, standbys, leader in plan:
        for name in standbys:
            step(name, "restarting standby")
            backend.restart_member(name)
            done.append(name)
        if leader is None:
            continue
        if len(topo.members_of(g)) > 1:
            step(leader, f"switchover of group {g} away from")
            backend.switchover(g)
        step(leader, "restarting former leader")
        backend.restart_member(leader)
        done.append(leader)
    if progress:
        progress("restarted", len(done), total)
    return done


def restart_all_at_once(
    backend: Restartable, groups: Iterable[int] | None = None, pending_only: bool = False
) -> list[str]:
    """Every member of ``groups`` restarted at the same time (each group is without a primary
    for the restart's seconds); returns their names."""
    topo = backend.status(with_shards=False)
    wanted = set(groups) if groups is not None else set(topo.groups)
    names = [
        m.name
        for m in topo.members
        if m.group in wanted and (not pending_only or m.pending_restart)
    ]
    with ThreadPoolExecutor(max(1, len(names))) as pool:
        list(pool.map(backend.restart_member, names))  # re-raises the first failure
    return names


__all__ = ["Restartable", "restart_all_at_once", "restart_order", "rolling_restart"]
