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


def _pooled_transactions(cluster) -> dict[str, int]:
    """Transactions PgBouncer served per database, from its admin console."""
    admin = cluster.pooler_dsn().replace(f"dbname={cluster.spec.database} ", "dbname=pgbouncer ")
    with _pooled(admin) as conn:
        cur = conn.execute("SHOW STATS")
        names = [d.name for d in cur.description]
        return {r[0]: r[names.index("total_xact_count")] for r in cur.fetchall()}


def test_a_load_through_the_pooler_is_exact(citus_cluster):
    """The CLI's default way in is the pooler's session pool; the transaction pool takes the
    same load."""
    pooler = citus_cluster.status(with_shards=False).pooler_dsn
    schema = "pooled_load"
    with psycopg.connect(citus_cluster.coordinator_dsn(), autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
    before = _pooled_transactions(citus_cluster).get("citus_session", 0)
    args = ["data", "load", str(SAMPLE), "--schema", schema, "--json"]
    r = _cli(citus_cluster, *args, "--chunk-mb", "1", "--jobs", "2")
    assert r.returncode == 0, r.stderr + r.stdout
    assert _pooled_transactions(citus_cluster)["citus_session"] > before
    with psycopg.connect(citus_cluster.coordinator_dsn(), autocommit=True) as conn:
        (n,) = conn.execute(f"SELECT count(*) FROM {schema}.uk_price").fetchone()
    assert n == 10_298
    # a rerun cut differently, through the transaction pool: the ON CONFLICT path, its
    # temporary table in each transaction
    again = _cli(citus_cluster, *args, "--dsn", pooler)
    assert again.returncode == 0, again.stderr
    with psycopg.connect(citus_cluster.coordinator_dsn(), autocommit=True) as conn:
        assert conn.execute(f"SELECT count(*) FROM {schema}.uk_price").fetchone() == (n,)


def test_the_dagster_resource_comes_in_through_the_session_pool_with_its_settings(
    citus_cluster, tmp_path
):
    from citus_pipeline.defs.citus.resources import CitusResource, ClusterResource

    spec = tmp_path / "spec.yaml"
    spec.write_text(json.dumps(citus_cluster.spec.model_dump(mode="json")))
    backend = ClusterResource(spec_path=str(spec), state_dir=str(citus_cluster.state_dir))
    citus = CitusResource(cluster=backend, db_schema="probe_pooled", statement_timeout_ms=4321)
    try:
        assert citus.conninfo() == citus_cluster.pooler_dsn(session=True)
        with citus.connection() as conn:
            # PgBouncer takes no `options`: the settings are SET on the pooled connection
            assert conn.execute("SHOW search_path").fetchone() == ("probe_pooled,public",)
            assert conn.execute("SHOW statement_timeout").fetchone() == ("4321ms",)
            conn.execute("CREATE TEMP TABLE kept (x int)")
            conn.execute("INSERT INTO kept VALUES (1)")  # the session outlives a statement
            assert conn.execute("SELECT count(*) FROM kept").fetchone() == (1,)
            assert conn.execute("SELECT pg_is_in_recovery()").fetchone() == (False,)
    finally:
        citus.close()


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
