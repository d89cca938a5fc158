"""The doors a local user can try on the shared cluster: etcd, Patroni's REST API, PostgreSQL,
the files that hold passwords, and the addresses anything listens on. Each must be shut to
whoever lacks the credentials, and nothing may listen beyond loopback."""

from __future__ import annotations

import ipaddress
import re
import subprocess
from base64 import b64encode

import httpx
import psycopg
import pytest

from citus_pipeline.cluster.local.faults import cluster_pids
from citus_pipeline.pki import client_context


def _b64(text: str) -> str:
    return b64encode(text.encode()).decode()


def test_etcd_refuses_anyone_without_credentials(citus_cluster):
    url = citus_cluster.etcd.url
    scope = f"/service/{citus_cluster.spec.name}/"
    r = httpx.post(f"{url}/v3/kv/range", json={"key": _b64(scope + "0/leader")}, timeout=5)
    assert r.status_code != 200 and "user name is empty" in r.text, r.text
    # deleting a group's leader key, the way to force a failover, is refused alike
    r = httpx.post(f"{url}/v3/kv/deleterange", json={"key": _b64(scope + "1/leader")}, timeout=5)
    assert r.status_code != 200, r.text
    assert citus_cluster.status(with_shards=False).leader(1) is not None


def test_patronis_etcd_user_reaches_its_namespace_only(citus_cluster):
    etcd = citus_cluster.etcd
    creds = citus_cluster.credentials()
    token = etcd.token(citus_cluster.spec.credentials.etcd_user, creds["etcd"])
    auth = {"Authorization": token}
    inside = httpx.post(
        f"{etcd.url}/v3/kv/range",
        json={"key": _b64(f"/service/{citus_cluster.spec.name}/0/leader")},
        headers=auth,
        timeout=5,
    )
    assert inside.status_code == 200 and inside.json().get("kvs"), inside.text
    outside = httpx.post(
        f"{etcd.url}/v3/kv/put",
        json={"key": _b64("/elsewhere/key"), "value": _b64("x")},
        headers=auth,
        timeout=5,
    )
    assert outside.status_code != 200 and "permission denied" in outside.text, outside.text
    with pytest.raises(Exception, match="authentication failed"):
        etcd.token(citus_cluster.spec.credentials.etcd_user, "not-the-password")


@pytest.mark.parametrize(
    "method,path,body",
    [
        ("POST", "/switchover", {"leader": "x", "candidate": "y"}),
        ("POST", "/restart", {}),
        ("PATCH", "/config", {"pause": True}),
        ("POST", "/reinitialize", {}),
    ],
)
def test_patronis_unsafe_rest_calls_need_the_password(citus_cluster, method, path, body):
    leader = citus_cluster.status(with_shards=False).leader(1)
    user = citus_cluster.spec.credentials.restapi_user
    tls = client_context(citus_cluster.layout.ca_file)
    for auth in (None, (user, "not-the-password")):
        r = httpx.request(
            method, f"{leader.api_url}{path}", json=body, auth=auth, timeout=5, verify=tls
        )
        assert r.status_code == 401, (path, auth, r.status_code, r.text)
    # reading is open, as Patroni's health checks and load balancers need
    assert httpx.get(f"{leader.api_url}/patroni", timeout=5, verify=tls).status_code == 200


def test_postgresql_refuses_a_wrong_password_on_every_member(citus_cluster):
    for m in citus_cluster.members():
        creds = citus_cluster.spec.credentials
        for user in (creds.superuser, creds.replication_user):
            with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
                psycopg.connect(
                    host=m.address,
                    port=m.pg_port,
                    dbname="postgres",
                    user=user,
                    password="not-the-password",
                    connect_timeout=5,
                )


def test_files_with_passwords_are_readable_by_their_owner_only(citus_cluster):
    layout = citus_cluster.layout
    files = [layout.secrets_file, layout.client_passfile]
    for m in citus_cluster.members():
        # Patroni writes a member's pgpass for the clones and rewinds it runs, as they run
        files += [m.config, *([m.pgpass] if m.pgpass.exists() else [])]
    for f in files:
        assert f.exists(), f
        assert f.stat().st_mode & 0o077 == 0, f"{f} is mode {oct(f.stat().st_mode & 0o777)}"


def test_nothing_listens_beyond_loopback(citus_cluster):
    pids = set(cluster_pids(citus_cluster))
    out = subprocess.run(["ss", "-ltnpH"], capture_output=True, text=True, check=True).stdout
    mine = []
    for line in out.splitlines():
        owners = {int(p) for p in re.findall(r"pid=(\d+)", line)}
        if owners & pids:
            local = line.split()[3]
            mine.append(local.rsplit(":", 1)[0].strip("[]"))
    # etcd, every Patroni REST API and every postmaster (unix sockets aside)
    assert len(mine) >= 1 + 2 * len(citus_cluster.members()), mine
    wide = [
        a for a in mine if a in ("*", "0.0.0.0", "::") or not ipaddress.ip_address(a).is_loopback
    ]
    assert wide == [], wide
