"""A frozen member, as a paused VM or a long stall leaves it: its Patroni, postmaster and every
backend stopped (SIGSTOP) while its kernel keeps the sockets open, so nothing it was asked
ever fails, it only never answers. `cluster status` must still answer, and say what it could
not learn."""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
import pytest
from polling import wait_for
from rich.console import Console

from citus_pipeline.cluster.local.processes import member_pid, postmaster_pid
from citus_pipeline.cluster.render import rich_tables

pytestmark = [pytest.mark.destructive]


def _processes(m) -> list[int]:
    """The member's Patroni, its postmaster and the postmaster's children (Patroni detaches
    the postmaster, so it is found by its pid file, not as Patroni's child)."""
    patroni, postmaster = member_pid(m), postmaster_pid(m)
    assert patroni and postmaster, f"{m.name} is not running"
    pids = [patroni, postmaster]
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            ppid = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        if ppid == postmaster:
            pids.append(int(d.name))
    return pids


@contextmanager
def frozen(pids: list[int]) -> Iterator[None]:
    for pid in pids:
        os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        for pid in pids:
            try:
                os.kill(pid, signal.SIGCONT)
            except ProcessLookupError:
                pass


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

    with frozen(_processes(member)):
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
    wait_for(c.status, lambda t: t.shards_unanswered is None and bool(t.shards), timeout=60)
