"""The cluster health questions on topologies as the backends report them."""

from citus_pipeline.cluster import health
from citus_pipeline.cluster.spec import ClusterSpec
from citus_pipeline.cluster.topology import ClusterTopology, DistNode, MemberStatus

SPEC = ClusterSpec()


def _member(group, i, role, state, lag=None):
    return MemberStatus(
        group=group,
        name=f"citusdemo-{group}-{i}",
        host=f"127.0.{10 + group}.{i}",
        port=5432,
        role=role,
        state=state,
        lag_mb=lag,
    )


def _node(nodeid, group, host, role="primary"):
    return DistNode(
        nodeid=nodeid,
        groupid=group,
        host=host,
        port=5432,
        role=role,
        active=True,
        should_have_shards=group > 0,
    )


def _healthy() -> ClusterTopology:
    members = [
        _member(0, 1, "leader", "running"),
        _member(0, 2, "sync_standby", "streaming", 0.0),
        _member(0, 3, "replica", "streaming", 0.1),
    ]
    nodes = [_node(1, 0, "127.0.10.1")]
    for g in (1, 2):
        members += [
            _member(g, 1, "leader", "running"),
            _member(g, 2, "sync_standby", "streaming", 0.0),
        ]
        nodes += [
            _node(g + 1, g, f"127.0.{10 + g}.1"),
            _node(g + 10, g, f"127.0.{10 + g}.2", "secondary"),
        ]
    return ClusterTopology(
        scope="citusdemo", database="citus", backend="local", members=members, dist_nodes=nodes
    )


def test_a_healthy_cluster_holds_every_topology_question():
    topo = _healthy()
    for finding in (
        health.every_group_has_a_leader(topo),
        health.every_sync_standby_streams(topo, SPEC),
        health.replication_lag_within_failover_limit(topo, SPEC),
        health.dist_nodes_follow_leaders(topo),
    ):
        assert finding.holds and finding.problem is None


def test_a_group_without_a_running_leader_is_named():
    topo = _healthy()
    topo.members[3] = _member(1, 1, "leader", "stopped")
    f = health.every_group_has_a_leader(topo)
    assert not f.holds and f.problem == "no running leader in group(s) [1]"
    assert f.seen == {"groups": 3, "groups_without_leader": 1}


def test_a_sync_standby_that_stopped_streaming_is_named():
    topo = _healthy()
    topo.members[6] = _member(2, 2, "replica", "stopped")
    f = health.every_sync_standby_streams(topo, SPEC)
    assert not f.holds and "group(s) [2]" in f.problem
    no_sync = SPEC.model_copy(
        update={"patroni": SPEC.patroni.model_copy(update={"synchronous_mode": False})}
    )
    assert health.every_sync_standby_streams(topo, no_sync).holds


def test_a_standby_past_the_failover_lag_limit_is_named():
    topo = _healthy()
    topo.members[2] = _member(0, 3, "replica", "streaming", 3.5)  # limit: 1 MiB
    f = health.replication_lag_within_failover_limit(topo, SPEC)
    assert not f.holds and f.problem == "lag over maximum_lag_on_failover: citusdemo-0-3 3.5 MB"
    assert f.seen["max_lag_mb"] == 3.5 and f.seen["limit_mb"] == 1.0


def test_a_standby_behind_only_in_the_first_read_is_not_named():
    first = _healthy()
    first.members[2] = _member(0, 3, "replica", "streaming", 16.0)
    first.members[1] = _member(0, 2, "sync_standby", "streaming", 2.0)
    later = _healthy()  # a cycle later, member 3 has caught up; member 2 is still behind
    later.members[1] = _member(0, 2, "sync_standby", "streaming", 4.0)
    f = health.replication_lag_within_failover_limit(first, SPEC, later=later)
    assert not f.holds and f.problem == "lag over maximum_lag_on_failover: citusdemo-0-2 4 MB"
    assert f.seen["max_lag_mb"] == 4.0 and f.seen["standbys_behind"] == 1
    assert health.replication_lag_within_failover_limit(first, SPEC, later=_healthy()).holds


def test_pg_dist_node_pointing_at_a_member_that_is_not_the_leader_is_the_drift_named():
    topo = _healthy()
    # group 2's leader moved to member 2, pg_dist_node still names member 1
    topo.members[5] = _member(2, 1, "replica", "streaming", 0.0)
    topo.members[6] = _member(2, 2, "leader", "running")
    f = health.dist_nodes_follow_leaders(topo)
    assert not f.holds
    assert f.problem == (
        "group 2: pg_dist_node says 127.0.12.1:5432, Patroni's leader is citusdemo-2-2 at "
        "127.0.12.2:5432"
    )
    topo.dist_nodes = [n for n in topo.dist_nodes if n.groupid != 1]
    assert (
        "group 1: leader citusdemo-1-1 has no primary row"
        in health.dist_nodes_follow_leaders(topo).problem
    )


def test_a_rolling_restart_takes_the_workers_before_the_coordinator():
    from citus_pipeline.cluster.rolling import restart_order

    assert restart_order([0, 2, 1, 3]) == [1, 2, 3, 0]
    assert restart_order([0]) == [0]


# ---- readiness: what the backends' waits and the drills ask ---------------------------------
def test_a_healthy_cluster_is_ready_registered_and_whole():
    topo = _healthy()
    groups = topo.groups
    assert health.not_ready(topo, SPEC, groups) == []
    assert health.unregistered_leaders(topo, groups) == []
    assert health.unregistered_groups(topo, groups) == []
    assert health.leaderless(topo) == []
    assert all(health.group_ready(topo, SPEC, g) for g in groups)
    assert health.cluster_is_whole(topo, SPEC, members=7).holds


def test_readiness_names_what_keeps_each_group_waiting():
    topo = _healthy()
    topo.members[3] = _member(1, 1, "leader", "starting")  # group 1's leader not running yet
    topo.members[6] = _member(2, 2, "replica", "stopped")  # group 2 without its sync standby
    assert health.not_ready(topo, SPEC, topo.groups) == [
        "group 1: no running leader",
        "group 2: no streaming synchronous standby",
        "group 2: citusdemo-2-2 is stopped",
    ]
    # a leader still starting counts for a backend waiting for the first election
    assert health.leaderless(topo) == [1]
    assert health.leaderless(topo, running=False) == []
    assert not health.group_ready(topo, SPEC, 2) and health.group_ready(topo, SPEC, 1)
    whole = health.cluster_is_whole(topo, SPEC, members=7)
    assert not whole.holds
    assert whole.problem.startswith("not running or streaming: citusdemo-1-1, citusdemo-2-2")


def test_readiness_waits_for_pg_dist_node_to_name_each_new_leader():
    topo = _healthy()
    # group 1's standby took over; the coordinator still names the old leader
    topo.members[3] = _member(1, 1, "replica", "streaming")
    topo.members[4] = _member(1, 2, "leader", "running")
    assert health.unregistered_leaders(topo, [1, 2]) == [
        "group 1: leader citusdemo-1-2 not yet in pg_dist_node"
    ]
    assert health.unregistered_groups(topo, [1, 2]) == []  # a primary row, if stale
    assert not health.cluster_is_whole(topo, SPEC, members=7).holds
    topo.dist_nodes = [n for n in topo.dist_nodes if n.groupid != 2]
    assert health.unregistered_groups(topo, [1, 2]) == [2]


def test_a_cluster_missing_a_member_is_not_whole():
    topo = _healthy()
    assert not health.cluster_is_whole(topo, SPEC, members=8).holds
