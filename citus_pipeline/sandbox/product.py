"""What README step 3 has a user create before the first deploy, done for the sandbox: the
namespace, the members' passwords (a Secret), and their TLS certificate (a Secret, issued by
the sandbox's CA for every name `k8s tls-sans` lists, as `verify-full` needs). The passwords
also go to a libpq passfile beside the kubeconfig, for the CLI on this machine. Then the
deploy itself (the backend's `up`), and its removal, for what drives the sandbox from a
program (`bench faults --backend kubernetes`)."""

from __future__ import annotations

import base64
import json
import os
from typing import Any

from ..cluster.kubernetes import KubernetesCluster
from ..cluster.kubernetes import manifests as mf
from ..cluster.spec import ClusterSpec, spec_from_mapping
from ..cluster.topology import Progress
from ..pki import CA, write_private
from .addons import apply, kubectl
from .layout import Layout
from .spec import sandbox_spec

PASSWORD_KEYS = ("superuser-password", "replication-password", "restapi-password")


def passwords(layout: Layout) -> dict[str, str]:
    """The members' passwords, made once for the sandbox's life."""
    path = layout.root / "credentials.json"
    if path.exists():
        return json.loads(path.read_text())
    pw = {k: base64.urlsafe_b64encode(os.urandom(18)).decode() for k in PASSWORD_KEYS}
    write_private(path, json.dumps(pw).encode())
    return pw


def passfile(layout: Layout, spec: ClusterSpec) -> None:
    """`PGPASSFILE` for the superuser at any address of the sandbox (the load balancers')."""
    pw = passwords(layout)["superuser-password"]
    write_private(layout.passfile, f"*:*:*:{spec.credentials.superuser}:{pw}\n".encode())


def namespace_objects(layout: Layout, spec: ClusterSpec) -> list[dict[str, Any]]:
    ns = spec.kubernetes.namespace
    ca = CA.load_or_create(layout.pki, "citus-pipeline-sandbox-ca")
    crt, key = ca.issue("citus", dns=tuple(mf.tls_dns_names(spec)), server=True)
    return [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}},
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": spec.credentials.kubernetes_secret, "namespace": ns},
            "stringData": passwords(layout),
        },
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": spec.kubernetes.tls_secret, "namespace": ns},
            "stringData": {
                "tls.crt": crt.decode(),
                "tls.key": key.decode(),
                "ca.crt": ca.pem.decode(),
            },
        },
    ]


def prepare(layout: Layout) -> ClusterSpec:
    """The namespace and Secrets of the sandbox's spec (kept when they exist: a certificate
    re-issued under running members would be a rotation, not a setup)."""

    spec = spec_from_mapping(sandbox_spec())
    ns = spec.kubernetes.namespace
    out = kubectl(layout, "get", "secrets", "-n", ns, "-o", "name", "--ignore-not-found")
    have = set(out.split())
    wanted = namespace_objects(layout, spec)
    apply(
        layout,
        [
            o
            for o in wanted
            if o["kind"] != "Secret" or f"secret/{o['metadata']['name']}" not in have
        ],
    )
    passfile(layout, spec)
    return spec


def deploy(
    layout: Layout, progress: Progress | None = None, timeout: float = 900
) -> KubernetesCluster:
    """The sandbox's spec deployed and every group led (`cluster up --backend kubernetes`);
    this process then talks to it as the README's shell does: the sandbox's kubeconfig and
    passfile in its environment."""
    ns = spec_from_mapping(sandbox_spec()).kubernetes.namespace
    phase = kubectl(
        layout, "get", "namespace", ns, "--ignore-not-found", "-o", "jsonpath={.status.phase}"
    )
    if phase.strip() == "Terminating":
        # the last run's cluster still going: a namespace being deleted takes no new objects
        kubectl(layout, "wait", "--for=delete", f"namespace/{ns}", f"--timeout={int(timeout)}s")
    spec = prepare(layout)
    os.environ["KUBECONFIG"] = str(layout.kubeconfig)
    os.environ["PGPASSFILE"] = str(layout.passfile)
    cluster = KubernetesCluster(spec)
    cluster.up(progress, timeout)
    return cluster


def undeploy(layout: Layout, spec: ClusterSpec, timeout: int = 300) -> None:
    """The cluster's namespace deleted, and gone (its volumes with their claims)."""
    ns = spec.kubernetes.namespace
    kubectl(layout, "delete", "namespace", ns, "--ignore-not-found", f"--timeout={timeout}s")
