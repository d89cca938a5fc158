"""Failover on a real control plane under streaming single-row inserts through the
coordinator's load balancer: a worker leader's pod deleted, then the node that holds the
coordinator leader lost. Nothing acknowledged may be lost."""

from __future__ import annotations

import time

import psycopg
import pytest
from kubernetes import client

from citus_pipeline.cluster.rolling import rolling_restart
from citus_pipeline.drills import start_writer, wait_leader_change
from citus_pipeline.waiting import until

from .drills import PROBE_TABLE, faults, wait_ha, wait_members_ready

pytestmark = [pytest.mark.k8s, pytest.mark.citus, pytest.mark.destructive]


def _acked_after(probe, t: float, timeout: float = 60) -> None:
    until(
        lambda: probe.acked_at and probe.acked_at[-1] > t,
        timeout,
        0.2,
        "a write acknowledged after the leader change",
    )


def test_deleting_a_worker_leader_pod_fails_over_and_loses_nothing(kube, cluster, spec):
    wait_ha(kube, cluster)
    dsn = cluster.coordinator_dsn()
    probe = start_writer(dsn, PROBE_TABLE)
    time.sleep(3)
    old = cluster.status(with_shards=False).leader(1).name
    core = client.CoreV1Api(kube.api())
    t0 = time.monotonic()
    core.delete_namespaced_pod(old, spec.kubernetes.namespace)
    change = wait_leader_change(cluster, 1, old, t0)
    _acked_after(probe, time.monotonic())
    # the StatefulSet recreates the pod on its volume and it rejoins as a replica
    wait_members_ready(kube, spec, 1, timeout=240)
    probe.stop()
    assert not probe.lost()
    assert len(probe.acked) > 0
    print(
        f"worker leader pod deleted: {change.new} leads after {change.seconds:.1f}s, "
        f"longest write gap {probe.longest_gap(t0):.1f}s, {probe.failed} failed inserts"
    )


def test_a_frozen_worker_leader_is_killed_by_its_liveness_probe_before_it_thaws(
    kube, cluster, spec
):
    """Every process of group 1's leader pod stopped for 3 x ttl: its kernel still answers
    the coordinator's TCP, so only the liveness probe's kill frees the writes on group 1.
    (3 x ttl, not 2: the kill, the promotion and the registration take about 2 x ttl on
    these 2 cores, and the test is about the order, not the seconds.)"""
    wait_ha(kube, cluster)
    dsn = cluster.coordinator_dsn()
    probe = start_writer(dsn, PROBE_TABLE)
    time.sleep(3)
    ns = spec.kubernetes.namespace
    old = cluster.status(with_shards=False).leader(1).name
    core = client.CoreV1Api(kube.api())
    restarts = core.read_namespaced_pod(old, ns).status.container_statuses[0].restart_count
    hold = 3 * spec.patroni.ttl
    t0 = time.monotonic()
    with faults(kube, cluster).frozen(old):
        change = wait_leader_change(cluster, 1, old, t0, timeout=hold)
        # writes on group 1's shards go through the new leader while the old one is frozen
        _acked_after(probe, time.monotonic(), timeout=max(1.0, t0 + hold - time.monotonic()))
        acked_while_frozen = time.monotonic() - t0 < hold
        time.sleep(max(0.0, t0 + hold - time.monotonic()))
    wait_members_ready(kube, spec, 1, timeout=240)
    probe.stop()
    assert acked_while_frozen
    assert not probe.lost()
    # the kubelet killed the container (liveness probe), which started again as a replica
    status = core.read_namespaced_pod(old, ns).status.container_statuses[0]
    assert status.restart_count > restarts
    print(
        f"worker leader frozen {hold}s: {change.new} leads after {change.seconds:.1f}s, "
        f"longest write gap {probe.longest_gap(t0):.1f}s, {probe.failed} failed inserts"
    )


def test_a_rolling_restart_applies_a_parameter_through_new_pods_with_every_group_led(
    kube, cluster, spec
):
    """`cluster restart --rolling --pending` on Kubernetes under writes through the LB:
    max_connections raised in every group's dynamic configuration, then each member's pod
    deleted and recreated in the rolling order (standbys, a switchover, the former leader)."""
    wait_ha(kube, cluster)
    dsn = cluster.coordinator_dsn()
    with psycopg.connect(dsn, autocommit=True) as conn:
        target = int(conn.execute("SHOW max_connections").fetchone()[0]) + 10
    topo = cluster.status(with_shards=False)
    for g in topo.groups:
        cluster.set_group_config(g, {"postgresql": {"parameters": {"max_connections": target}}})
    until(
        lambda: all(m.pending_restart for m in cluster.status(with_shards=False).members),
        120,
        2,
        "Patroni to flag a restart pending on every member",
    )
    probe = start_writer(dsn, PROBE_TABLE)
    time.sleep(3)
    t0 = time.monotonic()
    done = rolling_restart(cluster, pending_only=True)
    took = time.monotonic() - t0
    wait_ha(kube, cluster)
    probe.stop()
    assert sorted(done) == sorted(m.name for m in topo.members)
    assert not any(m.pending_restart for m in cluster.status(with_shards=False).members)
    with psycopg.connect(dsn, autocommit=True) as conn:
        shown = conn.execute(
            "SELECT result FROM run_command_on_all_nodes('SHOW max_connections')"
        ).fetchall()
    assert {int(v) for (v,) in shown} == {target}
    assert not probe.lost()
    assert len(probe.acked) > 0
    print(
        f"rolling restart of {len(done)} members through new pods: {took:.0f}s, longest "
        f"write gap {probe.longest_gap(t0):.1f}s, {probe.failed} failed inserts"
    )


def test_losing_the_coordinator_leaders_node_fails_over_and_loses_nothing(kube, cluster, spec):
    wait_ha(kube, cluster)
    dsn = cluster.coordinator_dsn()
    probe = start_writer(dsn, PROBE_TABLE)
    time.sleep(3)
    topo = cluster.status(with_shards=False)
    core = client.CoreV1Api(kube.api())
    ns = spec.kubernetes.namespace
    node = core.read_namespaced_pod(topo.leader(0).name, ns).spec.node_name
    # every leader on that node goes with it (a worker group's too, as placement allows)
    led = {
        g: topo.leader(g).name
        for g in range(spec.workers.groups + 1)
        if core.read_namespaced_pod(topo.leader(g).name, ns).spec.node_name == node
    }
    t0 = time.monotonic()
    gone = kube.lose_node(node)
    try:
        changes = {g: wait_leader_change(cluster, g, old, t0) for g, old in led.items()}
        _acked_after(probe, time.monotonic())
    finally:
        probe.stop()
        kube.sandbox.revive_node(node)  # the VM rebooted: the next module finds three nodes
    assert not probe.lost()
    print(
        f"node {node} lost ({len(gone)} container processes killed): "
        + ", ".join(f"group {g} led by {c.new} after {c.seconds:.1f}s" for g, c in changes.items())
        + f"; longest write gap {probe.longest_gap(t0):.1f}s, {probe.failed} failed inserts"
    )
