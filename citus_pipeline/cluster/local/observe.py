"""What a local cluster looks like now, and what still keeps it from being ready.

Members come from Patroni's /cluster view of each group, completed by what the pidfiles say
about members Patroni does not list; readiness adds the coordinator's pg_dist_node.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import psycopg

from .. import health
from ..citus_meta import fetch_dist_nodes
from ..spec import ClusterSpec
from ..topology import ClusterTopology, MemberStatus
from .layout import Layout
from .patroni import PatroniAPI
from .processes import member_pid

KNOWN_ROLES = ("leader", "sync_standby", "quorum_standby", "replica")


def member_statuses(layout: Layout, groups: list[int], api: PatroniAPI) -> list[MemberStatus]:
    """Every member of ``groups`` as Patroni lists it, else as its pidfile says. The groups
    are asked at once, so a DCS that hangs every Patroni costs one timeout in all."""
    with ThreadPoolExecutor(max_workers=max(1, len(groups))) as pool:
        views = list(pool.map(api.group_cluster, groups))
    out: list[MemberStatus] = []
    for g, view in zip(groups, views, strict=True):
        view = view or {"members": []}
        seen = {}
        for pm in view.get("members", []):
            seen[pm["name"]] = pm
        for m in layout.members([g]):
            pm = seen.get(m.name)
            if pm is None:
                state = "stopped" if not member_pid(m) else "starting"
                out.append(
                    MemberStatus(
                        group=g,
                        name=m.name,
                        host=m.address,
                        port=m.pg_port,
                        role="unknown",
                        state=state,
                        api_url=m.api_url,
                    )
                )
                continue
            role = pm.get("role", "unknown")
            if role == "standby_leader":  # a standby cluster's leader still leads its group
                role = "leader"
            if role not in KNOWN_ROLES:
                role = "unknown"
            lag = pm.get("lag")
            out.append(
                MemberStatus(
                    group=g,
                    name=m.name,
                    host=pm.get("host", m.address),
                    port=int(pm.get("port", m.pg_port)),
                    role=role,
                    state=pm.get("state", "unknown"),
                    timeline=pm.get("timeline"),
                    lag_mb=round(lag / 1048576, 1) if isinstance(lag, int) else None,
                    api_url=m.api_url,
                    pending_restart=bool(pm.get("pending_restart")),
                )
            )
    return out


def not_ready(
    spec: ClusterSpec,
    members: list[MemberStatus],
    groups: list[int],
    connect: Callable[[int], psycopg.Connection],
) -> list[str]:
    """What still keeps ``groups`` from being ready (empty list: ready).

    ``members`` are the statuses of (at least) those groups; ``connect(timeout)`` opens a
    connection to the coordinator leader.
    """
    # the same readiness the backends' waits and the drills ask (cluster/health.py), given
    # Patroni's members now and pg_dist_node as the coordinator answers
    topo = ClusterTopology(
        scope=spec.name,
        database=spec.database,
        backend="local",
        members=[m for m in members if m.group in groups],
    )
    waiting = health.not_ready(topo, spec, groups)
    worker_groups = [g for g in groups if g > 0]
    if not worker_groups:
        return waiting
    try:
        with connect(2) as conn:
            topo.dist_nodes = fetch_dist_nodes(conn)
    except psycopg.Error as err:
        return [*waiting, f"coordinator not answering: {str(err).strip().splitlines()[0]}"]
    return waiting + health.unregistered_leaders(topo, worker_groups)


__all__ = ["member_statuses", "not_ready"]
