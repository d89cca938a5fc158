"""Fixtures of the `k8s` tests: a real control plane with the pod runner and three nodes, and
the project's HA Citus cluster applied to it from its own rendered manifests.

Each test module gets its own control plane and cluster (module scope). The tests skip with
one line where the control plane was not built (scripts/k8s-control-plane.sh), where the
machine cannot make namespaces, or where Citus is missing, like the other Citus tests.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from .control_plane import ControlPlane, kubectl, missing_reason
from .drills import Kube, bring_up, k8s_spec
from .network import PodNetwork
from .pod_runner import PodRunner, cleanup_dir


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


@pytest.fixture(scope="module")
def spec():
    return k8s_spec()


def _cluster(kube, spec, overlay_dir=None):
    c, _ = bring_up(kube, spec, overlay_dir=overlay_dir)
    os.environ["KUBECONFIG"] = str(kube.kubeconfig)
    yield c
    os.environ.pop("PGPASSWORD", None)
    os.environ.pop("KUBECONFIG", None)


@pytest.fixture(scope="module")
def cluster(kube, spec, require_citus):
    """The cluster from the rendered manifests, every group led and registered; the password
    and kubeconfig in the environment, as a user's shell gives them to the CLI and Dagster."""
    yield from _cluster(kube, spec)


@pytest.fixture(scope="module")
def overlay_cluster(kube, spec, require_citus, tmp_path_factory):
    """The same, deployed as README step 4 says for Yandex Cloud: `kubectl apply -k` of the
    yandex-cloud overlay on the rendered base (the runner serves its CSI StorageClass)."""
    if kubectl() is None:
        pytest.skip("kubectl not built: run scripts/k8s-control-plane.sh")
    yield from _cluster(kube, spec, tmp_path_factory.mktemp("overlay"))
