"""Benchmark of the Kubernetes deployment on the real test control plane (not a test):

* seconds from applying the rendered manifests to every group led and registered;
* failover seconds and the longest write gap under single-row inserts through the
  coordinator's load balancer, after a worker leader's pod is deleted and after the node
  that holds the coordinator leader is lost;
* the requests each Patroni member puts on the kube-apiserver, at idle and during a
  switchover (the apiserver's audit log: each request carries the pod its token is bound to).

    uv run python tests/k8s/bench.py [--json] [--out bench-results/k8s-control-plane]

Needs root, the control plane built by scripts/k8s-control-plane.sh and Citus.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from kubernetes import client

from citus_pipeline.drills import start_writer, wait_leader_change
from citus_pipeline.errors import WaitTimeout
from citus_pipeline.waiting import until
from k8s.control_plane import ControlPlane, missing_reason
from k8s.drills import PROBE_TABLE, Kube, bring_up, k8s_spec
from k8s.network import PodNetwork
from k8s.pod_runner import PodRunner, cleanup_dir


def rate(kube: Kube, ns: str, seconds: float, during=None) -> dict[str, float]:
    """Requests/s per member pod over a window (running ``during`` at its start)."""
    since = time.time()
    if during:
        during()
    time.sleep(max(0.0, seconds - (time.time() - since)))
    end = time.time()
    time.sleep(2)  # the audit log is written in batches of up to 1 s
    counts = kube.plane.requests_by_pod(since, end, ns)
    return {pod: n / (end - since) for pod, n in sorted(counts.items())}


def failover(kube: Kube, c, group: int, fault) -> dict:
    dsn = c.coordinator_dsn()
    probe = start_writer(dsn, PROBE_TABLE)
    time.sleep(5)
    topo = c.status(with_shards=False)
    old = topo.leader(group).name
    t0 = time.monotonic()
    fault(old)
    change = wait_leader_change(c, group, old, t0)
    # until a write goes through the new leader; the figures are reported either way (a long
    # wait shows as the longest write gap)
    with contextlib.suppress(WaitTimeout):
        until(
            lambda: probe.acked_at and probe.acked_at[-1] > t0 + change.seconds,
            60,
            0.2,
            "a write acknowledged by the new leader",
        )
    time.sleep(3)
    probe.stop()
    return {
        "failover_s": round(change.seconds, 1),
        "max_write_gap_s": round(probe.longest_gap(t0), 1),
        "failed_inserts": probe.failed,
        "acknowledged": len(probe.acked),
        "lost": len(probe.lost()),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--out", default="bench-results/k8s-control-plane")
    ap.add_argument("--idle-seconds", type=float, default=60)
    args = ap.parse_args()
    reason = missing_reason()
    if reason:
        print(f"bench k8s: {reason}", file=sys.stderr)
        return 2
    spec = k8s_spec()
    ns = spec.kubernetes.namespace
    workdir = Path(tempfile.mkdtemp(prefix="citus-k8s-bench-"))
    workdir.chmod(0o755)
    network = PodNetwork().up()
    plane = ControlPlane(workdir / "control-plane", network.gateway)
    runner = None
    out: dict = {
        "machine": f"{os.cpu_count()} cores",
        "spec": "3 coordinator members, 2 worker groups x 2",
    }
    try:
        plane.start()
        runner = PodRunner(plane.kubeconfig, workdir / "runner", network).start()
        kube = Kube(plane, runner, network, workdir)
        print("applying the rendered manifests ...", file=sys.stderr)
        c, ready = bring_up(kube, spec)
        out["apply_to_ready_s"] = round(ready, 1)
        time.sleep(20)  # let the replicas finish cloning
        print(f"ready in {ready:.1f} s; measuring idle API load ...", file=sys.stderr)
        idle = rate(kube, ns, args.idle_seconds)
        print("switchover of group 1 ...", file=sys.stderr)
        during = rate(kube, ns, 30, during=lambda: c.switchover(1))
        out["api_requests_per_s"] = {"idle": idle, "switchover_window_30s": during}
        core = client.CoreV1Api(kube.api())
        print("deleting a worker leader pod under writes ...", file=sys.stderr)
        out["worker_leader_pod_deleted"] = failover(
            kube, c, 1, lambda old: core.delete_namespaced_pod(old, ns)
        )
        time.sleep(60)  # the deleted member comes back and streams again
        print("losing the coordinator leader's node under writes ...", file=sys.stderr)
        out["coordinator_node_lost"] = failover(
            kube,
            c,
            0,
            lambda old: runner.lose_node(core.read_namespaced_pod(old, ns).spec.node_name),
        )
    finally:
        if runner is not None:
            runner.stop()
        plane.stop()
        network.down()
        cleanup_dir(workdir)
    lines = [
        (
            "Kubernetes deployment on a real control plane "
            f"(kube-apiserver {plane.bin_dir.parent.name}, pod runner, {out['machine']})"
        ),
        f"apply -> every group led and registered: {out['apply_to_ready_s']} s",
    ]
    for name in ("worker_leader_pod_deleted", "coordinator_node_lost"):
        r = out[name]
        lines.append(
            f"{name.replace('_', ' ')}: new leader registered after {r['failover_s']} s, "
            f"longest write gap {r['max_write_gap_s']} s, {r['failed_inserts']} failed inserts, "
            f"{r['acknowledged']} acknowledged, {r['lost']} lost"
        )
    for window, rates in out["api_requests_per_s"].items():
        vals = list(rates.values())
        lines.append(
            f"apiserver requests/s per member, {window}: "
            + (
                f"mean {sum(vals) / len(vals):.2f}, max {max(vals):.2f} over {len(vals)} members"
                if vals
                else "none"
            )
        )
    text = "\n".join(lines)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out + ".txt").write_text(text + "\n")
    Path(args.out + ".json").write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out) if args.json else text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
