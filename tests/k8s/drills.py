"""Test-only steps of the `k8s` tests and their bench: the test spec, the namespace's Secrets
and StorageClass, the cluster from the rendered manifests, and the library's drills
(``citus_pipeline.drills``) given this control plane's pod runner, whose pods' processes can
be frozen."""

from __future__ import annotations

import base64
import os
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client, config

from citus_pipeline import drills
from citus_pipeline.cluster import health
from citus_pipeline.cluster.kubernetes import KubernetesCluster
from citus_pipeline.cluster.kubernetes import manifests as mf
from citus_pipeline.cluster.kubernetes.manifests.files import write_rendered
from citus_pipeline.cluster.spec import ClusterSpec, spec_from_mapping
from citus_pipeline.drills.kubernetes import KubernetesFaults
from citus_pipeline.waiting import until

from .control_plane import CA, ControlPlane, kubectl
from .images import REPO
from .network import PodNetwork
from .pod_runner import PROVISIONER, PodRunner


@dataclass
class Kube:
    plane: ControlPlane
    runner: PodRunner
    network: PodNetwork
    workdir: Path

    @property
    def kubeconfig(self) -> Path:
        return self.plane.kubeconfig

    def api(self) -> client.ApiClient:
        return config.new_client_from_config(str(self.kubeconfig))


SMALL = {"cpu": "200m", "memory": "1Gi", "memory_limit": "2Gi"}
# The default spec, sized for three test nodes sharing two cores, archiving off (no S3 here).
K8S_SPEC: dict[str, Any] = {
    "backup": {"archiving": False},
    "kubernetes": {
        "coordinator_resources": SMALL,
        "worker_resources": SMALL,
        "termination_grace_period_seconds": 30,
    },
}


def k8s_spec() -> ClusterSpec:
    return spec_from_mapping(K8S_SPEC)


def write_spec(path: Path) -> Path:
    """The test spec as a file, for the CLI (``--spec``)."""
    path.write_text(yaml.safe_dump(K8S_SPEC))
    return path


def prepare_namespace(kube: Kube, spec: ClusterSpec, storage_class: bool = True) -> dict[str, str]:
    """What the README's step 3 (Secrets) provides, and the StorageClass the base names (the
    overlay brings its own); returns the passwords."""
    core = client.CoreV1Api(kube.api())
    ns = spec.kubernetes.namespace
    core.create_namespace({"metadata": {"name": ns}})
    pw = {
        k: base64.b64encode(os.urandom(18)).decode()
        for k in ("superuser-password", "replication-password", "restapi-password")
    }
    core.create_namespaced_secret(
        ns,
        {
            "metadata": {"name": spec.credentials.kubernetes_secret},
            "stringData": pw,
        },
    )
    ca = CA.create("citus-ca")
    crt, key = ca.issue("citus", dns=tuple(mf.tls_dns_names(spec)), server=True)
    core.create_namespaced_secret(
        ns,
        {
            "metadata": {"name": spec.kubernetes.tls_secret},
            "stringData": {
                "tls.crt": crt.decode(),
                "tls.key": key.decode(),
                "ca.crt": ca.pem.decode(),
            },
        },
    )
    if not storage_class:
        return pw
    client.StorageV1Api(kube.api()).create_storage_class(
        {
            "metadata": {"name": spec.kubernetes.storage_class},
            "provisioner": PROVISIONER,
            "reclaimPolicy": "Delete",
            "volumeBindingMode": "WaitForFirstConsumer",
        }
    )
    return pw


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
    """The Kubernetes fault injector, freezing pods through the pod runner (a kubelet of this
    control plane's own, whose containers are processes here)."""
    return KubernetesFaults(cluster, pod_processes=kube.runner.pod_processes)


def wait_ha(kube: Kube, cluster: KubernetesCluster, timeout: float = 240) -> Any:
    """The topology once every member is Ready and every group streams to a synchronous
    standby (``drills.wait_ha``)."""
    return drills.wait_ha(cluster, faults(kube, cluster), timeout)


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
    passwords = prepare_namespace(kube, spec, storage_class=overlay_dir is None)
    # the backend takes the password from libpq's environment, as a user's shell gives it
    os.environ["PGPASSWORD"] = passwords["superuser-password"]
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
