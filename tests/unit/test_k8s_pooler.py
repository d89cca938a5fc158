"""The pooler on Kubernetes as rendered: PgBouncer's Deployment before the coordinator's leader
Service with the local backend's configuration, its load balancer and the policies that let
clients in and the pooler through to the coordinator; its image's entrypoint; its DSN."""

from __future__ import annotations

import configparser
import os
import subprocess

import pytest
from k8s_render import REPO, by_kind
from kube_fakes import make, no_dsn_env  # noqa: F401 -- autouse: no caller's DSN

from citus_pipeline.cluster.kubernetes import manifests as mf
from citus_pipeline.cluster.local.layout import Layout
from citus_pipeline.cluster.local.pooler import Pooler
from citus_pipeline.cluster.spec import spec_from_mapping

ENTRYPOINT = REPO / "k8s" / "pooler" / "entrypoint.sh"


def _pooler(objs, kind):
    return {
        n: o
        for n, o in by_kind(objs, kind).items()
        if o["metadata"]["labels"].get("app.kubernetes.io/component") == "pooler"
    }


def _ini(text: str) -> configparser.ConfigParser:
    cp = configparser.ConfigParser(delimiters=("=",), comment_prefixes=(";",))
    cp.read_string(text)
    return cp


def test_the_deployment_runs_pgbouncer_as_the_members_user_with_the_superusers_secret(spec, objs):
    dep = by_kind(objs, "Deployment")["citusdemo-pooler"]
    assert dep["spec"]["replicas"] == spec.kubernetes.pooler_replicas == 2
    pod = dep["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] and pod["securityContext"]["runAsUser"] == 999
    assert pod["automountServiceAccountToken"] is False
    # PgBouncer and its exporter (test_k8s_metrics.py), from the one image
    c, exporter = pod["containers"]
    assert c["name"] == "pgbouncer" and exporter["name"] == "pgbouncer-exporter"
    assert c["image"] == exporter["image"] == spec.kubernetes.pooler_image
    env = {e["name"]: e for e in c["env"]}
    assert env["POOLER_USER"]["value"] == spec.credentials.superuser
    ref = env["POOLER_PASSWORD"]["valueFrom"]["secretKeyRef"]
    assert ref == {"name": spec.credentials.kubernetes_secret, "key": "superuser-password"}
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    mounts = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}
    vols = {v["name"]: v for v in pod["volumes"]}
    assert vols["tls"]["secret"]["secretName"] == spec.kubernetes.tls_secret
    assert vols["config"]["configMap"]["name"] == "citusdemo-pooler-config"
    assert vols["run"]["emptyDir"]["medium"] == "Memory"  # the auth file never touches a disk
    assert mounts["tls"] == mf.TLS_MOUNT
    # a new pod is ready before an old one goes, and not two on one node where it can help
    assert dep["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    assert "podAntiAffinity" in pod["affinity"]
    assert _pooler(objs, "PodDisruptionBudget")["citusdemo-pooler"]["spec"]["maxUnavailable"] == 1


def test_the_config_points_at_the_leader_service_and_verifies_it(spec, objs):
    cm = by_kind(objs, "ConfigMap")["citusdemo-pooler-config"]
    text = cm["data"]["pgbouncer.ini"]
    ini = _ini(text)
    assert ini["databases"]["*"] == "host=citusdemo-0.citus.svc port=5432"
    # the project's own clients' session pool, beside the applications' transaction pool
    assert ini["databases"]["citus_session"] == (
        "host=citusdemo-0.citus.svc port=5432 dbname=citus pool_mode=session"
    )
    pgb = ini["pgbouncer"]
    assert pgb["auth_type"] == "scram-sha-256" and pgb["pool_mode"] == "transaction"
    assert pgb["server_tls_sslmode"] == "verify-full"
    assert pgb["server_tls_ca_file"] == f"{mf.TLS_MOUNT}/ca.crt"
    assert pgb["client_tls_sslmode"] == "require"
    assert pgb["listen_port"] == str(spec.pooler.port)
    # the leader Service's name and the pooler's own are on the members' certificate
    names = mf.tls_dns_names(spec)
    assert "citusdemo-0.citus.svc" in names and "citusdemo-pooler.citus.svc" in names
    # a changed configuration (PgBouncer's or its exporter's) rolls the pods
    dep = by_kind(objs, "Deployment")["citusdemo-pooler"]
    note = dep["spec"]["template"]["metadata"]["annotations"]["citus-pipeline/config-sha256"]
    assert set(cm["data"]) == {"pgbouncer.ini", "pgbouncer-exporter.yml"}
    assert note == mf.config_digest(cm["data"])
    changed = {**cm["data"], "pgbouncer-exporter.yml": cm["data"]["pgbouncer-exporter.yml"] + " "}
    assert mf.config_digest(changed) != note
    assert mf.config_digest({"a": "bc"}) != mf.config_digest({"ab": "c"})
    bigger = spec_from_mapping({"pooler": {"default_pool_size": 60}})
    other = by_kind(mf.cluster_manifests(bigger), "Deployment")["citusdemo-pooler"]
    assert (
        other["spec"]["template"]["metadata"]["annotations"]["citus-pipeline/config-sha256"] != note
    )


def test_both_backends_write_the_same_pgbouncer_settings_but_for_where_things_are(spec, tmp_path):
    mapping = {"pooler": {"default_pool_size": 25, "max_client_conn": 500}}
    local = Pooler(Layout(spec_from_mapping(mapping), tmp_path), None).pgbouncer_config()
    k8s = mf.pooler_config_text(spec_from_mapping(mapping))
    places = {
        "listen_addr",
        "auth_file",
        "server_tls_ca_file",
        "client_tls_cert_file",
        "client_tls_key_file",
        "client_tls_ca_file",
    }
    assert set(_ini(local)["databases"]) == set(_ini(k8s)["databases"]) == {"*", "citus_session"}
    a, b = _ini(local)["pgbouncer"], _ini(k8s)["pgbouncer"]
    assert {k: v for k, v in a.items() if k not in places} == {
        k: v for k, v in b.items() if k not in places
    }
    assert a["default_pool_size"] == "25" and a["max_client_conn"] == "500"


def test_load_balancer_and_policies(spec, objs):
    svc = by_kind(objs, "Service")["citusdemo-pooler"]["spec"]
    labels = mf.pooler_labels(spec)
    assert svc["type"] == "LoadBalancer" and svc["selector"] == labels
    assert svc["ports"][0]["port"] == 6432 and svc["externalTrafficPolicy"] == "Local"
    # not Patroni's labels: its selector would take the pooler's pods for members
    assert not all(labels.get(k) == v for k, v in mf.base_labels(spec).items())
    pols = by_kind(objs, "NetworkPolicy")
    clients = pols["citusdemo-pooler-clients"]["spec"]
    assert clients["podSelector"]["matchLabels"] == labels
    (rule,) = clients["ingress"]
    cidrs = [f["ipBlock"]["cidr"] for f in rule["from"] if "ipBlock" in f]
    assert cidrs == list(spec.kubernetes.client_cidrs)
    assert {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "dagster"}}} in (
        rule["from"]
    )
    assert rule["ports"] == [{"protocol": "TCP", "port": 6432}]
    through = pols["citusdemo-pooler-to-coordinator"]["spec"]
    assert through["podSelector"]["matchLabels"] == {
        **mf.base_labels(spec),
        "citus-type": "coordinator",
    }
    assert through["ingress"] == [
        {
            "from": [{"podSelector": {"matchLabels": labels}}],
            "ports": [{"protocol": "TCP", "port": 5432}],
        }
    ]


def test_no_pooler_renders_nothing_of_it_and_has_no_dsn():
    spec = spec_from_mapping({"pooler": {"enabled": False}})
    objs = mf.cluster_manifests(spec)
    assert not any("pooler" in o["metadata"]["name"] for o in objs)
    assert "pooler.yaml" not in mf.render_files(spec)
    c, *_ = make()
    assert c.pooler_dsn().startswith("host=10.128.0.50 port=6432 ")
    c.spec = spec
    assert c.pooler_dsn() is None


def test_the_status_carries_the_pooler_dsn():
    c, *_ = make()
    assert c.status().pooler_dsn == c.pooler_dsn()


def test_clients_come_in_through_the_session_pool_unless_a_dsn_is_given(monkeypatch):
    c, *_ = make()
    assert c.pooler_dsn(session=True) == c.pooler_dsn().replace(
        "dbname=citus ", "dbname=citus_session "
    )
    assert c.client_dsn() == c.pooler_dsn(session=True)
    monkeypatch.setenv("CITUS_PIPELINE_DSN", "host=elsewhere dbname=citus")
    assert c.client_dsn() == "host=elsewhere dbname=citus"
    monkeypatch.delenv("CITUS_PIPELINE_DSN")
    c.spec = spec_from_mapping({"pooler": {"enabled": False}})
    assert c.client_dsn() == c.coordinator_dsn()


def test_the_local_backend_names_the_same_session_pool(tmp_path):
    from citus_pipeline.cluster.local import credentials

    layout = Layout(spec_from_mapping({}), tmp_path)
    session, transaction = credentials.pooler_dsn(layout, True), credentials.pooler_dsn(layout)
    assert "dbname=citus_session " in session and "dbname=citus " in transaction
    assert session.replace("citus_session", "citus") == transaction


@pytest.mark.parametrize("password", ["plain-Pass_1", 'with"quote'])
def test_the_entrypoint_writes_the_auth_file_privately_and_runs_pgbouncer(tmp_path, password):
    auth = tmp_path / "run" / "userlist.txt"
    env = {
        "PATH": os.environ["PATH"],
        "POOLER_USER": "postgres",
        "POOLER_PASSWORD": password,
        "POOLER_AUTH_FILE": str(auth),
        "POOLER_CONFIG": "/etc/the.ini",
        "PGBOUNCER": "echo",
    }
    out = subprocess.run(
        ["bash", str(ENTRYPOINT)], env=env, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "/etc/the.ini"  # what PgBouncer would have been given
    doubled = password.replace('"', '""')
    assert auth.read_text() == f'"postgres" "{doubled}"\n'
    assert auth.stat().st_mode & 0o777 == 0o600
    env.pop("POOLER_PASSWORD")
    bad = subprocess.run(
        ["bash", str(ENTRYPOINT)], check=False, env=env, capture_output=True, text=True
    )
    assert bad.returncode != 0 and "POOLER_PASSWORD is not set" in bad.stderr
