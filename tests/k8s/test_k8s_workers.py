"""Growing and shrinking the cluster on a real control plane: `add-worker` creates group 3
from the rendered objects, Patroni registers it, `new_workers_sensor` asks for exactly one
rebalance and the run spreads the shards onto it; `remove-worker 3` drains it first and ends
with the group gone and not one row lost."""

from __future__ import annotations

import dagster as dg
import psycopg
import pytest
from kubernetes import client
from rebalance_runs import materialize_rebalance, sensor_ticker
from seed_rows import seed_uk_price

from citus_pipeline.cluster.kubernetes import manifests as mf
from citus_pipeline.defs.citus.checks import QueryTimingSettings
from citus_pipeline.defs.citus.resources import CitusResource, ClusterResource, PricePaidFiles

from .drills import group_pods, write_spec

pytestmark = [pytest.mark.k8s, pytest.mark.citus, pytest.mark.destructive]

ROWS = 20000


def _count(dsn: str) -> int:
    with psycopg.connect(dsn, autocommit=True) as conn:
        return conn.execute("SELECT count(*) FROM uk_price").fetchone()[0]


def test_add_worker_sensor_rebalance_then_remove_worker(kube, cluster, spec, tmp_path):
    dsn = cluster.coordinator_dsn()
    seed_uk_price(dsn, ROWS)
    backend = ClusterResource(backend="kubernetes", spec_path=str(write_spec(tmp_path / "c.yaml")))
    citus = CitusResource(dsn=dsn, cluster=backend, retry_base_seconds=0.5)
    resources = {
        "citus": citus,
        "cluster": backend,
        "files": PricePaidFiles(work_dir=str(tmp_path / "work"), monthly_dir=str(tmp_path / "m")),
        "timing": QueryTimingSettings(reference_slo_seconds=30.0),
    }
    instance = dg.DagsterInstance.ephemeral()

    tick = sensor_ticker(instance, citus)
    requests, cursor = tick(None)
    assert requests == []

    group = cluster.add_worker(timeout=600)
    assert group == spec.workers.groups + 1
    nodes = [p.spec.node_name for p in group_pods(kube, spec, group)]
    assert len(nodes) == spec.workers.members and len(set(nodes)) == len(nodes)
    requests, cursor = tick(cursor)
    workers = ",".join(str(g) for g in range(1, group + 1))
    assert [r.run_key for r in requests] == [f"workers:{workers}"]
    assert tick(cursor)[0] == []

    result = materialize_rebalance(instance, resources, requests[0].run_key)
    assert result.success
    md = result.asset_materializations_for_node("uk_price_rebalanced")[0].metadata
    assert md["moves"].value > 0
    assert md[f"after_shards_group_{group}"].value > 0
    assert _count(dsn) == ROWS

    # shrink again: drained first, then the objects, the members and the pg_dist_node rows
    moved = cluster.remove_worker(group)
    assert moved > 0
    topo = cluster.status()
    assert group not in {n.groupid for n in topo.dist_nodes}
    assert group_pods(kube, spec, group) == []
    core = client.CoreV1Api(kube.api())
    ns = spec.kubernetes.namespace
    names = {s.metadata.name for s in core.list_namespaced_service(ns).items}
    assert mf.headless_name(spec, group) not in names and mf.group_name(spec, group) not in names
    sel = f"{mf.GROUP_LABEL}={group}"
    assert core.list_namespaced_persistent_volume_claim(ns, label_selector=sel).items == []
    assert _count(dsn) == ROWS
