"""The HA Citus cluster on a real control plane, from the project's own rendered manifests."""

from __future__ import annotations

import os
import time

import pytest
from kubernetes import client

from citus_pipeline.cluster import manifests as mf
from citus_pipeline.cluster.kubernetes import KubernetesCluster

from .conftest import k8s_spec, prepare_namespace, wait_registered

pytestmark = [pytest.mark.k8s, pytest.mark.citus]


@pytest.fixture(scope="module")
def spec():
    return k8s_spec()


@pytest.fixture(scope="module")
def cluster(kube, spec, require_citus):
    passwords = prepare_namespace(kube, spec)
    # the backend takes the password from libpq's environment, as a user's shell gives it
    os.environ["PGPASSWORD"] = passwords["superuser-password"]
    core, apps, policy = (
        client.CoreV1Api(kube.api()),
        client.AppsV1Api(kube.api()),
        client.PolicyV1Api(kube.api()),
    )
    c = KubernetesCluster(spec, core_api=core, apps_api=apps, policy_api=policy)
    started = time.monotonic()
    c.up(timeout=600)
    wait_registered(c, range(spec.workers.groups + 1))
    c.ready_seconds = time.monotonic() - started
    yield c
    os.environ.pop("PGPASSWORD", None)


def test_nodes_are_labelled_like_the_node_group(kube):
    nodes = client.CoreV1Api(kube.api()).list_node().items
    zones = sorted(n.metadata.labels["topology.kubernetes.io/zone"] for n in nodes)
    assert zones == ["ru-central1-a", "ru-central1-b", "ru-central1-d"]
    for n in nodes:
        ready = {c.type: c.status for c in n.status.conditions}["Ready"]
        assert ready == "True", n.metadata.name


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
