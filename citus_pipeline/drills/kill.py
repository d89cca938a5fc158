"""Members killed and frozen, and the DCS gone: the crash faults.

A killed member is started again once its group has a new registered leader, as a
supervisor would; a frozen one (a paused VM, a long stall) is thawed after 2 x ttl unless
the platform's watchdog kills it first; the DCS is gone for longer than ttl.
"""

from __future__ import annotations

import time

from ..cluster.topology import ClusterBackend, down_lines
from ..errors import ClusterError
from ..waiting import until
from .injector import DCS, FREEZE, KILL, NODE, FaultInjector
from .ready import MID_FAULT, leader_name, sync_standby, wait_new_leader, wait_registered
from .scenario import FaultRun, Scenario, leader_lost_for

DCS_OUTAGE_S = 30


def kill_leader(c: ClusterBackend, f: FaultInjector, group: int) -> FaultRun:
    """kill -9 of the leader's Patroni and postmaster (its backends go with the postmaster);
    started again once the group has a new registered leader, as a supervisor would."""
    old = leader_name(c, group)
    t0 = time.monotonic()
    f.kill(old)
    new = wait_new_leader(c, group, old, faults=f)
    failover = time.monotonic() - t0
    wait_registered(c, group, new)
    registered = time.monotonic() - t0
    f.revive(old)
    return FaultRun(t0, time.monotonic(), f"{old} killed, {new} leads", failover, registered)


def kill_sync_standby(c: ClusterBackend, f: FaultInjector) -> FaultRun:
    """kill -9 of group 1's synchronous standby: Patroni drops the group to asynchronous
    (or picks another standby) and commits go on; started again after a ttl."""
    standby = sync_standby(c.status(with_shards=False), 1)
    if standby is None:
        raise ClusterError("group 1 has no synchronous standby to kill")
    ttl = f.spec.patroni.ttl
    t0 = time.monotonic()
    f.kill(standby)
    time.sleep(ttl)
    f.revive(standby)
    return FaultRun(t0, time.monotonic(), f"{standby} killed for {ttl} s")


def freeze_leader(c: ClusterBackend, f: FaultInjector, group: int) -> FaultRun:
    """Every process of the leader stopped for 2 x ttl (a paused VM, a long stall), then let
    go on. Locally the supervisor finds the member hung about ttl into the stall, kills it
    and starts it again: before the thaw the group leads again, through the standby Patroni
    promotes or through the old leader back while its lock stands; the rest rejoins as a
    replica (pg_rewind where its timeline diverged). Without the supervisor
    (``local.supervisor: false``) the standby leads, but the frozen member's connections
    keep its successor out of pg_dist_node until the thaw."""
    old = leader_name(c, group)
    hold = 2 * f.spec.patroni.ttl
    old_incarnation, at = f.incarnation(old), time.time()
    fault = f.frozen(old)
    run = leader_lost_for(
        c, f, group, old, hold, fault, f"frozen {hold} s", "thaw", old_incarnation
    )
    kills = f.hang_kills(old, since=at)
    if kills:
        run.detail += f"; {f.watchdog} killed it {kills[0] - at:.1f} s in"
    return run


def dcs_outage(c: ClusterBackend, f: FaultInjector) -> FaultRun:
    """The DCS (the embedded default's one etcd; on Kubernetes the API server) frozen for
    30 s, longer than ttl: with failsafe mode each leader stays primary while it reaches the
    members of its group."""
    fault = f.dcs_frozen()
    t0 = time.monotonic()
    with fault:
        time.sleep(DCS_OUTAGE_S)
    return FaultRun(t0, time.monotonic(), f"{f.dcs_fault} {DCS_OUTAGE_S} s")


def lose_leaders_node(c: ClusterBackend, f: FaultInjector, group: int) -> FaultRun:
    """The node holding ``group``'s leader lost whole (a VM that died: every pod on it, a
    worker's leader too where one shares it); booted again once the group has a new
    registered leader."""
    old = leader_name(c, group)
    t0 = time.monotonic()
    with f.node_lost(old) as node:
        new = wait_new_leader(c, group, old, faults=f)
        failover = time.monotonic() - t0
        wait_registered(c, group, new)
        registered = time.monotonic() - t0
    detail = f"node {node} lost with {old}, {new} leads; the node booted again"
    return FaultRun(t0, time.monotonic(), detail, failover, registered)


def lose_worker_group(c: ClusterBackend, f: FaultInjector) -> FaultRun:
    """kill -9 of both members of group 2 for one ttl, then `up`: the writes whose shard is on
    group 2 fail meanwhile, the others go on; status says the group is down in one line."""
    names = f.member_names(2)
    t0 = time.monotonic()
    for name in names:
        f.kill(name)
    topo = until(
        lambda: c.status(with_shards=False),
        60,
        what="status reporting group 2 down",
        done=lambda t: any(line.startswith("group 2 ") for line in down_lines(t)),
        ignore=MID_FAULT,
    )
    line = next(x for x in down_lines(topo) if x.startswith("group 2 "))
    time.sleep(max(0.0, t0 + f.spec.patroni.ttl - time.monotonic()))
    c.up()
    return FaultRun(t0, time.monotonic(), f"status said: {line}")


SCENARIOS = (
    Scenario(
        "kill-worker-leader",
        "kill -9 of group 1's leader (Patroni and PostgreSQL), started again after failover",
        lambda c, f: kill_leader(c, f, 1),
        (KILL,),
    ),
    Scenario(
        "kill-coordinator-leader",
        "kill -9 of the coordinator's leader, started again after failover",
        lambda c, f: kill_leader(c, f, 0),
        (KILL,),
    ),
    Scenario(
        "kill-sync-standby",
        "kill -9 of group 1's synchronous standby for one ttl",
        kill_sync_standby,
        (KILL,),
    ),
    Scenario(
        "freeze-worker-leader",
        "every process of group 1's leader stopped (SIGSTOP) for 2 x ttl, then thawed",
        lambda c, f: freeze_leader(c, f, 1),
        (FREEZE,),
    ),
    Scenario(
        "freeze-coordinator-leader",
        "every process of the coordinator's leader stopped for 2 x ttl, then thawed",
        lambda c, f: freeze_leader(c, f, 0),
        (FREEZE,),
    ),
)
NODE_SCENARIOS = (
    Scenario(
        "lose-coordinator-node",
        "the node holding the coordinator's leader lost whole, booted again after failover",
        lambda c, f: lose_leaders_node(c, f, 0),
        (NODE,),
    ),
)
DCS_SCENARIOS = (
    Scenario(
        "dcs-outage",
        f"the DCS out for {DCS_OUTAGE_S} s, past ttl (etcd frozen; on Kubernetes the API "
        "server stopped)",
        dcs_outage,
        (DCS,),
    ),
)
GROUP_SCENARIOS = (
    Scenario(
        "lose-worker-group",
        "kill -9 of both members of group 2 for one ttl, then `up`",
        lose_worker_group,
        (KILL,),
    ),
)

__all__ = [
    "DCS_OUTAGE_S",
    "DCS_SCENARIOS",
    "GROUP_SCENARIOS",
    "NODE_SCENARIOS",
    "SCENARIOS",
    "dcs_outage",
    "freeze_leader",
    "kill_leader",
    "kill_sync_standby",
    "lose_worker_group",
]
