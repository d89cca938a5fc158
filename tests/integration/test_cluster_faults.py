"""Fault drills on a cluster of their own: leader crash, switchover under load, scale out/in, down.

The tests run in order on one module-scoped cluster (each leaves it healthy for the next).
"""

from __future__ import annotations

import subprocess
import time

import psycopg
import pytest

from citus_pipeline.cluster.write_probe import WriteProbe
from citus_pipeline.errors import DrainError

pytestmark = [pytest.mark.destructive]


@pytest.fixture(scope="module")
def cluster(fresh_cluster_module):
    c = fresh_cluster_module()
    with psycopg.connect(c.coordinator_dsn(), autocommit=True) as conn:
        conn.execute("CREATE TABLE acked (id bigint PRIMARY KEY, payload text)")
        conn.execute("SELECT create_distributed_table('acked', 'id')")
    return c


# The writer of the drills (`WriteProbe`): single rows through the coordinator, acks recorded;
# `lost()` compares them with what `acked` holds.
ACKED_INSERT = "INSERT INTO acked VALUES (%s, 'x') ON CONFLICT (id) DO NOTHING"


def _writing(cluster, start_id: int) -> WriteProbe:
    """The writer started, with two seconds of acked inserts behind it before the fault."""
    w = WriteProbe(cluster.coordinator_dsn(), ACKED_INSERT, start_id=start_id, table="acked")
    w.start()
    time.sleep(2)
    return w


def _ids(dsn: str) -> set[int]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        return {r[0] for r in conn.execute("SELECT id FROM acked")}


def test_killed_worker_leader_is_replaced_and_nothing_acked_is_lost(cluster):
    w = _writing(cluster, start_id=1)
    old = cluster.status().leader(1)
    cluster.kill_postmaster(old.name)
    t0 = time.monotonic()
    limit = cluster.spec.patroni.ttl + cluster.spec.patroni.loop_wait
    new = None
    while time.monotonic() - t0 < limit + 15:
        topo = cluster.status(with_shards=False)
        new = topo.leader(1)
        if new and new.name != old.name and new.state == "running":
            break
        time.sleep(0.5)
    elapsed = time.monotonic() - t0
    assert new is not None and new.name != old.name, "no new leader in group 1"
    assert elapsed <= limit + 5, f"failover took {elapsed:.1f}s (ttl+loop_wait={limit})"
    # Patroni's Citus support points pg_dist_node at the new leader
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        nodes = cluster.status(with_shards=False).dist_nodes
        if any(
            n.groupid == 1 and n.role == "primary" and (n.host, n.port) == (new.host, new.port)
            for n in nodes
        ):
            break
        time.sleep(0.5)
    else:
        pytest.fail("pg_dist_node does not point at the new leader of group 1")
    time.sleep(2)
    w.stop(30)
    assert w.acked, "the writer never succeeded"
    assert not w.lost(), "an acknowledged insert is missing after the failover"
    # the old leader rejoins as a replica
    cluster.wait_ready([1], 120)


def test_coordinator_switchover_under_streaming_inserts(cluster):
    w = _writing(cluster, start_id=1_000_000)
    old = cluster.status().leader(0)
    new = cluster.switchover(0)
    assert new != old.name
    time.sleep(3)
    w.stop(30)
    assert len(w.acked) > 10
    assert not w.lost(), "an acknowledged insert is missing after the switchover"
    assert cluster.status().leader(0).name == new


def test_add_worker_then_remove_it_after_a_drain(cluster):
    dsn = cluster.coordinator_dsn()
    count_before = len(_ids(dsn))
    group = cluster.add_worker()
    assert group == 3
    topo = cluster.status()
    leader = topo.leader(3)
    assert any(
        n.groupid == 3 and n.role == "primary" and (n.host, n.port) == (leader.host, leader.port)
        for n in topo.dist_nodes
    )
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            "SELECT rebalance_table_shards('acked', shard_transfer_mode => 'block_writes')"
        )
        on3 = conn.execute("SELECT count(*) FROM pg_dist_placement WHERE groupid = 3").fetchone()[0]
    assert on3 > 0, "the rebalance put no shard on the new group"
    moved = cluster.remove_worker(3)
    assert moved == on3
    topo = cluster.status()
    assert 3 not in topo.groups
    assert all(n.groupid != 3 for n in topo.dist_nodes)
    assert len(_ids(dsn)) == count_before
    # the removed group's stanza went with it: the next group 3 is a new system
    (info,) = cluster.backups.repository(lambda g: cluster.members([g])).info([3])
    assert info.status == "missing stanza path"


def test_remove_worker_refuses_when_the_drain_fails(cluster):
    dsn = cluster.coordinator_dsn()
    topo = cluster.status()
    g1 = next(n for n in topo.dist_nodes if n.groupid == 1 and n.role == "primary")
    with psycopg.connect(dsn, autocommit=True) as conn:
        before = conn.execute(
            "SELECT count(*) FROM pg_dist_placement WHERE groupid = 2"
        ).fetchone()[0]
        assert before > 0
        # nowhere to move group 2's shards: the only other worker takes none
        conn.execute(
            "SELECT citus_set_node_property(%s, %s, 'shouldhaveshards', false)", (g1.host, g1.port)
        )
        try:
            with pytest.raises(DrainError):
                cluster.remove_worker(2)
        finally:
            conn.execute(
                "SELECT citus_set_node_property(%s, %s, 'shouldhaveshards', true)",
                (g1.host, g1.port),
            )
        # nothing removed: the group, its members and its shards are all still there
        topo = cluster.status()
        assert 2 in topo.groups and topo.leader(2) is not None
        assert all(cluster.member_pid(m) for m in cluster.members([2]))
        assert (
            conn.execute("SELECT count(*) FROM pg_dist_placement WHERE groupid = 2").fetchone()[0]
            == before
        )
        assert conn.execute(
            "SELECT bool_and(shouldhaveshards) FROM pg_dist_node WHERE groupid = 2 AND noderole = 'primary'"
        ).fetchone()[0], "a refused removal left the node marked shouldhaveshards=false"
        assert len(_ids(dsn)) == conn.execute("SELECT count(*) FROM acked").fetchone()[0]


def test_down_leaves_no_process(cluster):
    state = str(cluster.state_dir)
    assert cluster.supervisor.pid(), "up started no supervisor"  # down must stop it too
    t0 = time.monotonic()
    cluster.down()
    assert time.monotonic() - t0 < 60
    left = subprocess.run(
        ["pgrep", "-af", state], capture_output=True, text=True, check=False
    ).stdout.strip()
    assert left == "", f"processes left after down: {left}"
    assert not cluster.is_running()


def test_up_after_down_resumes_with_every_row(cluster):
    # `down` left every group in Patroni's maintenance mode with PostgreSQL stopped
    assert not cluster.is_running()
    cluster.up()
    topo = cluster.status()
    assert all(topo.leader(g) is not None for g in topo.groups)
    with psycopg.connect(cluster.coordinator_dsn(), autocommit=True) as conn:
        n = conn.execute("SELECT count(*) FROM acked").fetchone()[0]
    assert n > 10


def test_health_names_the_group_whose_sync_standby_is_down(cluster):
    from citus_pipeline.cluster import health

    topo = cluster.status()
    assert health.every_sync_standby_streams(topo, cluster.spec).holds
    standby = next(m for m in topo.members_of(2) if m.role == "sync_standby")
    cluster.stop_member(standby.name)
    try:
        f = health.every_sync_standby_streams(cluster.status(), cluster.spec)
        assert not f.holds and f.problem == "no streaming synchronous standby in group(s) [2]"
        assert health.every_group_has_a_leader(cluster.status()).holds
        assert health.dist_nodes_follow_leaders(cluster.status()).holds
    finally:
        cluster.start_member(standby.name)
    assert health.every_sync_standby_streams(cluster.status(), cluster.spec).holds
