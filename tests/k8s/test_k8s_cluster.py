"""The HA Citus cluster on a real control plane, from the project's own rendered manifests."""

from __future__ import annotations

import datetime as dt
import os
import re
import subprocess
import sys

import psycopg
import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from citus_pipeline.cluster.kubernetes import manifests as mf
from citus_pipeline.cluster.kubernetes.pod_exec import run_in_pod
from citus_pipeline.cluster.kubernetes.restore_points import ConfigMapRestorePoints
from citus_pipeline.cluster.restore_points import GroupPosition, RestorePoint
from citus_pipeline.errors import KubernetesClusterError
from citus_pipeline.waiting import until

from .drills import (
    backend_as,
    ensure_namespace,
    group_pods,
    kubectl,
    probe_ports,
    wait_ha,
    wait_members_ready,
    write_spec,
)

pytestmark = [pytest.mark.k8s, pytest.mark.citus]


def test_nodes_are_labelled_like_the_node_group(kube):
    nodes = client.CoreV1Api(kube.api()).list_node().items
    zones = sorted(n.metadata.labels["topology.kubernetes.io/zone"] for n in nodes)
    assert zones == ["ru-central1-a", "ru-central1-b", "ru-central1-d"]
    for n in nodes:
        ready = {c.type: c.status for c in n.status.conditions}["Ready"]
        assert ready == "True", n.metadata.name


def test_every_group_has_a_streaming_synchronous_standby(kube, cluster, spec):
    topo = wait_ha(kube, cluster)
    sync = {g: [m for m in topo.members_of(g) if m.role == "sync_standby"] for g in topo.groups}
    assert sorted(sync) == list(range(spec.workers.groups + 1))
    assert all(len(v) == 1 and v[0].state == "streaming" for v in sync.values()), sync


def test_every_group_elects_a_leader_and_registers(cluster, spec):
    topo = cluster.status()
    groups = range(spec.workers.groups + 1)
    for g in groups:
        assert topo.leader(g) is not None, f"group {g} has no leader"
    registered = {n.groupid for n in topo.dist_nodes if n.active}
    assert registered >= set(groups)
    for n in topo.dist_nodes:
        # the stable headless-service name, never a pod IP that a rescheduled pod loses
        assert n.host.endswith(f".{mf.headless_name(spec, n.groupid)}.citus.svc"), n.host


def _endpoint_ips(kube, spec, name: str) -> set[str]:
    ep = client.CoreV1Api(kube.api()).read_namespaced_endpoints(name, spec.kubernetes.namespace)
    return {a.ip for s in ep.subsets or [] for a in s.addresses or []}


def _wait_ips(kube, spec, name: str, want: set[str], timeout: float = 60) -> set[str]:
    return until(
        lambda: _endpoint_ips(kube, spec, name),
        timeout,
        1,
        f"the endpoints of {name} to be {sorted(want)}",
        done=lambda got: got == want,
    )


def test_services_select_exactly_the_current_leaders(kube, cluster, spec):
    topo = cluster.status(with_shards=False)
    leader_ip = {}
    for g in range(spec.workers.groups + 1):
        leader = topo.leader(g)
        pod = next(p for p in group_pods(kube, spec, g) if p.metadata.name == leader.name)
        assert pod.metadata.labels.get("role") == "primary"
        leader_ip[g] = pod.status.pod_ip
        # the leader Endpoints Patroni maintains, and the Service in front of them
        assert _endpoint_ips(kube, spec, mf.group_name(spec, g)) == {pod.status.pod_ip}
    coordinator_lb = mf.coordinator_lb_name(spec)
    assert _wait_ips(kube, spec, coordinator_lb, {leader_ip[0]}) == {leader_ip[0]}
    workers = {leader_ip[g] for g in spec.worker_groups}
    assert _wait_ips(kube, spec, mf.workers_lb_name(spec), workers) == workers


def test_the_read_endpoint_reads_from_the_standbys_and_refuses_writes(kube, cluster, spec):
    """`read_dsn`: the coordinator's standbys behind their load balancer, whose sessions read
    every worker group from its standby (pg_dist_node's secondaries) and write nothing."""
    with psycopg.connect(cluster.coordinator_dsn(), autocommit=True, connect_timeout=10) as c:
        c.execute("DROP TABLE IF EXISTS read_probe")
        c.execute("CREATE TABLE read_probe (id int PRIMARY KEY)")
        c.execute("SELECT create_distributed_table('read_probe', 'id')")
        c.execute("INSERT INTO read_probe SELECT generate_series(1, 300)")
        secondaries = {
            r[0]
            for r in c.execute(
                "SELECT nodename FROM pg_dist_node WHERE noderole = 'secondary' AND groupid > 0"
            ).fetchall()
        }
    assert secondaries, "Patroni registered no worker standby"
    dsn = until(
        lambda: cluster.status(with_shards=False).read_dsn, 120, 2, "the read endpoint's address"
    )
    read = mf.read_lb_name(spec)
    standbys = {
        p.status.pod_ip
        for p in group_pods(kube, spec, 0)
        if p.metadata.labels.get("role") == mf.FOLLOWER_LABEL_VALUE
    }
    assert _wait_ips(kube, spec, read, standbys) == standbys
    with psycopg.connect(dsn, autocommit=True, connect_timeout=10) as conn:
        assert conn.execute("SELECT pg_is_in_recovery()").fetchone() == (True,)
        until(
            lambda: conn.execute("SELECT count(*) FROM read_probe").fetchone(),
            60,
            0.5,
            "the standbys to replay the rows",
            done=lambda got: got == (300,),
            ignore=(psycopg.errors.UndefinedTable,),
        )
        plan = "\n".join(r[0] for r in conn.execute("EXPLAIN SELECT count(*) FROM read_probe"))
        assert any(f"host={h} " in plan for h in secondaries), plan
        with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
            conn.execute("INSERT INTO read_probe VALUES (1000)")


def test_the_pooler_reaches_the_coordinators_leader_with_tls_and_scram(kube, cluster, spec):
    """`pooler_dsn`: PgBouncer's pods (the image built from k8s/pooler) behind their load
    balancer, serving TLS with the members' certificate, SCRAM against the superuser's
    password, their server the coordinator's leader Service (verify-full)."""
    dsn = until(
        lambda: cluster.status(with_shards=False).pooler_dsn, 120, 2, "the pooler's address"
    )
    leader = client.CoreV1Api(kube.api()).read_namespaced_pod(
        cluster.status(with_shards=False).leader(0).name, spec.kubernetes.namespace
    )

    def through() -> tuple:
        with psycopg.connect(dsn, connect_timeout=5, prepare_threshold=None) as conn:
            return conn.execute(
                "SELECT host(inet_server_addr()), pg_is_in_recovery(), "
                "(SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid())"
            ).fetchone()

    # the server side is the leader over TLS (PgBouncer verified its certificate's name)
    assert until(through, 120, 2, "a query through the pooler", ignore=(psycopg.Error,)) == (
        leader.status.pod_ip,
        False,
        True,
    )
    with pytest.raises(psycopg.OperationalError, match="SSL required"):
        psycopg.connect(f"{dsn} sslmode=disable", connect_timeout=5)
    with pytest.raises(psycopg.OperationalError, match="authentication failed"):
        psycopg.connect(dsn, password="not-the-password", connect_timeout=5)
    with psycopg.connect(dsn, connect_timeout=5) as conn:
        assert conn.pgconn.ssl_in_use
    dep = client.AppsV1Api(kube.api()).read_namespaced_deployment(
        mf.pooler_name(spec), spec.kubernetes.namespace
    )
    assert dep.status.ready_replicas == spec.kubernetes.pooler_replicas


def test_the_poolers_exporter_counts_its_queries_for_prometheus_alone(kube, cluster, spec):
    """Each pooler pod's `pgbouncer-exporter` sidecar (the exporter in the pooler's image)
    reads its PgBouncer's admin console over loopback with TLS; Prometheus's namespace may
    scrape it, another namespace may not."""
    core, ns = client.CoreV1Api(kube.api()), spec.kubernetes.namespace
    dsn = until(
        lambda: cluster.status(with_shards=False).pooler_dsn, 120, 2, "the pooler's address"
    )
    for _ in range(20):  # through the load balancer: either pod may take them
        with psycopg.connect(dsn, connect_timeout=5, prepare_threshold=None) as conn:
            conn.execute("SELECT 1")
    selector = ",".join(f"{k}={v}" for k, v in mf.pooler_labels(spec).items())
    pods = core.list_namespaced_pod(ns, label_selector=selector).items
    assert len(pods) == spec.kubernetes.pooler_replicas
    url = f"http://127.0.0.1:{mf.POOLER_EXPORTER_PORT}/metrics"
    fetch = f"import urllib.request as u; print(u.urlopen({url!r}).read().decode())"

    def scrape(pod: str) -> str:
        ran = run_in_pod(core, ns, pod, "pgbouncer-exporter", ["python3", "-c", fetch], 30)
        return ran.stdout

    pattern = re.compile(rf'pgbouncer_stats_queries_total{{database="{spec.database}"}} (\S+)')

    def counted() -> float:
        """The queries both exporters count (PgBouncer refreshes its totals every
        stats_period): none from an exporter that does not reach its PgBouncer."""
        total = 0.0
        for pod in pods:
            text = scrape(pod.metadata.name)
            found = pattern.search(text)
            if "pgbouncer_up 1.0" in text and found:
                total += float(found.group(1))
        return total

    until(counted, 150, 5, "the pooler's exporters to count 20 queries", done=lambda q: q >= 20)
    address = pods[0].status.pod_ip
    ensure_namespace(kube, spec.kubernetes.prometheus_namespace)
    ensure_namespace(kube, "scrape-outsider")
    port = mf.POOLER_EXPORTER_PORT
    assert probe_ports(kube, spec.kubernetes.prometheus_namespace, address, (port,), (port,)) == {
        port: True
    }
    assert probe_ports(kube, "scrape-outsider", address, (port,)) == {port: False}
    core.delete_namespace("scrape-outsider")


def test_members_of_a_group_never_share_a_node_and_the_pdb_holds(kube, cluster, spec):
    for g in range(spec.workers.groups + 1):
        nodes = [p.spec.node_name for p in group_pods(kube, spec, g)]
        assert len(nodes) == len(set(nodes)), f"group {g}: {nodes}"
    # one voluntary disruption of a worker group is allowed, a second one is refused
    g = 1
    leader = cluster.status(with_shards=False).leader(g).name
    replica = next(p.metadata.name for p in group_pods(kube, spec, g) if p.metadata.name != leader)
    core = client.CoreV1Api(kube.api())
    ns = spec.kubernetes.namespace

    def evict(name: str) -> None:
        core.create_namespaced_pod_eviction(name, ns, {"metadata": {"name": name, "namespace": ns}})

    _wait_pdb(kube, spec, g, allowed=1)
    evict(replica)
    with pytest.raises(ApiException) as refused:
        evict(leader)
    assert refused.value.status == 429, refused.value
    assert "disruption budget" in refused.value.body
    # and as an operator meets it: `kubectl drain` of the leader's node cannot evict it
    node = core.read_namespaced_pod(leader, ns).spec.node_name
    selector = f"{mf.GROUP_LABEL}={g},cluster-name={spec.name}"
    exe = str(kubectl())
    env = {**os.environ, "KUBECONFIG": str(kube.kubeconfig)}
    try:
        drain = subprocess.run(
            [
                exe,
                "drain",
                node,
                f"--pod-selector={selector}",
                "--ignore-daemonsets",
                "--delete-emptydir-data",
                "--timeout=20s",
            ],
            capture_output=True,
            text=True,
            env=env,
            check=False,
        )
    finally:
        subprocess.run([exe, "uncordon", node], env=env, check=True, capture_output=True)
    # drain retries the leader's eviction until the budget allows it again (the evicted
    # member back and Ready): refused while one member of the group was down
    assert "violate the pod's disruption budget" in drain.stderr, drain.stderr
    # the StatefulSet brings the evicted member back and it streams again
    wait_members_ready(kube, spec, g, timeout=240)


def _wait_pdb(kube, spec, group: int, allowed: int, timeout: float = 120) -> None:
    policy = client.PolicyV1Api(kube.api())

    def allowed_now() -> int:
        pdb = policy.read_namespaced_pod_disruption_budget(
            mf.group_name(spec, group), spec.kubernetes.namespace
        )
        return pdb.status.disruptions_allowed or 0

    until(
        allowed_now,
        timeout,
        1,
        f"the PDB of group {group} to allow {allowed} disruption(s)",
        done=lambda n: n >= allowed,
    )


def test_status_command_prints_the_topology(kube, cluster, spec, tmp_path):
    wait_ha(kube, cluster)  # roles settled: the CLI's read and the test's must agree
    env = {
        **os.environ,
        "KUBECONFIG": str(kube.kubeconfig),
        "CITUS_PIPELINE_BACKEND": "kubernetes",
        "COLUMNS": "200",
    }
    spec_file = write_spec(tmp_path / "cluster.yaml")
    command = [sys.executable, "-m", "citus_pipeline.cli", "cluster", "status"]
    for _ in range(3):
        out = subprocess.run(
            [*command, "--spec", str(spec_file)],
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
            check=True,
        ).stdout
        # status keeps to its 4.5 s budget and names what did not answer in it: on a loaded
        # CI machine a fresh process's first API call can take longer (seen once), so ask
        # again; what is asserted is the topology printed once it answers
        if "not answered" not in out:
            break
    assert f"Citus cluster {spec.name} (kubernetes)" in out
    topo = cluster.status(with_shards=False)
    assert (
        len(topo.members) == spec.coordinator.members + spec.workers.groups * spec.workers.members
    )
    for m in topo.members:
        line = next((x for x in out.splitlines() if f" {m.name} " in x), "")
        assert m.role in line, (m.name, out)
    # pg_dist_node through the coordinator's load balancer, under the headless names
    assert f"citusdemo-1-0.{mf.headless_name(spec, 1)}.citus.svc" in out or (
        f"citusdemo-1-1.{mf.headless_name(spec, 1)}.citus.svc" in out
    )


def _token_api(kube, namespace: str, account: str) -> client.ApiClient:
    """The API as a ServiceAccount sees it: a bound token from the TokenRequest API."""
    admin = client.CoreV1Api(kube.api())
    token = admin.create_namespaced_service_account_token(
        account, namespace, {"spec": {"expirationSeconds": 600}}
    ).status.token
    cfg = client.Configuration()
    cfg.host = kube.api_url
    cfg.ssl_ca_cert = str(kube.ca_file)
    cfg.api_key = {"authorization": f"Bearer {token}"}
    return client.ApiClient(cfg)


def _token_client(kube, spec) -> client.CoreV1Api:
    return client.CoreV1Api(
        _token_api(kube, spec.kubernetes.namespace, mf.service_account_name(spec))
    )


def test_patroni_runs_with_exactly_the_rendered_role(kube, cluster, spec):
    ns = spec.kubernetes.namespace
    as_patroni = _token_client(kube, spec)
    # what Patroni's Kubernetes DCS needs is granted ...
    as_patroni.list_namespaced_pod(ns, label_selector=f"cluster-name={spec.name}")
    as_patroni.list_namespaced_endpoints(ns)
    # ... and nothing else: no Secrets, no deleting the leader Endpoints, no other namespace
    for call in (
        lambda: as_patroni.list_namespaced_secret(ns),
        lambda: as_patroni.delete_namespaced_endpoints(mf.group_name(spec, 1), ns),
        lambda: as_patroni.list_namespaced_pod("kube-system"),
    ):
        with pytest.raises(ApiException) as denied:
            call()
        assert denied.value.status == 403
    # and no member was ever refused by the API while running the cluster
    for g in range(spec.workers.groups + 1):
        for p in group_pods(kube, spec, g):
            log = kube.container_log(ns, p.metadata.name, "patroni")
            assert "Forbidden" not in log and " 403" not in log, p.metadata.name


def test_dagster_runs_read_the_cluster_with_the_rendered_role(kube, cluster, spec):
    k = spec.kubernetes
    admin = client.CoreV1Api(kube.api())
    # what the Dagster Helm release creates: its namespace and its runs' ServiceAccount
    admin.create_namespace({"metadata": {"name": k.dagster_namespace}})
    admin.create_namespaced_service_account(
        k.dagster_namespace, {"metadata": {"name": k.dagster_service_account}}
    )
    api = _token_api(kube, k.dagster_namespace, k.dagster_service_account)
    as_dagster = backend_as(spec, api)
    topo = as_dagster.status()
    assert all(topo.leader(g) is not None for g in range(spec.workers.groups + 1))
    assert topo.dist_nodes and topo.shards is not None
    # the restore points' record (taking one needs archiving, off in this spec): created,
    # read and replaced as the run's ServiceAccount
    store = ConfigMapRestorePoints(client.CoreV1Api(api), k.namespace, mf.restore_points_name(spec))
    for name in ("rbac-1", "rbac-2"):
        store.add(
            RestorePoint(
                name=name,
                created_at=dt.datetime.now(dt.UTC),
                coordinator_lsn="0/0",
                groups={0: GroupPosition(lsn="0/0", wal_file="0" * 24, system_id="0")},
            )
        )
    assert [p.name for p in store.load()] == ["rbac-1", "rbac-2"]
    core = client.CoreV1Api(api)
    for call in (
        lambda: core.list_namespaced_secret(k.namespace),
        lambda: core.patch_namespaced_pod(
            topo.leader(1).name, k.namespace, {"metadata": {"labels": {"x": "y"}}}
        ),
        lambda: core.delete_namespaced_endpoints(mf.group_name(spec, 1), k.namespace),
        lambda: core.read_namespaced_config_map(mf.bootstrap_configmap_name(spec), k.namespace),
    ):
        with pytest.raises(ApiException) as denied:
            call()
        assert denied.value.status == 403
    # a ServiceAccount the Role is not bound to (the daemon's, which only launches Jobs): the
    # backend says which binding reads the members instead of a bare 403
    admin.create_namespaced_service_account(k.dagster_namespace, {"metadata": {"name": "dagster"}})
    unbound = backend_as(spec, _token_api(kube, k.dagster_namespace, "dagster"))
    with pytest.raises(KubernetesClusterError) as refused:
        unbound.status()
    message = str(refused.value)
    assert 'cannot list resource "pods"' in message
    assert f"{k.dagster_namespace}/{k.dagster_service_account}" in message
    assert mf.dagster_role_name(spec) in message


def test_network_policies_admit_only_what_they_allow(kube, cluster, spec):
    """The rendered NetworkPolicies, enforced by the nodes (kube-router's firewall): a pod of
    another namespace is refused on 5432 and 8008 of the coordinator's leader, a pod of the
    Dagster namespace reaches its 5432 and nothing else, and this machine (a client CIDR)
    reaches it through the load balancer."""
    topo = cluster.status(with_shards=False)
    pod = client.CoreV1Api(kube.api()).read_namespaced_pod(
        topo.leader(0).name, spec.kubernetes.namespace
    )
    address = pod.status.pod_ip
    ensure_namespace(kube, "netpol-outsider")
    ensure_namespace(kube, spec.kubernetes.dagster_namespace)
    assert probe_ports(kube, "netpol-outsider", address, (5432, 8008)) == {
        5432: False,
        8008: False,
    }
    dagster_ns = spec.kubernetes.dagster_namespace
    assert probe_ports(kube, dagster_ns, address, (5432, 8008), settle=(5432,)) == {
        5432: True,
        8008: False,
    }
    # a pod of the cluster's own namespace that is not a member is no member either
    assert probe_ports(kube, spec.kubernetes.namespace, address, (5432,)) == {5432: False}
    client.CoreV1Api(kube.api()).delete_namespace("netpol-outsider")
    with psycopg.connect(cluster.coordinator_dsn(), connect_timeout=10) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)


def test_containers_run_with_the_security_context_the_kubelet_applies(kube, cluster, spec):
    """What the rendered securityContext asks, as the real kubelet, containerd and runc give
    it in a member's Patroni container: the image's non-root user, the volume's group from
    fsGroup, a read-only root filesystem, no capabilities, the runtime's seccomp filter."""
    from kubernetes.stream import stream

    name = cluster.status(with_shards=False).leader(1).name
    core = client.CoreV1Api(kube.api())
    script = (
        "id -u; id -G; stat -c %g /home/postgres/pgdata; "
        "touch /usr/local/bin/probe 2>&1 || true; "
        "grep -E '^(CapEff|Seccomp):' /proc/self/status"
    )
    out = stream(
        core.connect_get_namespaced_pod_exec,
        name,
        spec.kubernetes.namespace,
        container="patroni",
        command=["bash", "-c", script],
        stderr=True,
        stdout=True,
        stdin=False,
        tty=False,
    )
    lines = out.splitlines()
    assert lines[0] == str(mf.IMAGE_UID)
    assert str(mf.IMAGE_UID) in lines[1].split()
    assert lines[2] == str(mf.IMAGE_UID)  # fsGroup on the data volume
    assert "Read-only file system" in out
    caps = dict(line.split(":\t") for line in lines if line.startswith(("CapEff", "Seccomp")))
    assert int(caps["CapEff"], 16) == 0
    assert caps["Seccomp"].strip() == "2"  # a filter: containerd's RuntimeDefault profile
