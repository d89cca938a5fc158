"""Fake Kubernetes API classes built from the client's model objects, and a fake coordinator,
for the unit tests of KubernetesCluster (test_kube_*.py).

The fakes record every call in one shared log (API calls and SQL alike), so the tests can
assert what was created or deleted and in which order relative to the shard drain; where a
real cluster would react (Patroni electing a leader, a StatefulSet recreating a pod), the
fakes do so at once.
"""

from __future__ import annotations

import json

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
from citus_pipeline.cluster.kubernetes import KubernetesCluster
from citus_pipeline.cluster.kubernetes import manifests as mf
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
        if name not in ("citusdemo-coordinator", "citusdemo-pooler"):
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

    def read_namespaced_config_map(self, name, namespace):
        raise NotFound()  # the record of restore points: none taken yet

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
    )
    return c, log, core, apps, db


class FakeApiClient:
    def __init__(self, existing=()):
        self.calls, self.existing = [], set(existing)

    def call_api(self, path, method, **kw):
        from kubernetes.client.exceptions import ApiException

        self.calls.append((method, path, kw))
        if method == "GET" and path not in self.existing:
            raise ApiException(status=404, reason="Not Found")
        return {}


class Forbidden(Exception):
    status = 403
    body = json.dumps(
        {
            "message": 'pods is forbidden: User "system:serviceaccount:dagster:dagster" cannot '
            'list resource "pods" in API group "" in the namespace "citus"'
        }
    )


@pytest.fixture(autouse=True)
def no_dsn_env(monkeypatch, tmp_path):
    """Every test here reads the coordinator's address from the fakes, never the caller's
    environment, and keeps the addresses it saw in a cache of its own."""
    monkeypatch.setenv("CITUS_PIPELINE_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("CITUS_PIPELINE_DSN", raising=False)
    monkeypatch.delenv("CITUS_DSN", raising=False)
    monkeypatch.delenv("CITUS_COORDINATOR_DSN", raising=False)
