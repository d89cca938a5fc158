"""The fault matrix on one cluster, each scenario under single-row writes through the
coordinator, from the drills library (`citus-pipeline bench faults` runs the same and prints
the figures).

Every scenario ends with the cluster whole again and the checker's verdict: every
acknowledged id stored exactly once. Each test then asserts what that fault must not cost.
"""

from __future__ import annotations

import os
import shutil

import psycopg
import pytest

from citus_pipeline.drills import primaries, run_scenario

pytestmark = [pytest.mark.destructive]


# Partitions need the cluster's own network namespaces (root, iproute2); the other faults
# run the same on either network, so as root the whole matrix runs on one netns cluster.
NETNS = os.geteuid() == 0 and shutil.which("ip") is not None
needs_netns = pytest.mark.skipif(
    not NETNS, reason="partitions need network namespaces: root and iproute2's ip"
)


@pytest.fixture(scope="module")
def cluster(fresh_cluster_module):
    return fresh_cluster_module(**({"local": {"network": "netns"}} if NETNS else {}))


def _leaders(c) -> dict[int, str]:
    topo = c.status(with_shards=False)
    return {g: topo.leader(g).name for g in topo.groups}


def _nothing_lost(o) -> None:
    assert o.acked > 0, o
    assert (o.lost, o.duplicated) == (0, 0), o


def _one_primary_per_group(c) -> None:
    leaders = _leaders(c)
    for g in c.groups():
        assert primaries(c, g) == [leaders[g]], f"group {g}"


@pytest.mark.parametrize(
    "scenario,group",
    [
        ("kill-worker-leader", 1),
        ("kill-coordinator-leader", 0),
    ],
)
def test_a_killed_leader_is_replaced_and_rejoins_as_a_replica(cluster, scenario, group):
    before = _leaders(cluster)
    o = run_scenario(cluster, scenario)
    _nothing_lost(o)
    assert o.failover_s is not None, o.detail
    assert _leaders(cluster)[group] != before[group]
    # writes went on through the new leader, before the old one was back
    assert any(o.failover_s < t < o.fault_s for t in o.acked_after_s), o
    # the old leader, started again, follows (run_scenario waited for it to stream); no
    # group ever has two primaries
    _one_primary_per_group(cluster)


@pytest.mark.parametrize(
    "scenario,group", [("freeze-worker-leader", 1), ("freeze-coordinator-leader", 0)]
)
def test_a_frozen_leader_is_killed_by_the_supervisor_and_writes_resume_before_the_thaw(
    cluster, scenario, group
):
    killed_before = len(cluster.supervisor.interventions())
    o = run_scenario(cluster, scenario)
    _nothing_lost(o)
    assert "the supervisor killed it" in o.detail, o.detail
    assert [e["member"] for e in cluster.supervisor.interventions()[killed_before:]] == [
        o.detail.split()[0]
    ]
    # the group led again and named in pg_dist_node while the old leader was still frozen
    # (without the supervisor its open connections hold that until the thaw), and writes
    # acknowledged after it, before the thaw
    assert o.registered_s is not None and "only after the thaw" not in o.detail, o.detail
    assert any(o.registered_s < t < o.fault_s for t in o.acked_after_s), o
    # whoever leads now (the promoted standby, or the old leader back with its lock), the
    # other follows: no group ever has two primaries
    _one_primary_per_group(cluster)


@needs_netns
def test_a_leader_cut_off_from_etcd_and_its_standby_steps_down_without_a_split_brain(cluster):
    before = _leaders(cluster)
    o = run_scenario(cluster, "partition-worker-leader")
    # the old leader still reached the coordinator: had it acknowledged a write on its own,
    # its rewind on rejoining would have lost it
    _nothing_lost(o)
    assert o.max_primaries == 1, o  # never two primaries in group 1, sampled twice a second
    assert o.failover_s is not None and o.registered_s is not None, o.detail
    assert "only after the heal" not in o.detail, o.detail
    assert _leaders(cluster)[1] != before[1]
    # the inserts whose shard is on group 2 went on while group 1 changed leaders
    assert any(0 < t < o.failover_s for t in o.acked_after_s), o
    _one_primary_per_group(cluster)


@needs_netns
@pytest.mark.parametrize(
    "scenario,group", [("isolate-worker-leader", 1), ("isolate-coordinator-leader", 0)]
)
def test_a_leader_cut_off_from_everything_holds_writes_only_until_its_successor(
    cluster, scenario, group
):
    before = _leaders(cluster)
    o = run_scenario(cluster, scenario)
    _nothing_lost(o)
    assert o.max_primaries == 1, o
    assert o.registered_s is not None and "only after the heal" not in o.detail, o.detail
    assert _leaders(cluster)[group] != before[group]
    # writes were acknowledged again while the old leader was still cut off: the TCP timeouts
    # closed the connections to it (without them they hang until the network returns)
    assert any(o.registered_s < t < o.fault_s for t in o.acked_after_s), o
    _one_primary_per_group(cluster)


@needs_netns
def test_a_leader_cut_from_its_synchronous_standby_keeps_its_lock_and_commits(cluster):
    before = _leaders(cluster)
    o = run_scenario(cluster, "cut-leader-from-standby")
    _nothing_lost(o)
    assert o.max_primaries == 1, o
    assert _leaders(cluster) == before, o.detail  # both still reach etcd: no failover
    # commits resumed before the heal: the walsender gave up on the standby
    # (wal_sender_timeout) and Patroni dropped the group to asynchronous
    assert any(o.fault_s / 2 < t < o.fault_s for t in o.acked_after_s), o
    _one_primary_per_group(cluster)


def test_writes_go_on_while_a_synchronous_standby_is_down(cluster):
    before = _leaders(cluster)
    o = run_scenario(cluster, "kill-sync-standby")
    _nothing_lost(o)
    # Patroni drops the group to asynchronous: commits are acknowledged in the fault's
    # second half, with the standby still down
    assert any(o.fault_s / 2 < t < o.fault_s for t in o.acked_after_s), o
    assert _leaders(cluster) == before


def test_writes_go_on_while_the_dcs_is_gone(cluster):
    before = _leaders(cluster)
    o = run_scenario(cluster, "dcs-outage")
    _nothing_lost(o)
    ttl = cluster.spec.patroni.ttl
    # acknowledged after the leaders' lock expired in the frozen DCS: failsafe mode held them
    assert any(ttl < t < o.fault_s for t in o.acked_after_s), o
    assert _leaders(cluster) == before


def test_a_lost_worker_group_is_named_and_costs_the_other_groups_nothing(cluster):
    o = run_scenario(cluster, "lose-worker-group")
    _nothing_lost(o)
    assert o.detail == (
        "status said: group 2 is down: no running leader "
        "(citusdemo-2-1 stopped, citusdemo-2-2 stopped)"
    )
    # the inserts whose shard is on group 2 failed; those on group 1 were acknowledged
    assert o.failed > 0
    assert any(2 < t < o.fault_s for t in o.acked_after_s), o


def test_a_rolling_restart_applies_a_parameter_with_every_group_led(cluster):
    o = run_scenario(cluster, "rolling-restart")
    _nothing_lost(o)
    members = cluster.members()
    assert o.detail.endswith(f": {len(members)} restarted"), o.detail
    target = int(o.detail.split(" -> ")[1].split(":")[0])
    for m in members:
        with psycopg.connect(cluster.member_dsn(m), autocommit=True) as conn:
            assert int(conn.execute("SHOW max_connections").fetchone()[0]) == target, m.name
    topo = cluster.status(with_shards=False)
    assert not any(m.pending_restart for m in topo.members)
    # one switchover per group, never an outage: the writes went on during the restarts
    assert any(0 < t < o.fault_s for t in o.acked_after_s), o
    _one_primary_per_group(cluster)


@pytest.mark.parametrize(
    "scenario", ["kill-coordinator-mid-rebalance", "kill-source-mid-rebalance"]
)
def test_a_rebalance_interrupted_by_a_killed_leader_finishes_on_a_rerun(cluster, scenario):
    o = run_scenario(cluster, scenario)
    _nothing_lost(o)
    assert o.failover_s is not None, o.detail
    # every row there, every shard in one place, the added group holds shards, and the
    # interrupted move left no slot, publication, subscription or cleanup record
    assert "400000 of 400000 rows, 0 shards without exactly one placement, leftovers: none" in (
        o.detail
    ), o.detail
    assert " holds 0 placements" not in o.detail, o.detail
    _one_primary_per_group(cluster)


@pytest.mark.parametrize("scenario", ["kill-coordinator-mid-monthly", "kill-worker-mid-monthly"])
def test_a_monthly_apply_interrupted_by_a_killed_leader_is_all_or_nothing(cluster, scenario):
    o = run_scenario(cluster, scenario)
    _nothing_lost(o)
    assert o.failover_s is not None, o.detail
    # killed inside the apply's one transaction: nothing of the file is applied, and the
    # rerun applies all of it exactly once
    assert "then none of the file applied" in o.detail, o.detail
    assert "(0 file already logged)" in o.detail, o.detail
    assert o.detail.endswith("uk_price equals the next complete file"), o.detail
    _one_primary_per_group(cluster)


@pytest.mark.skipif(os.geteuid() != 0, reason="a member's own filesystem needs root (mount)")
def test_a_full_disk_fails_what_needs_room_clearly_and_loses_nothing(cluster):
    before = _leaders(cluster)
    o = run_scenario(cluster, "disk-full-worker-leader")
    _nothing_lost(o)
    # the bulk insert that needed room failed whole, with PostgreSQL's reason relayed by
    # Citus, and stored every row when run again; the single rows went on throughout
    during = o.detail.split("meanwhile: ")[1].split("; after")[0]
    assert "No space left on device" in during, o.detail
    assert during.endswith("(not a failover error)"), o.detail  # failed at once, not retried
    assert "; after: ok, 100000 of 100000 rows; " in o.detail, o.detail
    assert any(0 < t < o.fault_s for t in o.acked_after_s), o
    assert any(t > o.fault_s for t in o.acked_after_s), o
    full, after = o.detail.split("'s filesystem full")[0], o.detail.split("; ")[-1]
    assert after == f"{full} leads group 1", o.detail
    assert _leaders(cluster) == before  # the cleanup switched back and left the disk as it was
    assert not any(os.path.ismount(m.dir) for m in cluster.members())
    _one_primary_per_group(cluster)
