"""KubernetesCluster's topology and its worker groups added and removed, against fake API classes
(kube_fakes) that record what was created or deleted and in which order relative to the drain.
"""

from __future__ import annotations

import re

import pytest
from kube_fakes import (
    NS,
    SPEC,
    FakeCitus,
    Forbidden,
    dcs_endpoints,
    healthy_pods,
    make,
    member_status,
    no_dsn_env,  # noqa: F401 -- an autouse fixture: no test here sees the caller's DSN
    pod,
    statefulset,
)

from citus_pipeline.cluster import citus_meta
from citus_pipeline.cluster.kubernetes import manifests as mf
from citus_pipeline.errors import DrainError, KubernetesClusterError


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


# ---- restore points -------------------------------------------------------------------------
def test_restore_points_are_taken_through_the_coordinator_and_kept_in_a_configmap():
    c, _log, _core, _apps, db = make()
    points = c.restore_points()
    assert (points.store.namespace, points.store.name) == (NS, mf.restore_points_name(SPEC))
    assert points.list() == []  # no ConfigMap yet: no point taken
    with points.connect():
        pass
    assert db.dsns == [c.coordinator_dsn()]  # through the coordinator's load balancer


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
