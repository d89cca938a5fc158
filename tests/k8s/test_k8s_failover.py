"""Failover on a real control plane under streaming single-row inserts through the
coordinator's load balancer (through the pooler for its switchover): a worker leader's pod
deleted, a worker leader cut off from the API server and its standby, the network between
a leader's node and its synchronous standby's cut, then the node that holds the coordinator
leader lost. Nothing acknowledged may be lost."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import psycopg
import pytest
from kubernetes import client

from citus_pipeline.cluster.budget import STATUS_BUDGET_S
from citus_pipeline.cluster.rolling import rolling_restart
from citus_pipeline.drills import run_scenario, start_writer, wait_leader_change
from citus_pipeline.drills.kill import DCS_OUTAGE_S
from citus_pipeline.drills.sandbox import SandboxFaults
from citus_pipeline.waiting import until

from .drills import PROBE_TABLE, faults, wait_ha, wait_members_ready, write_spec

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


def test_the_pooler_follows_a_coordinator_switchover_and_never_writes_to_a_standby(
    kube, cluster, spec
):
    """Single-row writes through `pooler_dsn` (PgBouncer before the coordinator's leader
    Service) while the coordinator's leader switches over: nothing acknowledged lost, no
    write refused as read-only, and the pool's server is the new leader after."""
    wait_ha(kube, cluster)
    dsn = cluster.status(with_shards=False).pooler_dsn
    assert dsn, "no pooler_dsn"
    probe = start_writer(dsn, "pooled_probe")
    time.sleep(3)
    old = cluster.status(with_shards=False).leader(0).name
    t0 = time.monotonic()
    new = cluster.switchover(0)
    _acked_after(probe, time.monotonic())
    time.sleep(2)
    probe.stop()
    assert new != old
    assert not probe.lost()
    assert not [e for e in probe.errors if "read-only" in e], probe.distinct_errors()
    core = client.CoreV1Api(kube.api())
    ip = core.read_namespaced_pod(new, spec.kubernetes.namespace).status.pod_ip
    with psycopg.connect(dsn, autocommit=True, prepare_threshold=None) as conn:
        assert conn.execute("SELECT host(inet_server_addr())").fetchone() == (ip,)
    print(
        f"coordinator switchover {old} -> {new} through the pooler: longest write gap "
        f"{probe.longest_gap(t0):.1f}s, {probe.failed} failed inserts "
        f"({'; '.join(probe.distinct_errors(t0))})"
    )


def test_a_stopped_api_server_keeps_the_leaders_and_status_answers_within_its_budget(
    kube, cluster, spec, tmp_path
):
    """kube-apiserver stopped for 30 s (killed, then started again: what the drills' DCS
    outage does on the sandbox) under writes through the coordinator's load balancer:
    Patroni's failsafe mode keeps every leader (nothing acknowledged lost, the same leaders
    after), and `cluster status --backend kubernetes --json` answers within its budget, the
    members unknown and said so, pg_dist_node from the coordinator at the address the API
    gave last."""
    wait_ha(kube, cluster)
    before = cluster.status(with_shards=False)  # the API answers: its addresses are kept
    leaders = {g: before.leader(g).name for g in before.groups}
    probe = start_writer(cluster.coordinator_dsn(), PROBE_TABLE)
    time.sleep(3)
    env = {**os.environ, "KUBECONFIG": str(kube.kubeconfig), "CITUS_PIPELINE_BACKEND": "kubernetes"}
    argv = [sys.executable, "-m", "citus_pipeline.cli", "cluster", "status", "--json"]
    argv += ["--spec", str(write_spec(tmp_path / "cluster.yaml"))]
    # the CLI once while the API answers: it keeps the load balancers' addresses
    subprocess.run(argv, check=True, capture_output=True, text=True, env=env, timeout=60)
    t0 = time.monotonic()
    with SandboxFaults(cluster, kube.sandbox).dcs_frozen():
        time.sleep(5)
        started = time.monotonic()
        seen = cluster.status()
        took = time.monotonic() - started
        out = subprocess.run(argv, check=False, capture_output=True, text=True, env=env, timeout=60)
        time.sleep(max(0.0, DCS_OUTAGE_S - (time.monotonic() - t0)))
    _acked_after(probe, time.monotonic())
    time.sleep(2)
    probe.stop()
    assert took < STATUS_BUDGET_S + 0.5, took
    assert seen.members == [] and "Kubernetes API" in seen.members_unanswered
    assert out.returncode == 0, out.stderr
    shown = json.loads(out.stdout)
    assert shown["members"] == [] and "Kubernetes API" in shown["members_unanswered"]
    assert shown["coordinator_dsn"] == before.coordinator_dsn
    primaries = {n["groupid"] for n in shown["dist_nodes"] if n["role"] == "primary"}
    assert primaries == set(range(spec.workers.groups + 1))  # the coordinator is group 0
    wait_ha(kube, cluster)
    assert not probe.lost()
    after = cluster.status(with_shards=False)
    assert {g: after.leader(g).name for g in after.groups} == leaders  # failsafe: no failover
    print(
        f"kube-apiserver stopped {DCS_OUTAGE_S} s: status in {took:.1f} s without it, longest "
        f"write gap {probe.longest_gap(t0):.1f}s, {probe.failed} failed inserts "
        f"({'; '.join(probe.distinct_errors(t0))}), every leader kept"
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


def test_a_leader_cut_off_from_the_api_and_its_standby_steps_down_without_a_split_brain(
    kube, cluster
):
    wait_ha(kube, cluster)
    before = cluster.status(with_shards=False).leader(1).name
    faults = SandboxFaults(cluster, kube.sandbox)
    o = run_scenario(cluster, "partition-worker-leader", faults=faults)
    assert o.acked > 0 and (o.lost, o.duplicated) == (0, 0), o
    # failsafe mode cannot keep it: it reaches no other member of its group. Its standby
    # takes over while the coordinator still reaches the old leader, and never are two
    # members of group 1 out of recovery at once (asked of each PostgreSQL, twice a second)
    assert o.max_primaries == 1, o
    assert o.failover_s is not None and o.registered_s is not None, o.detail
    assert cluster.status(with_shards=False).leader(1).name != before
    print(f"{o.detail}: longest write gap {o.max_gap_s:.1f}s, {o.acked} acknowledged, 0 lost")


def test_cutting_the_network_between_a_leader_and_its_synchronous_standby_loses_nothing(
    kube, cluster
):
    wait_ha(kube, cluster)
    topo = cluster.status(with_shards=False)
    before = {g: topo.leader(g).name for g in topo.groups}
    faults = SandboxFaults(cluster, kube.sandbox)
    o = run_scenario(cluster, "cut-leader-from-standby", faults=faults)
    assert o.acked > 0 and (o.lost, o.duplicated) == (0, 0), o
    assert o.max_primaries == 1, o
    # both nodes still reach the API server: the leader keeps its lock, nobody fails over
    assert "still leads" in o.detail, o.detail
    topo = cluster.status(with_shards=False)
    assert {g: topo.leader(g).name for g in topo.groups} == before
    # writes acknowledged after the heal (how soon they resume during the cut is the
    # benchmark's figure: wal_sender_timeout, docs/benchmarks.md)
    assert any(t > o.fault_s for t in o.acked_after_s), o
    print(f"{o.detail}: longest write gap {o.max_gap_s:.1f}s, {o.acked} acknowledged, 0 lost")


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
