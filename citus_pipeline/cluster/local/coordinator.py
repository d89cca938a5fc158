"""The coordinator's part of a local `cluster status` (pg_dist_node, the shards), within a budget.

`cluster status` answers within :data:`STATUS_BUDGET_S` whatever the members do (frozen, cut
off, the DCS gone). Patroni's views take at most 1.5 s; the coordinator's part gets what is
left. A statement on a frozen node can outlast its own timeout (Citus cancels it with a
blocking call): ``budget.ask_within`` leaves it behind, and the status says what did not
answer.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import psycopg

from ..budget import STATUS_BUDGET_S, ask_within
from ..citus_meta import read_metadata
from ..topology import ClusterTopology, MemberStatus
from . import credentials
from .layout import Layout, Member


def _secs(left: float) -> int:
    """libpq's connect_timeout: whole seconds, at least 2 (1 is taken as 2 anyway)."""
    return max(2, int(left))


def _read(layout: Layout, leader: Member, topo: ClusterTopology, with_shards: bool, left: float):
    dsn = credentials.member_dsn(layout, leader, connect_timeout=_secs(left))
    try:
        with psycopg.connect(dsn, autocommit=True) as conn:
            read_metadata(conn, topo, with_shards)
    except psycopg.Error:
        pass  # a coordinator not answering leaves Patroni's view: what status can still say


def read_within_budget(
    layout: Layout,
    member: Callable[[], Member],
    leader: MemberStatus,
    topo: ClusterTopology,
    with_shards: bool,
    started: float,
) -> ClusterTopology:
    """``topo`` completed from the coordinator ``leader`` Patroni names (``member()`` finds
    its member in the reading thread) if it answers before the budget begun at ``started``
    (time.monotonic) runs out; else ``topo`` itself, saying in ``shards_unanswered`` that it
    did not."""
    left = STATUS_BUDGET_S - (time.monotonic() - started)
    found = topo.model_copy(deep=True)
    asked = ask_within(lambda: _read(layout, member(), found, with_shards, left), left)
    if not asked.answered:
        topo.shards_unanswered = (
            f"the coordinator leader {leader.name} did not answer within "
            f"{STATUS_BUDGET_S:g} s of asking"
        )
        return topo
    return found


__all__ = ["STATUS_BUDGET_S", "read_within_budget"]
