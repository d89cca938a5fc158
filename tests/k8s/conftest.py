"""Fixtures of the `k8s` tests: a real control plane with the pod runner and three nodes, and
the project's HA Citus cluster applied to it from its own rendered manifests.

Each test module that breaks things gets its own control plane (module scope). The tests
skip with one line where the control plane was not built (scripts/k8s-control-plane.sh) or
where Citus is missing, like the other Citus tests.
"""

from __future__ import annotations

import base64
import os
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client, config

from citus_pipeline.cluster import manifests as mf
from citus_pipeline.cluster.spec import ClusterSpec, spec_from_mapping

from .control_plane import CA, ControlPlane, missing_reason
from .network import PodNetwork
from .pod_runner import PROVISIONER, PodRunner, cleanup_dir

pytestmark = pytest.mark.k8s


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


@pytest.fixture(scope="module")
def kube() -> Iterator[Kube]:
    reason = missing_reason()
    if reason:
        pytest.skip(reason)
    workdir = Path(tempfile.mkdtemp(prefix="citus-k8s-"))
    workdir.chmod(0o755)
    network = PodNetwork().up()
    plane = ControlPlane(workdir / "control-plane", network.gateway)
    runner = None
    try:
        plane.start()
        runner = PodRunner(plane.kubeconfig, workdir / "runner", network).start()
        yield Kube(plane, runner, network, workdir)
    finally:
        if runner is not None:
            runner.stop()
        plane.stop()
        network.down()
        if not os.environ.get("CITUS_PIPELINE_KEEP_K8S"):
            cleanup_dir(workdir)


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


def prepare_namespace(kube: Kube, spec: ClusterSpec) -> dict[str, str]:
    """What the README's steps 3 (Secrets) and the overlay's StorageClass provide; returns
    the passwords."""
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
    deadline = time.monotonic() + timeout
    topo = None
    while time.monotonic() < deadline:
        topo = cluster.status(with_shards=False)
        leaders = all(topo.leader(g) is not None for g in groups)
        active = {n.groupid for n in topo.dist_nodes if n.active and n.role == "primary"}
        if leaders and active >= set(groups):
            return topo
        time.sleep(2)
    raise AssertionError(f"not every group registered after {timeout:.0f}s: {topo}")
