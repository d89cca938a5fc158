"""Fixtures of the `k8s` tests: the sandbox (a real three-node Kubernetes: kubelets, containerd
and runc running the images built from the Dockerfiles), and the project's HA Citus cluster
deployed on it from its own rendered manifests.

The sandbox is one for the session (`k8s sandbox up`, idempotent; taken down at the end when
the session started it); each test module gets its own cluster, its namespace deleted after.
The tests skip with one line where the sandbox cannot start (not root, the stack or buildah
missing) or where Citus is missing, like the other Citus tests.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from citus_pipeline.images.buildah import missing_reason as images_missing
from citus_pipeline.images.recipes import RECIPES
from citus_pipeline.sandbox.binaries import missing_reason as stack_missing
from citus_pipeline.sandbox.sandbox import Sandbox
from citus_pipeline.settings import REPO_ROOT

from .dagster_chart import REGISTRY_ID, REGISTRY_PLACEHOLDER
from .drills import Kube, bring_up, k8s_spec, tear_down


@pytest.fixture(scope="session")
def kube(require_citus) -> Iterator[Kube]:
    reason = stack_missing() or images_missing()
    if reason:
        pytest.skip(reason)
    sandbox = Sandbox()
    started_here = not sandbox.plane.running()["kube-apiserver"]
    workdir = Path(tempfile.mkdtemp(prefix="citus-k8s-"))
    try:
        try:
            sandbox.up(print)
        except Exception as e:
            # the logs go with the sandbox: keep them where the failure can be read
            kept = workdir / "sandbox-logs"
            shutil.copytree(sandbox.layout.root, kept, ignore=_not_logs, dirs_exist_ok=True)
            raise AssertionError(f"sandbox up failed: {e} (its logs: {kept})") from e
        yield Kube(sandbox, workdir)
    finally:
        if started_here and not os.environ.get("CITUS_PIPELINE_KEEP_K8S"):
            sandbox.down()


def _not_logs(directory: str, names: list[str]) -> list[str]:
    """shutil.copytree's ignore: everything but logs, the state file and directories (the
    containerd and kubelet roots are left out whole)."""
    skip = {"containerd", "kubelet", "runc", "volumes", "etcd", "pki"}
    return [
        n
        for n in names
        if n in skip
        or not (n.endswith((".log", ".json", ".yaml", ".toml")) or Path(directory, n).is_dir())
    ]


@pytest.fixture(scope="module")
def spec():
    return k8s_spec()


def _cluster(kube, spec, overlay_dir=None):
    c, _ = bring_up(kube, spec, overlay_dir=overlay_dir)
    os.environ["KUBECONFIG"] = str(kube.kubeconfig)
    try:
        yield c
    finally:
        os.environ.pop("PGPASSWORD", None)
        os.environ.pop("KUBECONFIG", None)
        tear_down(kube, spec)


@pytest.fixture(scope="module")
def cluster(kube, spec, require_citus):
    """The cluster from the rendered manifests, every group led and registered; the password
    and kubeconfig in the environment, as a user's shell gives them to the CLI and Dagster."""
    yield from _cluster(kube, spec)


@pytest.fixture(scope="module")
def overlay_cluster(kube, spec, require_citus, tmp_path_factory):
    """The same, deployed as README step 4 says for Yandex Cloud: `kubectl apply -k` of the
    yandex-cloud overlay on the rendered base (its StorageClass served by the sandbox's
    stand-in for Yandex's disk CSI driver)."""
    overlay = yaml.safe_load(
        (REPO_ROOT / "k8s/overlays/yandex-cloud/kustomization.yaml").read_text()
    )
    built = {r.reference().rsplit(":", 1)[0]: r for r in RECIPES}
    for image in overlay.get("images", []):
        # `skopeo copy ... docker://cr.yandex/<registry-id>/...` as README step 2 pushes it
        name = image["newName"].replace(REGISTRY_PLACEHOLDER, REGISTRY_ID)
        kube.sandbox.tag_image(built[image["name"]].reference(), f"{name}:{image['newTag']}")
    yield from _cluster(kube, spec, tmp_path_factory.mktemp("overlay"))
