"""The ways into a local cluster besides the coordinator's leader itself: the pooler
(PgBouncer through HAProxy, following the leader) and the read endpoint (a coordinator standby
whose sessions read from the worker groups' standbys and write nothing)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

from citus_pipeline.waiting import until

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "tests" / "data" / "pp-sample-1995.csv"


def _cli(cluster, *args: str) -> subprocess.CompletedProcess:
    spec = cluster.state_dir / "test-spec.yaml"
    spec.write_text(json.dumps(cluster.spec.model_dump(mode="json")))
    return subprocess.run(
        [sys.executable, "-m", "citus_pipeline.cli", *args],
        capture_output=True,
        text=True,
        check=False,
        cwd=ROOT,
        env={
            **os.environ,
            "CITUS_PIPELINE_STATE_DIR": str(cluster.state_dir),
            "CITUS_PIPELINE_SPEC": str(spec),
        },
    )


def _pooled(dsn: str) -> psycopg.Connection:
    return psycopg.connect(dsn, autocommit=True, prepare_threshold=None)


def test_status_names_the_three_endpoints(citus_cluster):
    r = _cli(citus_cluster, "cluster", "status", "--json")
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    for key in ("coordinator_dsn", "pooler_dsn", "read_dsn"):
        assert "sslmode=verify-full" in data[key], key
    with _pooled(data["pooler_dsn"]) as conn:
        assert conn.execute("SELECT pg_is_in_recovery()").fetchone() == (False,)
    with psycopg.connect(data["read_dsn"]) as conn:
        assert conn.execute("SELECT pg_is_in_recovery()").fetchone() == (True,)


def test_the_read_endpoint_reads_from_the_standbys_and_refuses_writes(citus_cluster):
    with psycopg.connect(citus_cluster.coordinator_dsn(), autocommit=True) as conn:
        conn.execute("DROP TABLE IF EXISTS read_probe")
        conn.execute("CREATE TABLE read_probe (id int PRIMARY KEY, v text)")
        conn.execute("SELECT create_distributed_table('read_probe', 'id')")
        conn.execute("INSERT INTO read_probe SELECT g, 'v' || g FROM generate_series(1, 500) g")
        lsn = conn.execute("SELECT pg_current_wal_lsn()").fetchone()[0]
    topo = citus_cluster.status(with_shards=False)
    standbys = {m.host for m in topo.members if m.group > 0 and m.role != "leader"}
    leaders = {topo.leader(g).host for g in (1, 2)}
    with psycopg.connect(citus_cluster.read_dsn(), autocommit=True) as conn:

        def replayed() -> bool:
            q = "SELECT pg_last_wal_replay_lsn() >= %s::pg_lsn"
            return conn.execute(q, (str(lsn),)).fetchone()[0]

        until(replayed, 30, 0.2, "the coordinator standby to replay the table")
        # the rows, once every worker group's standby has replayed them (synchronous
        # replication waits for their flush, not their replay)
        until(
            lambda: conn.execute("SELECT count(*), sum(id) FROM read_probe").fetchone(),
            30,
            0.2,
            "the worker standbys to replay the rows",
            done=lambda got: got == (500, 125250),
        )
        plan = "\n".join(
            r[0] for r in conn.execute("EXPLAIN SELECT count(*) FROM read_probe").fetchall()
        )
        hosts = {h for h in standbys | leaders if f"host={h} " in plan}
        assert hosts and hosts <= standbys, plan
        with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
            conn.execute("INSERT INTO read_probe VALUES (1000, 'x')")


def test_a_load_through_the_pooler_is_exact(citus_cluster):
    pooler = citus_cluster.status(with_shards=False).pooler_dsn
    schema = "pooled_load"
    with psycopg.connect(citus_cluster.coordinator_dsn(), autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
    args = ["data", "load", str(SAMPLE), "--dsn", pooler, "--schema", schema, "--json"]
    r = _cli(citus_cluster, *args, "--chunk-mb", "1", "--jobs", "2")
    assert r.returncode == 0, r.stderr + r.stdout
    with psycopg.connect(citus_cluster.coordinator_dsn(), autocommit=True) as conn:
        (n,) = conn.execute(f"SELECT count(*) FROM {schema}.uk_price").fetchone()
    assert n == 10_298
    # a rerun cut differently: the ON CONFLICT path, its temporary table in each transaction
    again = _cli(citus_cluster, *args)
    assert again.returncode == 0, again.stderr
    with psycopg.connect(citus_cluster.coordinator_dsn(), autocommit=True) as conn:
        assert conn.execute(f"SELECT count(*) FROM {schema}.uk_price").fetchone() == (n,)


def test_the_pooler_follows_a_switchover_and_never_writes_to_a_standby(fresh_cluster):
    cluster = fresh_cluster()
    dsn = cluster.pooler_dsn()
    with _pooled(dsn) as conn:
        conn.execute("CREATE TABLE pooled (id int PRIMARY KEY)")
        conn.execute("SELECT create_reference_table('pooled')")
        conn.execute("INSERT INTO pooled VALUES (1)")
    old = cluster.status(with_shards=False).leader(0).name
    new = cluster.switchover(0)
    assert new != old
    written, refused = 1, []

    def wrote() -> bool:
        nonlocal written
        try:
            with _pooled(dsn) as conn:
                conn.execute("INSERT INTO pooled VALUES (%s)", (written + 1,))
                written += 1
                return True
        except psycopg.Error as e:
            refused.append(str(e).splitlines()[0])
            return False

    until(wrote, 30, 0.2, "a write through the pooler after the switchover")
    assert not any("read-only" in r for r in refused), refused
    with psycopg.connect(cluster.coordinator_dsn()) as conn:
        server = conn.execute("SELECT inet_server_addr()").fetchone()[0]
        assert conn.execute("SELECT count(*) FROM pooled").fetchone() == (written,)
    assert str(server) == cluster.member_by_name(new).address
