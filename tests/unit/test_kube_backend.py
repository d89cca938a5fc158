"""KubernetesCluster decisions, against fake API classes built from the client's model objects.

The fakes record every call in one shared log (API calls and SQL alike), so the tests can assert
what was created or deleted and in which order relative to the shard drain.
"""

from __future__ import annotations

import json
import re

import psycopg
import pytest
from kubernetes.client import (
    V1Container,
    V1EndpointsList,
    V1LabelSelector,
    V1LoadBalancerIngress,
    V1LoadBalancerStatus,
    V1ObjectMeta,
    V1PersistentVolumeClaimSpec,
    V1Pod,
    V1PodList,
    V1PodSpec,
    V1PodStatus,
    V1PodTemplateSpec,
    V1Service,
    V1ServiceStatus,
    V1StatefulSet,
    V1StatefulSetList,
    V1StatefulSetSpec,
)
from kubernetes.client import V1Endpoints as _Endpoints
from kubernetes.client import V1PersistentVolumeClaim as _PVC

from citus_pipeline.cluster import citus_meta
from citus_pipeline.cluster import manifests as mf
from citus_pipeline.cluster.citus_meta import DrainError
from citus_pipeline.cluster.kubernetes import KubernetesCluster, KubernetesClusterError
from citus_pipeline.cluster.spec import spec_from_mapping

SPEC = spec_from_mapping({})
NS = SPEC.kubernetes.namespace


class NotFound(Exception):
    status = 404


def _matches(labels: dict | None, selector: str | None) -> bool:
    if not selector:
        return True
    want = dict(kv.split("=", 1) for kv in selector.split(","))
    return all((labels or {}).get(k) == v for k, v in want.items())


def pod(group: int, ordinal: int, status: dict | None, role_label: str | None = None) -> V1Pod:
    name = f"citusdemo-{group}-{ordinal}"
    labels = mf.group_labels(SPEC, group)
    if role_label:
        labels["role"] = role_label
    ann = {"status": json.dumps(status)} if status is not None else None
    return V1Pod(
        metadata=V1ObjectMeta(name=name, namespace=NS, labels=labels, annotations=ann),
        status=V1PodStatus(phase="Running"),
    )


def member_status(group: int, ordinal: int, role: str, lsn: int, **extra) -> dict:
    host = mf.member_dns_name(SPEC, group, ordinal)
    return {
        "conn_url": f"postgres://{host}:5432/postgres",
        "api_url": f"http://{host}:8008/patroni",
        "state": "running",
        "role": role,
        "version": "4.1.5",
        "xlog_location": lsn,
        "timeline": 2,
        **extra,
    }


def endpoints(name: str, group: int, annotations: dict) -> _Endpoints:
    labels = {**mf.base_labels(SPEC), "citus-group": str(group)}
    return _Endpoints(
        metadata=V1ObjectMeta(name=name, namespace=NS, labels=labels, annotations=annotations)
    )


def statefulset(
    group: int, image: str = SPEC.kubernetes.image, storage: str | None = "yc-network-ssd"
):
    return V1StatefulSet(
        metadata=V1ObjectMeta(
            name=f"citusdemo-{group}", namespace=NS, labels=mf.group_labels(SPEC, group)
        ),
        spec=V1StatefulSetSpec(
            selector=V1LabelSelector(
                match_labels={**mf.base_labels(SPEC), "citus-group": str(group)}
            ),
            service_name=f"citusdemo-{group}-headless",
            template=V1PodTemplateSpec(
                spec=V1PodSpec(containers=[V1Container(name="patroni", image=image)])
            ),
            volume_claim_templates=[
                _PVC(
                    metadata=V1ObjectMeta(name="pgdata"),
                    spec=V1PersistentVolumeClaimSpec(storage_class_name=storage),
                )
            ],
        ),
    )


class FakeCore:
    def __init__(self, log, pods, eps, lb_ip="10.128.0.50"):
        self.log, self.pods, self.eps, self.lb_ip = log, list(pods), list(eps), lb_ip

    def list_namespaced_pod(self, namespace, label_selector=None):
        return V1PodList(
            items=[p for p in self.pods if _matches(p.metadata.labels, label_selector)]
        )

    def read_namespaced_pod(self, name, namespace):
        for p in self.pods:
            if p.metadata.name == name:
                return p
        raise NotFound()

    def delete_namespaced_pod(self, name, namespace):
        """What the StatefulSet and Patroni then do: the pod comes back under a new uid,
        its PostgreSQL started with the DCS's parameters (no restart pending)."""
        self.log.append(("delete", "Pod", name))
        for i, p in enumerate(self.pods):
            if p.metadata.name == name:
                status = json.loads(p.metadata.annotations["status"])
                status.pop("pending_restart", None)
                group = name.split("-")[1]
                leader = next(
                    e.metadata.annotations["leader"]
                    for e in self.eps
                    if e.metadata.name == f"citusdemo-{group}"
                )
                if name != leader:  # a former leader comes back as a standby
                    status.update(role="replica", replication_state="streaming")
                again = pod(*map(int, name.split("-")[1:]), status)
                again.metadata.uid = f"{name}-{len(self.log)}"
                self.pods[i] = again

    def list_namespaced_endpoints(self, namespace, label_selector=None):
        return V1EndpointsList(
            items=[e for e in self.eps if _matches(e.metadata.labels, label_selector)]
        )

    def read_namespaced_service(self, name, namespace):
        if name != "citusdemo-coordinator":
            raise NotFound()
        ingress = [V1LoadBalancerIngress(ip=self.lb_ip)] if self.lb_ip else []
        return V1Service(
            metadata=V1ObjectMeta(name=name, namespace=namespace),
            status=V1ServiceStatus(load_balancer=V1LoadBalancerStatus(ingress=ingress)),
        )

    def create_namespaced_service(self, namespace, body):
        self.log.append(("create", "Service", body["metadata"]["name"], body))

    def create_namespaced_endpoints(self, namespace, body):
        self.log.append(("create", "Endpoints", body["metadata"]["name"], body))

    def read_namespaced_endpoints(self, name, namespace):
        for e in self.eps:
            if e.metadata.name == name:
                return e
        return _Endpoints(metadata=V1ObjectMeta(name=name, annotations={}))

    def patch_namespaced_endpoints(self, name, namespace, body):
        self.log.append(("patch", "Endpoints", name, body))
        ann = body["metadata"]["annotations"]
        group = int(name.split("-")[1])
        if name.endswith("-config") and json.loads(ann["config"]).get("pause"):
            for p in self.pods:  # what Patroni would then do: every member reports the pause
                if p.metadata.labels.get("citus-group") == str(group):
                    status = json.loads((p.metadata.annotations or {}).get("status") or "{}")
                    p.metadata.annotations = {
                        **(p.metadata.annotations or {}),
                        "status": json.dumps({**status, "pause": True}),
                    }
        if name.endswith("-failover") and ann.get("member"):  # what Patroni would then do
            for e in self.eps:
                if e.metadata.name == f"citusdemo-{group}":
                    old = e.metadata.annotations["leader"]
                    e.metadata.annotations = {**e.metadata.annotations, "leader": ann["member"]}
            for e in self.eps:  # the former leader, a standby now, is the synchronous one
                if e.metadata.name == f"citusdemo-{group}-sync":
                    e.metadata.annotations = {"leader": ann["member"], "sync_standby": old}

    def delete_namespaced_service(self, name, namespace):
        self.log.append(("delete", "Service", name))

    def delete_namespaced_endpoints(self, name, namespace):
        if name.endswith("-failover"):
            raise NotFound()  # never created: a 404 is not an error
        self.log.append(("delete", "Endpoints", name))

    def delete_collection_namespaced_persistent_volume_claim(self, namespace, label_selector=None):
        self.log.append(("delete", "PersistentVolumeClaim", label_selector))
        # the StatefulSet is gone by now: its pods too
        self.pods = [p for p in self.pods if not _matches(p.metadata.labels, label_selector)]


class FakeApps:
    def __init__(self, log, sets, core: FakeCore):
        self.log, self.sets, self.core = log, list(sets), core

    def list_namespaced_stateful_set(self, namespace, label_selector=None):
        return V1StatefulSetList(
            items=[s for s in self.sets if _matches(s.metadata.labels, label_selector)]
        )

    def create_namespaced_stateful_set(self, namespace, body):
        self.log.append(("create", "StatefulSet", body["metadata"]["name"], body))

    def delete_namespaced_stateful_set(self, name, namespace):
        self.log.append(("delete", "StatefulSet", name))
        group = name.rsplit("-", 1)[1]
        self.core.pods = [
            p for p in self.core.pods if p.metadata.labels.get("citus-group") != group
        ]


class FakePolicy:
    def __init__(self, log):
        self.log = log

    def create_namespaced_pod_disruption_budget(self, namespace, body):
        self.log.append(("create", "PodDisruptionBudget", body["metadata"]["name"], body))

    def delete_namespaced_pod_disruption_budget(self, name, namespace):
        self.log.append(("delete", "PodDisruptionBudget", name))


class FakeCursor:
    def __init__(self, rows):
        self.rows = rows

    def fetchall(self):
        return self.rows

    def fetchone(self):
        return self.rows[0] if self.rows else None


class FakeCitus:
    """The coordinator as citus_meta sees it: pg_dist_node rows and placements per group."""

    def __init__(self, log, groups=(1, 2), placements=None, drain_fails=False, reachable=True):
        self.log = log
        self.nodes = {
            g: (g + 1, g, mf.member_dns_name(SPEC, g, 0), 5432, "primary", True, True)
            for g in groups
        }
        self.placements = dict(placements or {g: 16 for g in groups})
        self.drain_fails, self.reachable = drain_fails, reachable
        self.dsns: list[str] = []

    def connect(self, dsn):
        self.dsns.append(dsn)
        if not self.reachable:
            raise psycopg.OperationalError("connection refused")
        return self

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def transaction(self):  # the shard sizes are read in one, under a statement timeout
        return self

    def execute(self, sql, params=()):
        if sql.startswith("SET LOCAL statement_timeout"):
            return FakeCursor([])
        if sql == citus_meta.DIST_NODES_SQL:
            return FakeCursor([self.nodes[g] for g in sorted(self.nodes)])
        if sql == citus_meta.NODE_SHARDS_SQL:
            return FakeCursor(
                [
                    (g, r[2], r[3], self.placements.get(g, 0), 0)
                    for g, r in sorted(self.nodes.items())
                ]
            )
        if sql == citus_meta.PLACEMENTS_IN_GROUP_SQL:
            return FakeCursor([(self.placements.get(params[0], 0),)])
        if sql == citus_meta.DRAIN_SQL:
            self.log.append(("sql", "drain", params[0]))
            if self.drain_fails:
                raise psycopg.errors.InternalError("could not move shard: not enough space")
            group = next(g for g, r in self.nodes.items() if r[2] == params[0])
            self.placements[group] = 0
            return FakeCursor([])
        if sql == citus_meta.DISABLE_NODE_SQL:
            self.log.append(("sql", "disable_node", params[0]))
            return FakeCursor([])
        if sql == citus_meta.REMOVE_NODE_SQL:
            self.log.append(("sql", "remove_node", params[0]))
            self.nodes = {g: r for g, r in self.nodes.items() if r[2] != params[0]}
            return FakeCursor([])
        if sql == citus_meta.CLEANUP_SQL or "recover_prepared_transactions" in sql:
            self.log.append(("sql", "cleanup", None))
            return FakeCursor([])
        if sql == citus_meta.TRANSFER_RUNNING_SQL:  # the sweep of shard-move leftovers
            return FakeCursor([(0,)])
        if sql == citus_meta.DROP_MOVE_LEFTOVERS_ON_EACH_NODE_SQL:
            self.log.append(("sql", "drop_move_leftovers", None))
            return FakeCursor([])
        if "citus_set_node_property" in sql:  # drain_group restoring shouldhaveshards on failure
            self.log.append(("sql", "set_node_property", params[0]))
            return FakeCursor([])
        raise AssertionError(f"unexpected SQL {sql}")


def healthy_pods(groups=(0, 1, 2)):
    out = []
    for g in groups:
        n = SPEC.members_in_group(g)
        out.append(pod(g, 0, member_status(g, 0, "primary", 100 * 1048576), "primary"))
        for i in range(1, n):
            out.append(
                pod(
                    g,
                    i,
                    member_status(
                        g, i, "replica", (100 - i) * 1048576, replication_state="streaming"
                    ),
                    "replica",
                )
            )
    return out


def dcs_endpoints(groups=(0, 1, 2)):
    out = []
    for g in groups:
        out.append(
            endpoints(
                f"citusdemo-{g}", g, {"leader": f"citusdemo-{g}-0", "optime": str(100 * 1048576)}
            )
        )
        out.append(
            endpoints(
                f"citusdemo-{g}-sync",
                g,
                {"leader": f"citusdemo-{g}-0", "sync_standby": f"citusdemo-{g}-1"},
            )
        )
        out.append(endpoints(f"citusdemo-{g}-config", g, {"config": "{}"}))
    return out


def make(groups=(0, 1, 2), pods=None, eps=None, sets=None, citus=None, lb_ip="10.128.0.50"):
    log: list = []
    core = FakeCore(
        log,
        healthy_pods(groups) if pods is None else pods,
        dcs_endpoints(groups) if eps is None else eps,
        lb_ip,
    )
    apps = FakeApps(log, [statefulset(g) for g in groups] if sets is None else sets, core)
    policy = FakePolicy(log)
    db = citus or FakeCitus(log, groups=[g for g in groups if g > 0])
    db.log = log
    c = KubernetesCluster(
        SPEC,
        core_api=core,
        apps_api=apps,
        policy_api=policy,
        connect=db.connect,
        sleep=lambda s: None,
    )
    return c, log, core, apps, db


@pytest.fixture(autouse=True)
def _no_dsn_env(monkeypatch):
    monkeypatch.delenv("CITUS_PIPELINE_DSN", raising=False)
    monkeypatch.delenv("CITUS_DSN", raising=False)
    monkeypatch.delenv("CITUS_COORDINATOR_DSN", raising=False)


# ---- topology ---------------------------------------------------------------------------------
def test_topology_from_pods_and_patroni_annotations():
    c, *_ = make()
    topo = c.status()
    assert topo.backend == "kubernetes" and topo.scope == "citusdemo"
    assert topo.groups == [0, 1, 2]
    roles = {m.name: m.role for m in topo.members}
    assert roles == {
        "citusdemo-0-0": "leader",
        "citusdemo-0-1": "sync_standby",
        "citusdemo-0-2": "replica",
        "citusdemo-1-0": "leader",
        "citusdemo-1-1": "sync_standby",
        "citusdemo-2-0": "leader",
        "citusdemo-2-1": "sync_standby",
    }
    m = next(m for m in topo.members if m.name == "citusdemo-0-2")
    assert m.host == "citusdemo-0-2.citusdemo-0-headless.citus.svc" and m.port == 5432
    assert m.state == "streaming" and m.timeline == 2
    assert m.lag_mb == 2.0  # leader at 100 MiB, this replica at 98 MiB
    assert topo.leader(0).lag_mb is None and topo.leader(0).state == "running"
    assert topo.leader(1).api_url.endswith(":8008/patroni")
    # Citus metadata came from the coordinator through the load balancer's address
    assert [n.groupid for n in topo.dist_nodes] == [1, 2]
    assert topo.active_worker_groups == [1, 2]
    assert topo.coordinator_dsn.startswith("host=10.128.0.50 port=5432 dbname=citus")
    assert "password" not in topo.coordinator_dsn


def test_pod_without_status_annotation_is_unknown_and_foreign_pods_are_ignored():
    pods = healthy_pods((0,)) + [pod(1, 0, None)]
    stray = pod(1, 1, member_status(1, 1, "replica", 0))
    stray.metadata.labels = {**mf.base_labels(SPEC)}  # no citus-group label
    c, *_ = make(groups=(0, 1), pods=pods + [stray])
    topo = c.status()
    new = next(m for m in topo.members if m.name == "citusdemo-1-0")
    assert (new.role, new.state) == ("unknown", "starting")
    assert "citusdemo-1-1" not in {m.name for m in topo.members}


def test_leader_falls_back_to_the_role_label_without_leader_endpoints():
    c, *_ = make(groups=(0,), eps=[])
    topo = c.status(with_shards=False)
    assert topo.leader(0).name == "citusdemo-0-0"
    assert {m.role for m in topo.members if m.name != "citusdemo-0-0"} == {"replica"}


def test_status_survives_an_unreachable_coordinator():
    c, *_ = make(citus=FakeCitus([], reachable=False))
    topo = c.status()
    assert len(topo.members) == 7 and topo.dist_nodes == []


def test_no_load_balancer_address_yet_is_one_clear_error():
    c, *_ = make(lb_ip=None)
    with pytest.raises(KubernetesClusterError, match="no load balancer address yet"):
        c.coordinator_dsn()


def test_dsn_from_the_environment_wins(monkeypatch):
    monkeypatch.setenv("CITUS_PIPELINE_DSN", "host=coord dbname=citus")
    c, *_ = make(lb_ip=None)
    assert c.coordinator_dsn() == "host=coord dbname=citus"


# ---- add worker -------------------------------------------------------------------------------
def test_add_worker_creates_the_next_group_from_the_templates():
    sets = [
        statefulset(
            0, image="cr.yandex/abc/patroni-citus:15-13.2-4.1", storage="citus-network-ssd"
        ),
        statefulset(1),
        statefulset(2),
    ]
    c, log, *_ = make(sets=sets)
    assert c.add_worker(wait=False) == 3
    created = [(e[1], e[2]) for e in log if e[0] == "create"]
    assert created == [
        ("Service", "citusdemo-3-headless"),
        ("Service", "citusdemo-3"),
        ("Endpoints", "citusdemo-3"),
        ("Service", "citusdemo-3-config"),
        ("StatefulSet", "citusdemo-3"),
        ("PodDisruptionBudget", "citusdemo-3"),
    ]
    assert not [e for e in log if e[0] == "delete"]
    sts = next(e[3] for e in log if e[1] == "StatefulSet")
    assert sts["spec"]["replicas"] == SPEC.workers.members
    env = {e["name"]: e for e in sts["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["PATRONI_CITUS_GROUP"]["value"] == "3"
    assert sts["metadata"]["labels"]["citus-type"] == "worker"
    # what the running cluster uses (kustomize overlay) carries over to the new group
    assert (
        sts["spec"]["template"]["spec"]["containers"][0]["image"]
        == "cr.yandex/abc/patroni-citus:15-13.2-4.1"
    )
    assert sts["spec"]["volumeClaimTemplates"][0]["spec"]["storageClassName"] == "citus-network-ssd"
    # every created object equals the rendered template apart from those two overrides
    rendered = {(o["kind"], o["metadata"]["name"]) for o in mf.group_manifests(SPEC, 3)}
    assert set(created) == rendered


def test_add_worker_picks_the_id_after_the_highest_statefulset():
    c, _log, *_ = make(groups=(0, 1, 4))
    assert c.add_worker(wait=False) == 5


def test_add_worker_waits_until_the_group_is_in_pg_dist_node():
    c, log, core, apps, db = make()

    def create_sts(namespace, body):  # the new group comes up and Patroni registers it
        log.append(("create", "StatefulSet", body["metadata"]["name"], body))
        core.pods += healthy_pods((3,))
        core.eps += dcs_endpoints((3,))
        db.nodes[3] = (9, 3, mf.member_dns_name(SPEC, 3, 0), 5432, "primary", True, True)

    apps.create_namespaced_stateful_set = create_sts
    seen = []
    assert (
        c.add_worker(progress=lambda msg, done, total: seen.append((done, total)), timeout=5) == 3
    )
    assert seen[-1] == (1, 1)


def test_add_worker_without_a_coordinator_creates_nothing():
    c, log, *_ = make(groups=(0, 1), sets=[statefulset(1)])
    with pytest.raises(KubernetesClusterError, match="no coordinator StatefulSet citusdemo-0"):
        c.add_worker(wait=False)
    assert log == []


# ---- remove worker ----------------------------------------------------------------------------
def test_remove_worker_refuses_to_delete_anything_when_the_drain_fails():
    log: list = []
    c, log, *_ = make(citus=FakeCitus(log, drain_fails=True))
    with pytest.raises(DrainError, match="not enough space"):
        c.remove_worker(2)
    assert [e for e in log if e[0] in ("delete", "create", "patch")] == []
    assert ("sql", "remove_node", mf.member_dns_name(SPEC, 2, 0)) not in log


def test_remove_worker_refuses_when_placements_remain_after_the_drain():
    log: list = []
    db = FakeCitus(log)
    original = db.execute

    def leaky(sql, params=()):
        cur = original(sql, params)
        if sql == citus_meta.DRAIN_SQL:
            db.placements[2] = 3  # the drain "succeeded" but left shards behind
        return cur

    db.execute = leaky
    c, log, *_ = make(citus=db)
    with pytest.raises(DrainError, match="still holds 3"):
        c.remove_worker(2)
    assert not [e for e in log if e[0] == "delete"]


def test_remove_worker_drains_then_deletes_the_group_objects():
    c, log, *_ = make()
    assert c.remove_worker(2) == 16  # placements moved off the group
    kinds = [e for e in log if e[0] in ("delete", "sql")]
    assert kinds[0] == ("sql", "drain", mf.member_dns_name(SPEC, 2, 0))
    deleted = {(e[1], e[2]) for e in log if e[0] == "delete"}
    assert {
        ("StatefulSet", "citusdemo-2"),
        ("PodDisruptionBudget", "citusdemo-2"),
        ("Service", "citusdemo-2"),
        ("Service", "citusdemo-2-headless"),
        ("Service", "citusdemo-2-config"),
        ("Endpoints", "citusdemo-2"),
        ("Endpoints", "citusdemo-2-config"),
        ("Endpoints", "citusdemo-2-sync"),
        ("PersistentVolumeClaim", f"{c.selector},citus-group=2"),
    } == deleted
    # nothing of another group was touched
    assert not [e for e in log if e[0] == "delete" and re.search(r"citusdemo-[01]\b", str(e[2]))]
    # pg_dist_node rows go only after the pods are gone, so Patroni cannot re-register them,
    # and the group is paused first, so its leader's Patroni does not make the coordinator
    # hold pg_dist_node for a successor on its way out
    order = [e[:2] for e in log]
    pause = next(
        i for i, e in enumerate(log) if e[:3] == ("patch", "Endpoints", "citusdemo-2-config")
    )
    assert pause < order.index(("delete", "StatefulSet"))
    assert order.index(("sql", "remove_node")) > order.index(("delete", "StatefulSet"))
    assert order.index(("delete", "PersistentVolumeClaim")) > order.index(("sql", "remove_node"))


@pytest.mark.parametrize(
    ("group", "message"),
    [
        (0, "not a worker group"),
        (7, "no StatefulSet citusdemo-7"),
    ],
)
def test_remove_worker_refuses_bad_groups(group, message):
    c, log, *_ = make()
    with pytest.raises(KubernetesClusterError, match=message):
        c.remove_worker(group)
    assert log == []


def test_remove_worker_refuses_the_last_worker_group():
    c, log, *_ = make(groups=(0, 1))
    with pytest.raises(KubernetesClusterError, match="last worker group"):
        c.remove_worker(1)
    assert log == []


# ---- switchover -------------------------------------------------------------------------------
def test_switchover_writes_patronis_failover_endpoint():
    c, log, *_ = make()
    assert c.switchover(1) == "citusdemo-1-1"
    patch = next(e for e in log if e[0] == "patch")
    assert patch[2] == "citusdemo-1-failover"
    ann = patch[3]["metadata"]["annotations"]
    assert (ann["leader"], ann["member"]) == ("citusdemo-1-0", "citusdemo-1-1")
    assert patch[3]["metadata"]["labels"]["citus-group"] == "1"


def test_a_rolling_restart_deletes_the_standbys_pods_then_switches_over_then_the_leader():
    from citus_pipeline.cluster.rolling import rolling_restart

    c, log, core, *_ = make(groups=(0, 1))
    for p in core.pods:  # a parameter that needs a restart changed in group 1's DCS config
        if p.metadata.name.startswith("citusdemo-1-"):
            st = json.loads(p.metadata.annotations["status"])
            p.metadata.annotations["status"] = json.dumps({**st, "pending_restart": True})
    done = rolling_restart(c, pending_only=True)
    assert done == ["citusdemo-1-1", "citusdemo-1-0"]
    steps = [(e[0], e[2]) for e in log if e[0] in ("delete", "patch")]
    assert steps == [
        ("delete", "citusdemo-1-1"),
        ("patch", "citusdemo-1-failover"),
        ("delete", "citusdemo-1-0"),
    ]
    assert not any(m.pending_restart for m in c.status(with_shards=False).members)


def test_a_member_whose_pod_does_not_come_back_is_named_with_what_was_seen():
    c, log, core, *_ = make(groups=(0, 1))
    core.delete_namespaced_pod = lambda name, namespace: log.append(("delete", "Pod", name))
    with pytest.raises(KubernetesClusterError, match="citusdemo-1-1 not running again 0s"):
        c.restart_member("citusdemo-1-1", timeout=0)
    with pytest.raises(KubernetesClusterError, match="no pod citusdemo-1-9"):
        c.restart_member("citusdemo-1-9")


def test_a_group_config_change_merges_into_patronis_annotation():
    c, log, core, *_ = make(groups=(0, 1))
    core.eps = [e for e in core.eps if e.metadata.name != "citusdemo-1-config"]
    core.eps.append(
        endpoints(
            "citusdemo-1-config",
            1,
            {"config": json.dumps({"ttl": 20, "postgresql": {"parameters": {"a": 1, "b": 2}}})},
        )
    )
    c.set_group_config(1, {"postgresql": {"parameters": {"b": None, "c": 3}}})
    patch = next(e for e in log if e[0] == "patch")
    written = json.loads(patch[3]["metadata"]["annotations"]["config"])
    assert written == {"ttl": 20, "postgresql": {"parameters": {"a": 1, "c": 3}}}


def test_switchover_to_a_stranger_is_refused():
    c, log, *_ = make()
    with pytest.raises(KubernetesClusterError, match="not a member of group 1"):
        c.switchover(1, "citusdemo-2-1")
    assert log == []


# ---- CLI and apply ----------------------------------------------------------------------------
def use_backend(monkeypatch, c) -> list:
    """`citus-pipeline cluster ...` gets ``c`` for its backend; returns the kinds it asked for."""
    from citus_pipeline.cluster import commands

    asked: list = []

    def get_backend(spec=None, kind=None, state_dir=None, context=None):
        asked.append(kind)
        return c

    monkeypatch.setattr(commands, "get_backend", get_backend)
    return asked


def test_cluster_status_on_kubernetes_prints_the_same_tables_as_the_local_backend(monkeypatch):
    from typer.testing import CliRunner

    from citus_pipeline.cluster.commands import app

    c, *_ = make()
    asked = use_backend(monkeypatch, c)
    r = CliRunner().invoke(app, ["status", "--backend", "kubernetes"], env={"COLUMNS": "200"})
    assert r.exit_code == 0, r.output
    assert asked == ["kubernetes"]
    assert "Citus cluster citusdemo (kubernetes)" in r.output
    for header in ("Group", "Member", "Role", "Lag in MB", "pg_dist_node", "Shards per node"):
        assert header in r.output
    assert "citusdemo-0-2" in r.output and "sync_standby" in r.output
    r = CliRunner().invoke(app, ["status", "--json", "--backend", "kubernetes"])
    assert json.loads(r.output)["backend"] == "kubernetes"


def test_cluster_remove_worker_on_kubernetes_reports_a_failed_drain_in_one_line(monkeypatch):
    from typer.testing import CliRunner

    from citus_pipeline.cluster.commands import app

    log: list = []
    c, log, *_ = make(citus=FakeCitus(log, drain_fails=True))
    use_backend(monkeypatch, c)
    r = CliRunner().invoke(
        app, ["remove-worker", "2", "--backend", "kubernetes"], env={"COLUMNS": "300"}
    )
    assert r.exit_code == 1
    assert "error:" in r.output and "not enough space" in r.output
    assert not [e for e in log if e[0] == "delete"]


@pytest.mark.parametrize("args", [["down"], ["stop", "citusdemo-1-0"], ["start", "citusdemo-1-0"]])
def test_local_only_commands_on_kubernetes_end_in_one_error_line(monkeypatch, args):
    from typer.testing import CliRunner

    from citus_pipeline.cluster.commands import app

    c, log, *_ = make()
    use_backend(monkeypatch, c)
    r = CliRunner().invoke(app, [*args, "--backend", "kubernetes"], env={"COLUMNS": "300"})
    assert r.exit_code == 1
    lines = [line for line in r.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and "local-only" in lines[0]
    assert log == []


class FakeApiClient:
    def __init__(self, existing=()):
        self.calls, self.existing = [], set(existing)

    def call_api(self, path, method, **kw):
        from kubernetes.client.exceptions import ApiException

        self.calls.append((method, path, kw))
        if method == "GET" and path not in self.existing:
            raise ApiException(status=404, reason="Not Found")
        return {}


def test_apply_is_server_side_and_never_overwrites_patronis_endpoints():
    from citus_pipeline.cluster.k8s_apply import apply_manifests

    objs = mf.cluster_manifests(SPEC)
    api = FakeApiClient(existing={"/api/v1/namespaces/citus/endpoints/citusdemo-0"})
    done = dict(apply_manifests(objs, api))
    assert done["Endpoints/citusdemo-0"].startswith("exists")
    assert done["Endpoints/citusdemo-1"] == "created"
    patches = [c for c in api.calls if c[0] == "PATCH"]
    assert len(patches) == len([o for o in objs if o["kind"] != "Endpoints"])
    for _, path, kw in patches:
        assert kw["header_params"]["Content-Type"] == "application/apply-patch+yaml"
        assert ("fieldManager", "citus-pipeline") in kw["query_params"]
        assert "/endpoints/" not in path
    posts = [c for c in api.calls if c[0] == "POST"]
    assert [p[1] for p in posts] == ["/api/v1/namespaces/citus/endpoints"] * SPEC.workers.groups
    assert ("PATCH", "/apis/apps/v1/namespaces/citus/statefulsets/citusdemo-2") in [
        c[:2] for c in patches
    ]


class Forbidden(Exception):
    status = 403
    body = json.dumps(
        {
            "message": 'pods is forbidden: User "system:serviceaccount:dagster:dagster" cannot '
            'list resource "pods" in API group "" in the namespace "citus"'
        }
    )


def test_a_refused_read_names_the_binding_that_grants_it():
    c, _log, core, *_ = make()

    def refuse(*a, **kw):
        raise Forbidden()

    core.list_namespaced_pod = refuse
    with pytest.raises(KubernetesClusterError) as err:
        c.status()
    message = str(err.value)
    assert message.startswith('pods is forbidden: User "system:serviceaccount:dagster:dagster"')
    assert "Role citusdemo-dagster" in message and "dagster/dagster-user-deployments" in message
