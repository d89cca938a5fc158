"""TLS in the local cluster, as on Kubernetes: every TCP connection to a member is encrypted
and verified against the cluster's own CA (clients, Citus between nodes, streaming
replication, Patroni's REST API); one without TLS is refused."""

from __future__ import annotations

import stat

import httpx
import psycopg
import pytest

from citus_pipeline.cluster.local import LocalCluster
from citus_pipeline.cluster.spec import TLSSpec
from citus_pipeline.waiting import until


def _leader(cluster, group: int):
    return cluster.member_by_name(cluster.status(with_shards=False).leader(group).name)


def test_a_connection_without_tls_is_refused(citus_cluster):
    m = _leader(citus_cluster, 0)
    plain = (
        f"host={m.address} port={m.pg_port} user=postgres dbname={citus_cluster.spec.database} "
        f"passfile={citus_cluster.layout.client_passfile} sslmode=disable connect_timeout=5"
    )
    with pytest.raises(psycopg.OperationalError, match="no encryption"):
        psycopg.connect(plain)


def test_clients_citus_and_replication_all_run_on_verified_tls(citus_cluster):
    dsn = citus_cluster.coordinator_dsn()
    assert "sslmode=verify-full" in dsn
    with psycopg.connect(dsn, autocommit=True) as conn:
        ssl = conn.execute("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()").fetchone()
        assert ssl == (True,)
        # a query on every worker: the coordinator's connections to them are Citus's own
        conn.execute("SELECT count(*) FROM run_command_on_workers('SELECT 1')")
    for g in (1, 2):
        leader = _leader(citus_cluster, g)
        with psycopg.connect(citus_cluster.member_dsn(leader), autocommit=True) as conn:
            rows = conn.execute(
                "SELECT a.application_name, s.ssl FROM pg_stat_activity a "
                "JOIN pg_stat_ssl s USING (pid) WHERE a.client_addr IS NOT NULL "
                "AND a.pid <> pg_backend_pid()"
            ).fetchall()
            assert rows, f"group {g}: no TCP client at all"
            assert all(ssl for _, ssl in rows), (g, rows)
            replication = conn.execute(
                "SELECT r.application_name, s.ssl FROM pg_stat_replication r "
                "JOIN pg_stat_ssl s USING (pid)"
            ).fetchall()
            assert replication and all(ssl for _, ssl in replication), (g, replication)


def test_the_rest_api_is_https_verified_by_the_clusters_ca(citus_cluster):
    m = _leader(citus_cluster, 1)
    assert m.api_url.startswith("https://")
    assert httpx.get(f"{m.api_url}/patroni", verify=m.api_verify, timeout=5).status_code == 200
    with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
        httpx.get(f"{m.api_url}/patroni", timeout=5)  # the system's CAs do not know it
    plain = m.api_url.replace("https://", "http://")
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"{plain}/patroni", timeout=5)


def test_keys_are_private_and_the_ca_key_stays_in_the_state_dir(citus_cluster):
    layout = citus_cluster.layout
    assert stat.S_IMODE((layout.tls_dir / "ca.key").stat().st_mode) == 0o600
    for m in citus_cluster.members():
        assert stat.S_IMODE(m.tls_key.stat().st_mode) == 0o600
        assert not (m.dir / "tls" / "ca.key").exists()


def test_up_turns_tls_on_for_a_cluster_that_runs_without_it(fresh_cluster):
    """A cluster bootstrapped by a version without TLS: the next `up` issues the
    certificates and reloads the running members, and nothing is restarted."""
    plain = fresh_cluster(tls={"enabled": False}, pooler={"enabled": False})
    with psycopg.connect(plain.coordinator_dsn(), autocommit=True) as conn:
        conn.execute("CREATE TABLE tls_later (id int PRIMARY KEY)")
        conn.execute("SELECT create_distributed_table('tls_later', 'id')")
        conn.execute("INSERT INTO tls_later SELECT generate_series(1, 100)")
    pids = {m.name: plain.postmaster_pid(m) for m in plain.members()}
    spec = plain.spec.model_copy(update={"tls": TLSSpec()})
    secured = LocalCluster(spec, plain.state_dir)
    secured.up()
    assert {m.name: secured.postmaster_pid(m) for m in secured.members()} == pids
    with psycopg.connect(secured.coordinator_dsn(), autocommit=True) as conn:
        conninfo = until(
            lambda: conn.execute("SHOW citus.node_conninfo").fetchone()[0],
            30,
            0.2,
            "the members to reload",
            done=lambda v: v.startswith("sslmode=verify-full"),
        )
        assert conninfo.startswith("sslmode=verify-full")
        assert conn.execute("SELECT count(*) FROM tls_later").fetchone() == (100,)
    m = secured.member_by_name(secured.status(with_shards=False).leader(1).name)
    plain_dsn = f"host={m.address} port={m.pg_port} dbname=citus user=postgres " + (
        f"passfile={secured.layout.client_passfile} sslmode=disable connect_timeout=5"
    )
    until(lambda: _refused(plain_dsn), 30, 0.2, "plain TCP to be refused after the reload")


def _refused(dsn: str) -> bool:
    try:
        psycopg.connect(dsn).close()
    except psycopg.OperationalError as e:
        return "no encryption" in str(e)
    return False
