"""The network broken for 2 x ttl, then healed: the partitions.

A leader cut off from the DCS and its group's other members only, the coordinator still
reaching it: the case that could split the brain, so who is out of recovery is sampled
throughout. Cut off from everything, its writes hold only until its successor is
registered. The link between the machines of a leader and its synchronous standby cut, both
still reaching the DCS: the leader keeps its lock, and its commits wait for a standby that
cannot answer until PostgreSQL's ``wal_sender_timeout`` ends that standby's stream and
Patroni takes it out of ``synchronous_standby_names``.
"""

from __future__ import annotations

import time

from ..cluster.topology import ClusterBackend
from ..errors import ClusterError
from ..waiting import until
from .injector import LINK, MEMBER_SQL, PARTITION, FaultInjector
from .ready import MID_FAULT, leader_name, sync_standby
from .scenario import FaultRun, Scenario, leader_lost_for
from .watchers import PrimaryWatch


def partition_leader(c: ClusterBackend, f: FaultInjector, group: int, whole: bool) -> FaultRun:
    """The leader of ``group`` cut off for 2 x ttl, then healed: from the DCS and from its
    group's other members only (``whole`` False), or from everything (``whole``: its link
    down)."""
    old = leader_name(c, group)
    hold = 2 * f.spec.patroni.ttl
    cut = f.cut_off(old, whole)
    what = "cut off from everything" if whole else "cut off from the DCS and its group"
    watch = PrimaryWatch(c, group, f)
    watch.start()
    try:
        run = leader_lost_for(c, f, group, old, hold, cut, f"{what} for {hold} s", "heal")
    finally:
        most = watch.stop()
    run.max_primaries = most
    return run


def cut_leader_from_standby(c: ClusterBackend, f: FaultInjector) -> FaultRun:
    """The network between the machines of a worker group's leader and its synchronous
    standby cut for 2 x ttl, then healed; every other path (the DCS, the clients) stays.
    The group is the first whose standby does not share the coordinator leader's machine:
    where it does, the coordinator loses the worker's leader for the whole cut (no failover
    mends that: both still reach the DCS), which is the coordinator's fault, not this one.
    Who leads after, and the most members out of recovery at once."""
    topo = c.status(with_shards=False)  # read once: leader_name() asks status each time
    if topo.leader(0) is None:
        raise ClusterError("the coordinator has no leader")
    coordinator = f.machine_of(topo.leader(0).name)
    pairs = [
        (g, leader.name, standby, f.machine_of(standby) == coordinator)
        for g in topo.groups
        if g != 0
        and (leader := topo.leader(g)) is not None
        and (standby := sync_standby(topo, g)) is not None
    ]
    if not pairs:
        raise ClusterError("no worker group has a synchronous standby to cut its leader from")
    group, old, standby, beside = next((p for p in pairs if not p[3]), pairs[0])
    hold = 2 * f.spec.patroni.ttl
    watch = PrimaryWatch(c, group, f) if f.supports(MEMBER_SQL) else None
    if watch:
        watch.start()
    t0 = time.monotonic()
    try:
        with f.machines_cut(old, standby) as machines:
            time.sleep(hold)
    finally:
        most = watch.stop() if watch else None
    ended = time.monotonic()
    new = until(lambda: leader_name(c, group), 60, 1, f"group {group} led", ignore=MID_FAULT)
    led = f"{old} still leads" if new == old else f"{new} leads"
    who = f"{old}, group {group}'s leader, and {standby}, its synchronous standby"
    if beside:
        who += ", beside the coordinator's leader"
    run = FaultRun(t0, ended, f"{machines} ({who}) cut for {hold} s; {led}")
    run.max_primaries = most
    return run


SCENARIOS = (
    Scenario(
        "partition-worker-leader",
        "group 1's leader cut off from the DCS and its standby for 2 x ttl (netns; on "
        "Kubernetes from the API server and its group's pods), then healed",
        lambda c, f: partition_leader(c, f, 1, whole=False),
        (PARTITION, MEMBER_SQL),
    ),
    Scenario(
        "isolate-worker-leader",
        "group 1's leader cut off from everything for 2 x ttl (netns; on Kubernetes every "
        "packet of its pod dropped), then healed",
        lambda c, f: partition_leader(c, f, 1, whole=True),
        (PARTITION, MEMBER_SQL),
    ),
    Scenario(
        "isolate-coordinator-leader",
        "the coordinator's leader cut off from everything for 2 x ttl (netns; on Kubernetes "
        "every packet of its pod dropped), then healed",
        lambda c, f: partition_leader(c, f, 0, whole=True),
        (PARTITION, MEMBER_SQL),
    ),
    Scenario(
        "cut-leader-from-standby",
        "the network between the machines of a worker group's leader and its synchronous "
        "standby cut for 2 x ttl (netns; on Kubernetes their two nodes), then healed",
        cut_leader_from_standby,
        (LINK,),
    ),
)

__all__ = ["SCENARIOS", "cut_leader_from_standby", "partition_leader"]
