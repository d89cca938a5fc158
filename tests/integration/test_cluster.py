"""The shared local HA cluster: topology, Citus registration, a query over both workers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import psycopg

ROOT = Path(__file__).resolve().parents[2]


def _cli(cluster, *args: str) -> subprocess.CompletedProcess:
    spec = cluster.state_dir / "test-spec.yaml"
    spec.write_text(json.dumps(cluster.spec.model_dump(mode="json")))
    return subprocess.run(
        [sys.executable, "-m", "citus_pipeline.cli", "cluster", *args, "--spec", str(spec)],
        capture_output=True,
        text=True,
        check=False,
        cwd=ROOT,
        env={**os.environ, "CITUS_PIPELINE_STATE_DIR": str(cluster.state_dir)},
    )


def test_every_group_has_a_leader_and_a_streaming_sync_standby(citus_cluster):
    topo = citus_cluster.status()
    assert topo.groups == [0, 1, 2]
    for g in topo.groups:
        assert topo.leader(g) is not None, f"group {g} has no leader"
        assert any(m.role == "sync_standby" and m.state == "streaming" for m in topo.members_of(g))
    # each member is its own loopback host
    assert len({m.host for m in topo.members}) == 7


def test_status_json_lists_seven_members_with_roles(citus_cluster):
    r = _cli(citus_cluster, "status", "--json")
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    assert len(data["members"]) == 7
    roles = sorted(m["role"] for m in data["members"])
    assert (
        roles.count("leader") == 3
        and roles.count("sync_standby") == 3
        and roles.count("replica") == 1
    )
    assert "password" not in r.stdout.lower() or "passfile" in r.stdout


def test_pg_dist_node_lists_both_worker_leaders(citus_cluster):
    topo = citus_cluster.status()
    primaries = {
        (n.groupid, n.host, n.port) for n in topo.dist_nodes if n.role == "primary" and n.active
    }
    for g in (1, 2):
        leader = topo.leader(g)
        assert (g, leader.host, leader.port) in primaries


def test_distributed_table_query_touches_both_workers(citus_dsn):
    with psycopg.connect(citus_dsn, autocommit=True) as conn:
        conn.execute("DROP TABLE IF EXISTS t_cluster_smoke")
        conn.execute("CREATE TABLE t_cluster_smoke (id bigint PRIMARY KEY, v text)")
        conn.execute("SELECT create_distributed_table('t_cluster_smoke', 'id')")
        conn.execute(
            "INSERT INTO t_cluster_smoke SELECT i, md5(i::text) FROM generate_series(1, 1000) i"
        )
        groups = {
            r[0]
            for r in conn.execute(
                "SELECT DISTINCT n.groupid FROM citus_shards s JOIN pg_dist_node n "
                "ON (n.nodename, n.nodeport) = (s.nodename, s.nodeport) WHERE s.table_name = 't_cluster_smoke'::regclass"
            )
        }
        assert groups == {1, 2}
        assert conn.execute("SELECT count(*), sum(id) FROM t_cluster_smoke").fetchone() == (
            1000,
            500500,
        )
        conn.execute("DROP TABLE t_cluster_smoke")


def test_up_again_is_idempotent(citus_cluster):
    before = {m.name: citus_cluster.member_pid(m) for m in citus_cluster.members()}
    supervisor = citus_cluster.supervisor.pid()
    assert supervisor, "up started no supervisor"
    r = _cli(citus_cluster, "up")
    assert r.returncode == 0, r.stderr
    assert "coordinator DSN" in r.stdout
    after = {m.name: citus_cluster.member_pid(m) for m in citus_cluster.members()}
    assert before == after
    assert citus_cluster.supervisor.pid() == supervisor


def test_cleanup_drops_shard_move_objects_no_cleanup_record_names(citus_cluster):
    """What a coordinator killed between a move's CREATE SUBSCRIPTION and its cleanup record
    leaves on the target (and its publication and slot on the source): no pg_dist_cleanup
    row names them, so only the project's sweep drops them."""
    from citus_pipeline.cluster import health
    from citus_pipeline.cluster.citus_meta import cleanup_orphans

    leader = citus_cluster.member_by_name(citus_cluster.status().leader(1).name)
    with psycopg.connect(citus_cluster.member_dsn(leader), autocommit=True) as conn:
        conn.execute("SET citus.enable_ddl_propagation TO off")  # as Citus's moves do
        conn.execute("CREATE PUBLICATION citus_shard_move_publication_test")
        conn.execute(
            "SELECT pg_create_logical_replication_slot('citus_shard_move_slot_test', 'pgoutput')"
        )
        conn.execute(
            "CREATE SUBSCRIPTION citus_shard_move_subscription_test CONNECTION 'dbname=none' "
            "PUBLICATION citus_shard_move_publication_test "
            "WITH (connect = false, slot_name = 'citus_shard_move_slot_test')"
        )
    with psycopg.connect(citus_cluster.coordinator_dsn(), autocommit=True) as conn:
        left = health.no_shard_move_leftovers(conn)
        assert (left.seen["slots"], left.seen["publications"], left.seen["subscriptions"]) == (
            1,
            1,
            1,
        ), left
        cleanup_orphans(conn)
        assert health.no_shard_move_leftovers(conn).holds
