"""Is the HA Citus cluster healthy? One question per function, answered from what it reports.

Each function takes the topology a backend reports (Patroni's view of every group and the
coordinator's pg_dist_node) or a coordinator connection, and returns a :class:`Finding`:
whether it holds, what was seen, and, when it does not hold, one line that names the group
or member. The Dagster checks on `citus_cluster` and any other caller share these, so the
answer is the same wherever it is asked.

Readiness, which the backends and the fault drills wait for, is asked here too (in the same
terms): :func:`not_ready` and :func:`unregistered_leaders` say what still keeps groups from
being ready, :func:`group_ready` whether a group can hand over, :func:`leaderless` and
:func:`unregistered_groups` which groups lack a leader or a primary row, and
:func:`cluster_is_whole` whether a drill's cluster is back to every member.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field

import psycopg

from .spec import ClusterSpec
from .topology import ClusterTopology

SYNC_ROLES = ("sync_standby", "quorum_standby")

# What shard moves and splits leave on a node when they fail half-way: replication slots,
# publications and subscriptions named citus_shard_*; and cleanup records on the coordinator.
LEFTOVERS_ON_EACH_NODE_SQL = r"""
SELECT n.groupid, n.nodename, n.nodeport, r.success, r.result
FROM pg_catalog.run_command_on_all_nodes($cmd$
  SELECT json_build_object(
    'slots', (SELECT count(*) FROM pg_catalog.pg_replication_slots
              WHERE slot_name LIKE 'citus\_shard\_%'),
    'publications', (SELECT count(*) FROM pg_catalog.pg_publication
                     WHERE pubname LIKE 'citus\_shard\_%'),
    'subscriptions', (SELECT count(*) FROM pg_catalog.pg_subscription
                      WHERE subname LIKE 'citus\_shard\_%'))
$cmd$) r
JOIN pg_catalog.pg_dist_node n USING (nodeid)
WHERE n.noderole = 'primary'
ORDER BY n.groupid
"""
CLEANUP_RECORDS_SQL = "SELECT count(*) FROM pg_catalog.pg_dist_cleanup"


@dataclass(frozen=True)
class Finding:
    holds: bool
    seen: dict[str, int | float | str] = field(default_factory=dict)
    problem: str | None = None  # one line naming what does not hold


def leaderless(
    topo: ClusterTopology, groups: Iterable[int] | None = None, running: bool = True
) -> list[int]:
    """Groups (of ``groups``, default every group reported) without a leader: a running one,
    or with ``running`` False any member Patroni names leader (a backend waiting for the
    first election counts a leader still starting)."""
    pick = _running_leader if running else ClusterTopology.leader
    return [g for g in (topo.groups if groups is None else groups) if pick(topo, g) is None]


def every_group_has_a_leader(topo: ClusterTopology) -> Finding:
    missing = leaderless(topo)
    return Finding(
        not missing,
        {"groups": len(topo.groups), "groups_without_leader": len(missing)},
        f"no running leader in group(s) {missing}" if missing else None,
    )


def every_sync_standby_streams(topo: ClusterTopology, spec: ClusterSpec) -> Finding:
    """In synchronous mode every group of two or more members has a streaming sync standby."""
    if not spec.patroni.synchronous_mode:
        return Finding(True, {"synchronous_mode": "off"})
    lacking = [
        g
        for g in topo.groups
        if len(topo.members_of(g)) > 1
        and not any(m.role in SYNC_ROLES and m.state == "streaming" for m in topo.members_of(g))
    ]
    return Finding(
        not lacking,
        {"groups_checked": len(topo.groups), "groups_without_streaming_sync": len(lacking)},
        f"no streaming synchronous standby in group(s) {lacking}" if lacking else None,
    )


def replication_lag_within_failover_limit(
    topo: ClusterTopology, spec: ClusterSpec, later: ClusterTopology | None = None
) -> Finding:
    """Each standby's lag under Patroni's maximum_lag_on_failover: past it, Patroni would not
    promote that standby, so the group's failover depends on the others.

    Patroni reports the leader's and each standby's WAL position once per loop_wait, each on
    its own cycle, so one read right after a burst of writes can show up to a cycle of WAL
    that the standby already has. Given ``later``, a read at least one cycle after ``topo``,
    a standby counts as behind only when it is behind in both (its lag from ``later``)."""
    limit = spec.patroni.maximum_lag_on_failover

    def over(t: ClusterTopology) -> dict[str, float]:
        return {
            m.name: m.lag_mb
            for m in t.members
            if m.role != "leader" and m.lag_mb is not None and m.lag_mb * 1048576 > limit
        }

    last = later or topo
    lags = {m.name: m.lag_mb for m in last.members if m.role != "leader" and m.lag_mb is not None}
    behind = over(last)
    if later is not None:
        behind = {name: mb for name, mb in behind.items() if name in over(topo)}
    worst = max(lags.values(), default=0.0)
    return Finding(
        not behind,
        {
            "max_lag_mb": worst,
            "limit_mb": round(limit / 1048576, 3),
            "standbys_behind": len(behind),
        },
        (
            "lag over maximum_lag_on_failover: "
            + ", ".join(f"{n} {mb:g} MB" for n, mb in sorted(behind.items()))
        )
        if behind
        else None,
    )


def dist_nodes_follow_leaders(topo: ClusterTopology) -> Finding:
    """pg_dist_node's primary of each group is that group's Patroni leader (host and port)."""
    drift = []
    for g in topo.groups:
        leader = _running_leader(topo, g)
        primaries = [n for n in topo.dist_nodes if n.groupid == g and n.role == "primary"]
        if leader is None or not primaries:
            if g > 0 and leader is not None:
                drift.append(f"group {g}: leader {leader.name} has no primary row in pg_dist_node")
            continue
        for n in primaries:
            if (n.host, n.port) != (leader.host, leader.port):
                drift.append(
                    f"group {g}: pg_dist_node says {n.host}:{n.port}, Patroni's leader is "
                    f"{leader.name} at {leader.host}:{leader.port}"
                )
    return Finding(
        not drift,
        {"groups_compared": len(topo.groups), "groups_drifted": len(drift)},
        "; ".join(drift) or None,
    )


def group_ready(topo: ClusterTopology, spec: ClusterSpec, group: int) -> bool:
    """``group`` led, and in synchronous mode (two members or more) a synchronous standby
    streaming: what a planned handover (a switchover to that standby) needs next."""
    members = topo.members_of(group)
    if topo.leader(group) is None:
        return False
    if not spec.patroni.synchronous_mode or len(members) < 2:
        return True
    return any(m.role in SYNC_ROLES and m.state == "streaming" for m in members)


def not_ready(topo: ClusterTopology, spec: ClusterSpec, groups: Iterable[int]) -> list[str]:
    """What keeps ``groups`` from being ready, in Patroni's view, one line each (empty: ready):
    a running leader, in synchronous mode a streaming synchronous standby, every other
    member streaming. pg_dist_node is :func:`unregistered_leaders`'."""
    waiting: list[str] = []
    for g in groups:
        gm = topo.members_of(g)
        leader = _running_leader(topo, g)
        if leader is None:
            waiting.append(f"group {g}: no running leader")
            continue
        if (
            len(gm) > 1
            and spec.patroni.synchronous_mode
            and not any(m.role in SYNC_ROLES and m.state == "streaming" for m in gm)
        ):
            waiting.append(f"group {g}: no streaming synchronous standby")
        for m in gm:
            if m is not leader and m.state != "streaming":
                waiting.append(f"group {g}: {m.name} is {m.state}")
    return waiting


def unregistered_leaders(topo: ClusterTopology, groups: Iterable[int]) -> list[str]:
    """Worker groups of ``groups`` whose leader (as Patroni names it, running or not) is not
    yet the active primary of its group in pg_dist_node, one line each (empty: registered)."""
    waiting = []
    for g in groups:
        leader = topo.leader(g) if g > 0 else None
        if leader is None:
            continue
        if not any(
            n.groupid == g
            and n.role == "primary"
            and n.active
            and (n.host, n.port) == (leader.host, leader.port)
            for n in topo.dist_nodes
        ):
            waiting.append(f"group {g}: leader {leader.name} not yet in pg_dist_node")
    return waiting


def unregistered_groups(topo: ClusterTopology, groups: Iterable[int]) -> list[int]:
    """Groups of ``groups`` without a leader or without an active primary row in pg_dist_node
    (whoever it names): not yet usable through the coordinator."""
    active = {n.groupid for n in topo.dist_nodes if n.active and n.role == "primary"}
    return [g for g in groups if topo.leader(g) is None or g not in active]


def cluster_is_whole(topo: ClusterTopology, spec: ClusterSpec, members: int) -> Finding:
    """Every one of the ``members`` the cluster has reported and running or streaming, every
    group led, each synchronous standby streaming, pg_dist_node following Patroni's leaders:
    a fault drill is over only then."""
    down = [m.name for m in topo.members if m.state not in ("running", "streaming")]
    parts = (
        every_group_has_a_leader(topo),
        every_sync_standby_streams(topo, spec),
        dist_nodes_follow_leaders(topo),
    )
    problems = [f.problem for f in parts if not f.holds]
    if len(topo.members) != members:
        problems.insert(0, f"{len(topo.members)} of {members} members reported")
    if down:
        problems.insert(0, f"not running or streaming: {', '.join(down)}")
    return Finding(
        len(topo.members) == members and not down and all(f.holds for f in parts),
        {"members": len(topo.members), "members_expected": members, "members_down": len(down)},
        "; ".join(p for p in problems if p) or None,
    )


def no_shard_move_leftovers(conn: psycopg.Connection) -> Finding:
    """No replication slot, publication or subscription of a shard move or split on any node,
    and no cleanup record waiting on the coordinator."""
    seen: dict[str, int | float | str] = {"slots": 0, "publications": 0, "subscriptions": 0}
    where: list[str] = []
    for group, host, port, ok, result in conn.execute(LEFTOVERS_ON_EACH_NODE_SQL).fetchall():
        if not ok:
            where.append(f"group {group} ({host}:{port}) did not answer: {result.strip()[:120]}")
            continue
        counts = json.loads(result)
        for kind, n in counts.items():
            seen[kind] = int(seen[kind]) + int(n)
        if any(counts.values()):
            what = ", ".join(f"{n} {kind}" for kind, n in counts.items() if n)
            where.append(f"group {group} ({host}:{port}): {what}")
    (cleanup,) = conn.execute(CLEANUP_RECORDS_SQL).fetchone()
    seen["cleanup_records"] = int(cleanup)
    if cleanup:
        where.append(f"{cleanup} resources wait in pg_dist_cleanup")
    return Finding(not where, seen, "; ".join(where) or None)


def _running_leader(topo: ClusterTopology, group: int):
    leader = topo.leader(group)
    return leader if leader is not None and leader.state == "running" else None


__all__ = [
    "Finding",
    "cluster_is_whole",
    "dist_nodes_follow_leaders",
    "every_group_has_a_leader",
    "every_sync_standby_streams",
    "group_ready",
    "leaderless",
    "no_shard_move_leftovers",
    "not_ready",
    "replication_lag_within_failover_limit",
    "unregistered_groups",
    "unregistered_leaders",
]
