"""What the manifest tests (test_k8s_*.py) share: the committed spec, the Kubernetes version
the base is validated against, and lookups into rendered objects."""

from __future__ import annotations

from pathlib import Path

from citus_pipeline.cluster.spec import ClusterSpec, load_spec

REPO = Path(__file__).resolve().parents[2]
K8S_VERSION = "1.30"  # pinned: the version the base is validated against (kubernetes.api_version)


def committed_spec() -> ClusterSpec:
    """The spec the committed base (k8s/base) is rendered from."""
    return load_spec(REPO / "cluster.yaml")


def by_kind(objs, kind):
    return {o["metadata"]["name"]: o for o in objs if o["kind"] == kind}


def env_of(sts) -> dict[str, dict]:
    c = sts["spec"]["template"]["spec"]["containers"][0]
    return {e["name"]: e for e in c["env"]}
