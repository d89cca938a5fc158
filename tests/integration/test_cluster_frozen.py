"""A frozen member, as a paused VM or a long stall leaves it: its Patroni, postmaster and every
backend stopped (SIGSTOP) while its kernel keeps the sockets open, so nothing it was asked
ever fails, it only never answers. `cluster status` must still answer, and say what it could
not learn."""

from __future__ import annotations

import threading

import psycopg
import pytest
from rich.console import Console

from citus_pipeline.cli.render import rich_tables
from citus_pipeline.cluster.local.faults import frozen, member_processes
from citus_pipeline.waiting import until

pytestmark = [pytest.mark.destructive]


def _status_in_thread(cluster, guard: float):
    """``cluster.status()``, or None when it has not come back after ``guard`` seconds (a
    guard against a hang, not a timing)."""
    out = {}
    t = threading.Thread(target=lambda: out.setdefault("topo", cluster.status()), daemon=True)
    t.start()
    t.join(guard)
    return out.get("topo")


def test_status_answers_while_a_worker_leader_is_frozen(fresh_cluster):
    c = fresh_cluster()
    with psycopg.connect(c.coordinator_dsn(), autocommit=True) as conn:
        conn.execute("CREATE TABLE frozen_probe (id bigint PRIMARY KEY)")
        conn.execute("SELECT create_distributed_table('frozen_probe', 'id')")
    before = c.status()
    assert before.shards and before.shards_unanswered is None
    leader = before.leader(1)
    member = next(m for m in c.members([1]) if m.name == leader.name)

    with frozen(member_processes(member)):
        topo = _status_in_thread(c, guard=60)
        assert topo is not None, "cluster status did not come back with a worker leader frozen"
        # what only the frozen worker could say is missing, and status says why
        assert topo.shards == []
        assert "did not answer" in (topo.shards_unanswered or "")
        # the rest is answered: every group's members, and the coordinator's catalog
        assert {m.group for m in topo.members} == set(range(c.spec.workers.groups + 1))
        assert {n.groupid for n in topo.dist_nodes} >= set(range(c.spec.workers.groups + 1))
        console = Console(record=True, width=200)
        console.print(rich_tables(topo))
        text = " ".join(console.export_text().split())  # the title wraps to the table's width
        assert "Shards per node — not answered: a worker did not answer within 3 s" in text

    # thawed well within ttl: status whole again
    until(
        c.status,
        60,
        1,
        "a whole status again",
        done=lambda t: t.shards_unanswered is None and bool(t.shards),
    )
