"""Benchmark of the Kubernetes deployment on the sandbox's real nodes (not a test):

* `k8s sandbox up` to every node Ready (and the addons), from nothing (the images cached);
* seconds from applying the rendered manifests to every group led and registered;
* the memory and CPU the node stack (kubelet, containerd and its shims, kube-proxy) and the
  control plane cost at idle, with the cluster deployed;
* the requests each Patroni member puts on the kube-apiserver, at idle and during a
  switchover (the apiserver's audit log: each request carries the pod its token is bound to);
* failover under single-row inserts through the coordinator's load balancer: a worker
  leader's pod deleted, its container frozen (the kubelet's liveness probe kills it), and the
  node that holds the coordinator leader lost: seconds to the new leader in pg_dist_node, the
  longest write gap, acknowledged writes lost.

    uv run python tests/k8s/bench.py [--json] [--out bench-results/k8s-sandbox]

Needs root, the stack built by scripts/k8s-control-plane.sh, buildah and Citus. Takes the
sandbox down first if one runs, and down again at the end.
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

from citus_pipeline.cluster.local.processes import parents
from citus_pipeline.drills import start_writer, wait_leader_change
from citus_pipeline.errors import WaitTimeout
from citus_pipeline.sandbox.binaries import missing_reason
from citus_pipeline.sandbox.sandbox import Sandbox
from citus_pipeline.waiting import until
from k8s.drills import PROBE_TABLE, Kube, bring_up, faults, k8s_spec, wait_ha

TICK = os.sysconf("SC_CLK_TCK")


def rate(kube: Kube, ns: str, seconds: float, during=None) -> dict[str, float]:
    """Requests/s per member pod over a window (running ``during`` at its start)."""
    since = time.time()
    if during:
        during()
    time.sleep(max(0.0, seconds - (time.time() - since)))
    end = time.time()
    time.sleep(2)  # the audit log is written in batches of up to 1 s
    counts = kube.requests_by_pod(since, end, ns)
    return {pod: n / (end - since) for pod, n in sorted(counts.items())}


def _stat(pid: int) -> tuple[float, int]:
    """(CPU seconds so far, RSS bytes) of one process."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / TICK
    return cpu, int(fields[21]) * os.sysconf("SC_PAGE_SIZE")


def stack_pids(sandbox: Sandbox) -> dict[str, list[int]]:
    """The node stack's processes (kubelets, containerds with their shims, kube-proxies) and
    the control plane's, by kind; the containers' own processes are not the stack's."""
    ppids = parents()
    out: dict[str, list[int]] = {
        "control plane": [],
        "kubelet": [],
        "containerd + shims": [],
        "kube-proxy": [],
    }
    out["control plane"] = [p for p in sandbox.plane.running().values() if p]
    for s in sandbox.stacks:
        run = s.running()
        out["kubelet"] += [run["kubelet"]] if run["kubelet"] else []
        out["kube-proxy"] += [run["kube-proxy"]] if run["kube-proxy"] else []
        if run["containerd"]:
            out["containerd + shims"].append(run["containerd"])
    sockets = [str(s.node.containerd_socket) for s in sandbox.stacks]
    for pid in ppids:
        with contextlib.suppress(OSError):
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            if "containerd-shim-runc-v2" in cmd and any(sock in cmd for sock in sockets):
                out["containerd + shims"].append(pid)
    return out


def idle_cost(sandbox: Sandbox, seconds: float) -> dict:
    pids = stack_pids(sandbox)
    before = {p: _stat(p) for ps in pids.values() for p in ps}
    time.sleep(seconds)
    out = {}
    for kind, ps in pids.items():
        cpu = rss = 0.0
        for p in ps:
            with contextlib.suppress(OSError):
                c, r = _stat(p)
                cpu += c - before[p][0]
                rss += r
        out[kind] = {
            "processes": len(ps),
            "rss_mb": round(rss / 2**20),
            "cpu_percent": round(100 * cpu / seconds, 1),
        }
    return out


def failover(kube: Kube, c, group: int, fault, hold: float = 0) -> dict:
    dsn = c.coordinator_dsn()
    probe = start_writer(dsn, PROBE_TABLE)
    time.sleep(5)
    topo = c.status(with_shards=False)
    old = topo.leader(group).name
    t0 = time.monotonic()
    undo = fault(old)
    try:
        change = wait_leader_change(c, group, old, t0)
        # until a write goes through the new leader; the figures are reported either way
        with contextlib.suppress(WaitTimeout):
            until(
                lambda: probe.acked_at and probe.acked_at[-1] > t0 + change.seconds,
                60,
                0.2,
                "a write acknowledged by the new leader",
            )
        time.sleep(max(3.0, t0 + hold - time.monotonic()))
    finally:
        if callable(undo):  # a freeze thaws; a deleted pod or a lost node has nothing to undo
            undo()
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
    ap.add_argument("--out", default="bench-results/k8s-sandbox")
    ap.add_argument("--idle-seconds", type=float, default=60)
    args = ap.parse_args()
    reason = missing_reason()
    if reason:
        print(f"bench k8s: {reason}", file=sys.stderr)
        return 2
    spec = k8s_spec()
    ns = spec.kubernetes.namespace
    sandbox = Sandbox()
    out: dict = {
        "machine": f"{os.cpu_count()} cores",
        "spec": "3 coordinator members, 2 worker groups x 2",
    }
    print("sandbox down, then up from nothing ...", file=sys.stderr)
    sandbox.down()
    try:
        timings = sandbox.up(lambda m: print(f"  {m}", file=sys.stderr))
        out["sandbox_up_s"] = timings
        kube = Kube(sandbox, Path(tempfile.mkdtemp(prefix="citus-k8s-bench-")))
        print("applying the rendered manifests ...", file=sys.stderr)
        c, ready = bring_up(kube, spec)
        out["apply_to_ready_s"] = round(ready, 1)
        wait_ha(kube, c)
        print(f"ready in {ready:.1f} s; idle cost and API load ...", file=sys.stderr)
        out["idle_cost"] = idle_cost(sandbox, args.idle_seconds / 2)
        idle = rate(kube, ns, args.idle_seconds)
        during = rate(kube, ns, 30, during=lambda: c.switchover(1))
        out["api_requests_per_s"] = {"idle": idle, "switchover_window_30s": during}
        core = client.CoreV1Api(kube.api())
        print("deleting a worker leader pod under writes ...", file=sys.stderr)
        wait_ha(kube, c)
        out["worker_leader_pod_deleted"] = failover(
            kube, c, 1, lambda old: core.delete_namespaced_pod(old, ns)
        )
        print("freezing a worker leader's container under writes ...", file=sys.stderr)
        wait_ha(kube, c)
        injector = faults(kube, c)
        hold = 3 * spec.patroni.ttl

        def freeze(old):
            cm = injector.frozen(old)
            cm.__enter__()
            return lambda: cm.__exit__(None, None, None)

        out["worker_leader_container_frozen"] = failover(kube, c, 2, freeze, hold=hold)
        print("losing the coordinator leader's node under writes ...", file=sys.stderr)
        wait_ha(kube, c)
        lost: list[str] = []

        def lose(old):
            node = core.read_namespaced_pod(old, ns).spec.node_name
            lost.append(node)
            kube.lose_node(node)

        out["coordinator_node_lost"] = failover(kube, c, 0, lose)
        if lost:
            sandbox.revive_node(lost[0])
    except Exception:
        # what the cluster looked like when the bench gave up, before the sandbox goes
        from citus_pipeline.sandbox.addons import kubectl

        with contextlib.suppress(Exception):
            print(kubectl(sandbox.layout, "get", "pods", "-A", "-o", "wide"), file=sys.stderr)
            print(
                kubectl(sandbox.layout, "-n", ns, "get", "events", "--sort-by=.lastTimestamp"),
                file=sys.stderr,
            )
        raise
    finally:
        if not os.environ.get("CITUS_PIPELINE_KEEP_K8S"):
            sandbox.down()
    lines = [
        f"Kubernetes deployment on the sandbox: three real nodes ({out['machine']})",
        "sandbox up (images cached): "
        + ", ".join(f"{k} {v} s" for k, v in out["sandbox_up_s"].items()),
        f"apply -> every group led and registered: {out['apply_to_ready_s']} s",
    ]
    for name in (
        "worker_leader_pod_deleted",
        "worker_leader_container_frozen",
        "coordinator_node_lost",
    ):
        r = out[name]
        lines.append(
            f"{name.replace('_', ' ')}: new leader registered after {r['failover_s']} s, "
            f"longest write gap {r['max_write_gap_s']} s, {r['failed_inserts']} failed inserts, "
            f"{r['acknowledged']} acknowledged, {r['lost']} lost"
        )
    for kind, cost in out["idle_cost"].items():
        lines.append(
            f"idle {kind}: {cost['processes']} processes, {cost['rss_mb']} MB RSS, "
            f"{cost['cpu_percent']} % of a core"
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
