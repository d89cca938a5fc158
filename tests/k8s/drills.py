"""Test-only steps of the `k8s` tests and their bench: the sandbox as the tests use it, the
test spec (the sandbox's), the namespace's Secrets, the cluster from the rendered manifests,
and the library's drills (``citus_pipeline.drills``) given the sandbox's way to reach a pod's
processes (to freeze them) and to lose a node."""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
from kubernetes import client, config

from citus_pipeline import drills
from citus_pipeline.cluster import health
from citus_pipeline.cluster.kubernetes import KubernetesCluster
from citus_pipeline.cluster.kubernetes import manifests as mf
from citus_pipeline.cluster.kubernetes.manifests.files import write_rendered
from citus_pipeline.cluster.spec import ClusterSpec, spec_from_mapping
from citus_pipeline.drills.kubernetes import KubernetesFaults
from citus_pipeline.images.debian_base import BASE_REFERENCE
from citus_pipeline.sandbox import binaries
from citus_pipeline.sandbox.product import passwords, prepare
from citus_pipeline.sandbox.sandbox import Sandbox
from citus_pipeline.sandbox.spec import sandbox_spec
from citus_pipeline.settings import REPO_ROOT
from citus_pipeline.waiting import until

from .dagster_chart import REGISTRY_ID, REGISTRY_PLACEHOLDER

REPO = REPO_ROOT


@dataclass
class Kube:
    sandbox: Sandbox
    workdir: Path

    @property
    def kubeconfig(self) -> Path:
        return self.sandbox.layout.kubeconfig

    @property
    def api_url(self) -> str:
        return self.sandbox.layout.api_url

    @property
    def ca_file(self) -> Path:
        return self.sandbox.plane.ca_file

    def api(self) -> client.ApiClient:
        return config.new_client_from_config(str(self.kubeconfig))

    def container_log(self, namespace: str, pod: str, container: str) -> str:
        """The container's log as the kubelet serves it (`kubectl logs`)."""
        core = client.CoreV1Api(self.api())
        try:
            return core.read_namespaced_pod_log(pod, namespace, container=container)
        except client.ApiException as e:
            return f"(no log: {e.status} {e.reason})"

    def pod_names(self) -> list[tuple[str, str]]:
        pods = client.CoreV1Api(self.api()).list_pod_for_all_namespaces().items
        return [(p.metadata.namespace, p.metadata.name) for p in pods]

    def lose_node(self, node: str) -> list[int]:
        return self.sandbox.lose_node(node)

    def requests_by_pod(self, since: float, until_t: float, namespace: str) -> dict[str, int]:
        """Requests made with the tokens bound to each pod of ``namespace`` between two
        wall-clock times (seconds since the epoch), from the apiserver's audit log."""
        counts: dict[str, int] = {}
        prefix = f"system:serviceaccount:{namespace}:"
        with open(self.sandbox.plane.audit_log) as f:
            for line in f:
                ev = json.loads(line)
                user = ev.get("user") or {}
                if not user.get("username", "").startswith(prefix):
                    continue
                t = dt.datetime.fromisoformat(ev["requestReceivedTimestamp"]).timestamp()
                if since <= t < until_t:
                    extra = user.get("extra") or {}
                    pod = (extra.get("authentication.kubernetes.io/pod-name") or ["?"])[0]
                    counts[pod] = counts.get(pod, 0) + 1
        return counts


def probe_ports(
    kube: Kube,
    namespace: str,
    address: str,
    ports: tuple[int, ...],
    settle: tuple[int, ...] = (),
) -> dict[int, bool]:
    """Whether a pod of ``namespace`` can open a TCP connection to ``address`` on each port
    (a pod of the Debian base image, bash's /dev/tcp, 3 s each). The ports of ``settle``
    are tried ten times, a second apart, before they count as closed: a new pod's address reaches
    the allowing policy's ipsets only once kube-router has synced it (a lag, never a
    wrong admit, so the ports expected closed are tried once)."""
    core = client.CoreV1Api(kube.api())
    name = f"port-probe-{int(time.time() * 1000) % 10**8}"

    def attempt(p: int) -> str:
        once = f"timeout 3 bash -c '</dev/tcp/{address}/{p}' 2>/dev/null"
        if p not in settle:
            return once
        return f"( for i in $(seq 10); do {once} && exit 0; sleep 1; done; exit 1 )"

    script = "; ".join(
        f"if {attempt(p)}; then echo {p}=open; else echo {p}=closed; fi" for p in ports
    )
    core.create_namespaced_pod(
        namespace,
        {
            "metadata": {"name": name},
            "spec": {
                "restartPolicy": "Never",
                "containers": [
                    {
                        "name": "probe",
                        "image": BASE_REFERENCE,
                        "imagePullPolicy": "Never",
                        "command": ["bash", "-c", script],
                        "securityContext": {"runAsUser": 65534, "allowPrivilegeEscalation": False},
                    }
                ],
            },
        },
    )
    until(
        lambda: core.read_namespaced_pod(name, namespace).status.phase,
        120,
        1,
        f"pod {namespace}/{name} to finish",
        done=lambda phase: phase in ("Succeeded", "Failed"),
    )
    log = core.read_namespaced_pod_log(name, namespace)
    core.delete_namespaced_pod(name, namespace, grace_period_seconds=0)
    found = dict(re.findall(r"\b(\d+)=(open|closed)\b", log))
    return {p: found.get(str(p)) == "open" for p in ports}


def ensure_namespace(kube: Kube, name: str) -> None:
    core = client.CoreV1Api(kube.api())
    try:
        core.create_namespace({"metadata": {"name": name}})
    except client.ApiException as e:
        if e.status != 409:
            raise


def kubectl() -> Path | None:
    exe = binaries.bin_dir() / "kubectl"
    return exe if os.access(exe, os.X_OK) else None


# The sandbox's spec: small requests, the local-path StorageClass, archiving off (no S3 here).
K8S_SPEC: dict[str, Any] = sandbox_spec()


def k8s_spec() -> ClusterSpec:
    return spec_from_mapping(K8S_SPEC)


def write_spec(path: Path) -> Path:
    """The test spec as a file, for the CLI (``--spec``)."""
    import yaml

    path.write_text(yaml.safe_dump(K8S_SPEC))
    return path


def tear_down(kube: Kube, spec: ClusterSpec, timeout: float = 180) -> None:
    """The cluster's namespace (and the Dagster one) deleted, and gone: its volumes are
    deleted with their claims, and the next module starts from nothing."""
    core = client.CoreV1Api(kube.api())
    names = (spec.kubernetes.namespace, spec.kubernetes.dagster_namespace)
    for ns in names:
        try:
            core.delete_namespace(ns)
        except client.ApiException as e:
            if e.status != 404:
                raise
    live = {n.metadata.name for n in core.list_namespace().items}
    until(
        lambda: {n.metadata.name for n in core.list_namespace().items} & set(names),
        timeout,
        2,
        f"namespaces {sorted(set(names) & live)} to be deleted",
        done=lambda left: not left,
    )


def wait_registered(cluster: Any, groups: range, timeout: float = 300) -> Any:
    """The topology once every group has a leader and an active primary in pg_dist_node
    (reached through the coordinator's load balancer)."""
    return until(
        lambda: cluster.status(with_shards=False),
        timeout,
        2,
        f"every group of {list(groups)} led and registered",
        done=lambda topo: not health.unregistered_groups(topo, groups),
    )


def faults(kube: Kube, cluster: KubernetesCluster) -> KubernetesFaults:
    """The Kubernetes fault injector, freezing a pod's processes as its node's containerd
    lists them (the real kubelet's liveness probe then kills the container)."""
    return KubernetesFaults(cluster, pod_processes=kube.sandbox.pod_processes)


def wait_ha(kube: Kube, cluster: KubernetesCluster, timeout: float = 240) -> Any:
    """The topology once every member is Ready and every group streams to a synchronous
    standby (``drills.wait_ha``), and Citus's metadata is synced to every worker again:
    after a leader change the coordinator re-syncs it in the background, and until then
    Citus refuses DDL such as a writer's probe table ("is a metadata node, but is out of
    sync")."""
    topo = drills.wait_ha(cluster, faults(kube, cluster), timeout)

    def synced() -> bool:
        with psycopg.connect(cluster.coordinator_dsn(), connect_timeout=5) as conn:
            return conn.execute(
                "SELECT coalesce(bool_and(metadatasynced), true) FROM pg_dist_node "
                "WHERE hasmetadata AND isactive AND noderole = 'primary'"
            ).fetchone()[0]

    until(synced, timeout, 2, "Citus's metadata synced to every worker", ignore=(psycopg.Error,))
    return topo


PROBE_TABLE = "k8s_write_probe"


def backend_as(spec: ClusterSpec, api: client.ApiClient) -> KubernetesCluster:
    """The Kubernetes backend talking to the API with ``api``'s credentials."""
    return KubernetesCluster(
        spec,
        core_api=client.CoreV1Api(api),
        apps_api=client.AppsV1Api(api),
        policy_api=client.PolicyV1Api(api),
    )


def apply_overlay(kube: Kube, spec: ClusterSpec, workdir: Path) -> None:
    """README step 4 with the yandex-cloud overlay: the spec rendered as the base the overlay
    points at (``../../base``), the overlay copied beside it unchanged, then ``kubectl apply
    -k`` (client-side, as the README says)."""
    exe = kubectl()
    if exe is None:
        raise AssertionError("kubectl not built: run scripts/k8s-control-plane.sh")
    root = workdir / "k8s"
    write_rendered(spec, root / "base")
    overlay = root / "overlays" / "yandex-cloud"
    shutil.copytree(REPO / "k8s" / "overlays" / "yandex-cloud", overlay)
    # what README step 4 asks: the user's registry id in place of the placeholder
    kustomization = overlay / "kustomization.yaml"
    kustomization.write_text(kustomization.read_text().replace(REGISTRY_PLACEHOLDER, REGISTRY_ID))
    r = subprocess.run(
        [str(exe), "apply", "-k", str(overlay)],
        env={**os.environ, "KUBECONFIG": str(kube.kubeconfig)},
        capture_output=True,
        text=True,
        check=False,
    )
    assert r.returncode == 0, f"kubectl apply -k: {r.stderr.strip()}"


def bring_up(
    kube: Kube, spec: ClusterSpec, timeout: float = 600, overlay_dir: Path | None = None
) -> tuple[KubernetesCluster, float]:
    """Apply the rendered manifests (``citus-pipeline k8s apply``, through the backend), or the
    yandex-cloud overlay on them (``kubectl apply -k``) when ``overlay_dir`` is given; returns
    the backend and the seconds until every group had a leader and was registered in
    pg_dist_node."""
    prepare(kube.sandbox.layout)
    # the backend takes the password from libpq's environment, as a user's shell gives it
    os.environ["PGPASSWORD"] = passwords(kube.sandbox.layout)["superuser-password"]
    c = backend_as(spec, kube.api())
    started = time.monotonic()
    if overlay_dir is None:
        c.up(timeout=timeout)
    else:
        apply_overlay(kube, spec, overlay_dir)
    wait_registered(c, range(spec.workers.groups + 1), timeout)
    return c, time.monotonic() - started


def group_pods(kube, spec, group: int) -> list:
    """The pods of one Citus group."""
    core = client.CoreV1Api(kube.api())
    sel = f"{mf.GROUP_LABEL}={group},cluster-name={spec.name}"
    return core.list_namespaced_pod(spec.kubernetes.namespace, label_selector=sel).items


def wait_members_ready(kube, spec, group: int, timeout: float) -> None:
    """Until every member of ``group`` is Ready (its pod's condition, from the probe)."""
    ready = KubernetesFaults(backend_as(spec, kube.api())).members_ready
    until(lambda: ready(group), timeout, 2, f"group {group}: every member ready")
