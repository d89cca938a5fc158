"""What a cluster needs beyond its nodes, each a maintained implementation: CoreDNS for the
Services' names (the headless names Patroni and TLS use), Rancher's local-path-provisioner for
PersistentVolumes (what kind ships), MetalLB in L2 mode for LoadBalancer Services (addresses on
the node network, announced by ARP), kube-router's firewall controller for NetworkPolicies. MetalLB's and the provisioner's own manifests are applied
(from their modules, saved beside the binaries by scripts/k8s-control-plane.sh) with only the
image names, the node paths and the address pool changed; CoreDNS's is written here.
"""

from __future__ import annotations

import json
import subprocess
from typing import Any

import yaml

from ..errors import SandboxError
from ..images.debian_base import BASE_REFERENCE
from . import binaries
from .images import COREDNS, KUBE_ROUTER, LOCAL_PATH, METALLB, reference
from .layout import CLUSTER_DOMAIN, DNS_SERVICE_IP, LB_RANGE, Layout

METALLB_NAMESPACE = "metallb-system"
YANDEX_DISK_CSI = "disk-csi-driver.mks.ycloud.io"
STORAGE_CLASS = "local-path"
DNS_PORT = 1053


def kubectl(layout: Layout, *args: str, stdin: str | None = None) -> str:
    argv = [binaries.exe("kubectl"), f"--kubeconfig={layout.kubeconfig}", *args]
    proc = subprocess.run(argv, check=False, input=stdin, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SandboxError(f"kubectl {' '.join(args[:3])}: {proc.stderr.strip()[-600:]}")
    return proc.stdout


def apply(layout: Layout, docs: list[dict[str, Any]]) -> None:
    kubectl(
        layout,
        "apply",
        "--server-side",
        "--force-conflicts",
        "--field-manager=citus-pipeline-sandbox",
        "-f",
        "-",
        stdin=yaml.safe_dump_all(docs),
    )


def cluster_identity(
    account: str, namespace: str, role: str, rules: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """A ServiceAccount, a ClusterRole with ``rules`` and the binding between them: what an
    add-on that reads the whole cluster runs as."""
    rbac = "rbac.authorization.k8s.io"
    return [
        {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": {"name": account, "namespace": namespace},
        },
        {
            "apiVersion": f"{rbac}/v1",
            "kind": "ClusterRole",
            "metadata": {"name": role},
            "rules": rules,
        },
        {
            "apiVersion": f"{rbac}/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": role},
            "roleRef": {"apiGroup": rbac, "kind": "ClusterRole", "name": role},
            "subjects": [{"kind": "ServiceAccount", "name": account, "namespace": namespace}],
        },
    ]


def coredns() -> list[dict[str, Any]]:
    ns, labels = "kube-system", {"k8s-app": "kube-dns"}
    corefile = f"""\
.:{DNS_PORT} {{
    errors
    health :8080
    ready :8181
    kubernetes {CLUSTER_DOMAIN} in-addr.arpa ip6.arpa {{
        pods insecure
        fallthrough in-addr.arpa ip6.arpa
        ttl 5
    }}
    cache 5
    loop
    reload
    loadbalance
}}
"""
    container = {
        "name": "coredns",
        "image": reference(COREDNS),
        "imagePullPolicy": "Never",
        "args": ["-conf", "/etc/coredns/Corefile"],
        "ports": [
            {"name": "dns", "containerPort": DNS_PORT, "protocol": "UDP"},
            {"name": "dns-tcp", "containerPort": DNS_PORT, "protocol": "TCP"},
        ],
        "readinessProbe": {"httpGet": {"path": "/ready", "port": 8181}, "periodSeconds": 2},
        "livenessProbe": {"httpGet": {"path": "/health", "port": 8080}, "periodSeconds": 10},
        "resources": {"requests": {"cpu": "10m", "memory": "32Mi"}, "limits": {"memory": "128Mi"}},
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
        },
        "volumeMounts": [{"name": "config", "mountPath": "/etc/coredns", "readOnly": True}],
    }
    rules = [
        {
            "apiGroups": [""],
            "resources": ["endpoints", "services", "pods", "namespaces"],
            "verbs": ["list", "watch"],
        },
        {
            "apiGroups": ["discovery.k8s.io"],
            "resources": ["endpointslices"],
            "verbs": ["list", "watch"],
        },
    ]
    return [
        *cluster_identity("coredns", ns, "system:coredns", rules),
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "coredns", "namespace": ns},
            "data": {"Corefile": corefile},
        },
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "coredns", "namespace": ns, "labels": labels},
            "spec": {
                "replicas": 2,  # a lost node must not take the cluster's names with it
                "selector": {"matchLabels": labels},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {
                        "serviceAccountName": "coredns",
                        "priorityClassName": "system-cluster-critical",
                        "dnsPolicy": "Default",
                        "securityContext": {"runAsNonRoot": True},
                        "affinity": {
                            "podAntiAffinity": {
                                "requiredDuringSchedulingIgnoredDuringExecution": [
                                    {
                                        "labelSelector": {"matchLabels": labels},
                                        "topologyKey": "kubernetes.io/hostname",
                                    }
                                ]
                            }
                        },
                        "tolerations": [
                            {
                                "key": "node.kubernetes.io/unreachable",
                                "operator": "Exists",
                                "effect": "NoExecute",
                                "tolerationSeconds": 10,
                            }
                        ],
                        "containers": [container],
                        "volumes": [{"name": "config", "configMap": {"name": "coredns"}}],
                    },
                },
            },
        },
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "kube-dns", "namespace": ns, "labels": labels},
            "spec": {
                "clusterIP": DNS_SERVICE_IP,
                "selector": labels,
                "ports": [
                    {"name": "dns", "port": 53, "targetPort": DNS_PORT, "protocol": "UDP"},
                    {"name": "dns-tcp", "port": 53, "targetPort": DNS_PORT, "protocol": "TCP"},
                ],
            },
        },
    ]


def _upstream(name: str) -> list[dict[str, Any]]:
    path = binaries.bin_dir() / name
    if not path.exists():
        raise SandboxError(f"{path} is missing: run {binaries.BUILD_SCRIPT}")
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def _containers(doc: dict[str, Any]) -> list[dict[str, Any]]:
    spec = doc.get("spec", {}).get("template", {}).get("spec", {})
    return spec.get("containers", [])


def local_path(layout: Layout) -> list[dict[str, Any]]:
    docs = _upstream("local-path-storage.yaml")
    node_paths = [{"node": n.name, "paths": [str(n.volumes)]} for n in layout.nodes]
    for d in docs:
        for c in _containers(d):
            c["image"], c["imagePullPolicy"] = reference(LOCAL_PATH), "Never"
        if d["kind"] == "StorageClass":
            # `local` volumes, not hostPath ones: the kubelet applies a pod's fsGroup to a
            # local volume (as to a cloud disk), never to a hostPath
            d["metadata"].setdefault("annotations", {})["defaultVolumeType"] = "local"
        if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "local-path-config":
            d["data"]["config.json"] = json.dumps({"nodePathMap": node_paths})
            helper = yaml.safe_load(d["data"]["helperPod.yaml"])
            for c in helper["spec"]["containers"]:
                # the Debian base of the images: a shell, mkdir and rm are all the helper runs
                c["image"], c["imagePullPolicy"] = BASE_REFERENCE, "Never"
            d["data"]["helperPod.yaml"] = yaml.safe_dump(helper)
    return docs


def yandex_disk_standin(layout: Layout) -> list[dict[str, Any]]:
    """The one stand-in for the cloud: Yandex's disk CSI driver (what the yandex-cloud overlay's
    StorageClass names) served by a second local-path-provisioner under that provisioner name,
    so the overlay applies unchanged; its volumes are local directories, not network disks."""
    docs = local_path(layout)
    (deployment,) = [d for d in docs if d["kind"] == "Deployment"]
    deployment["metadata"]["name"] = "yandex-disk-csi-standin"
    labels = {"app": "yandex-disk-csi-standin"}
    deployment["spec"]["selector"]["matchLabels"] = labels
    deployment["spec"]["template"]["metadata"]["labels"] = labels
    (c,) = _containers(deployment)
    c["command"] = [*c["command"], f"--provisioner-name={YANDEX_DISK_CSI}"]  # a flag of `start`
    return [deployment]


def metallb() -> list[dict[str, Any]]:
    docs = _upstream("metallb-native.yaml")
    for d in docs:
        for c in _containers(d):
            role = "speaker" if c["name"] == "speaker" else "controller"
            c["image"], c["imagePullPolicy"] = reference(METALLB), "Never"
            c["command"] = [f"/{role}"]
            if role == "speaker":
                # raw sockets for ARP: root with NET_RAW and nothing else, as upstream's image
                # (whose default user is root) runs it
                c.setdefault("securityContext", {})["runAsUser"] = 0
    return docs


def kube_router() -> list[dict[str, Any]]:
    """kube-router's firewall controller alone (no routing, no service proxy: the nodes'
    routes and kube-proxy do those): each node's NetworkPolicies as iptables rules and ipsets
    in the node's network namespace, where its pods' traffic passes."""
    ns, labels = "kube-system", {"k8s-app": "kube-router"}
    read = ["get", "list", "watch"]
    container = {
        "name": "kube-router",
        "image": reference(KUBE_ROUTER),
        "imagePullPolicy": "Never",
        "args": [
            "--run-firewall=true",
            "--run-router=false",
            "--run-service-proxy=false",
            "--hostname-override=$(NODE_NAME)",
            "--health-port=20244",
        ],
        "env": [{"name": "NODE_NAME", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}}],
        "securityContext": {"privileged": True, "runAsUser": 0},
        "livenessProbe": {"httpGet": {"path": "/healthz", "port": 20244}, "periodSeconds": 10},
        "resources": {"requests": {"cpu": "10m", "memory": "32Mi"}},
        "volumeMounts": [{"name": "xtables-lock", "mountPath": "/run/xtables.lock"}],
    }
    rules = [
        {
            "apiGroups": [""],
            "resources": ["namespaces", "pods", "services", "nodes", "endpoints"],
            "verbs": read,
        },
        {"apiGroups": ["networking.k8s.io"], "resources": ["networkpolicies"], "verbs": read},
        {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": read},
        {
            "apiGroups": ["coordination.k8s.io"],
            "resources": ["leases"],
            "verbs": ["get", "create", "update"],
        },
    ]
    return [
        *cluster_identity("kube-router", ns, "kube-router", rules),
        {
            "apiVersion": "apps/v1",
            "kind": "DaemonSet",
            "metadata": {"name": "kube-router", "namespace": ns, "labels": labels},
            "spec": {
                "selector": {"matchLabels": labels},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {
                        "serviceAccountName": "kube-router",
                        "priorityClassName": "system-node-critical",
                        "hostNetwork": True,
                        "tolerations": [{"operator": "Exists"}],
                        "containers": [container],
                        "volumes": [
                            {
                                "name": "xtables-lock",
                                "hostPath": {"path": "/run/xtables.lock", "type": "FileOrCreate"},
                            }
                        ],
                    },
                },
            },
        },
    ]


def metallb_pool() -> list[dict[str, Any]]:
    meta = {"name": "sandbox", "namespace": METALLB_NAMESPACE}
    return [
        {
            "apiVersion": "metallb.io/v1beta1",
            "kind": "IPAddressPool",
            "metadata": meta,
            "spec": {"addresses": [f"{LB_RANGE[0]}-{LB_RANGE[1]}"]},
        },
        {
            "apiVersion": "metallb.io/v1beta1",
            "kind": "L2Advertisement",
            "metadata": meta,
            "spec": {"ipAddressPools": ["sandbox"]},
        },
    ]


def rollout(layout: Layout, namespace: str, kind_name: str, timeout: float = 300) -> None:
    kubectl(layout, "-n", namespace, "rollout", "status", kind_name, f"--timeout={int(timeout)}s")


def install(layout: Layout, log) -> None:
    apply(layout, coredns())
    apply(layout, local_path(layout))
    apply(layout, yandex_disk_standin(layout))
    apply(layout, metallb())
    apply(layout, kube_router())
    for ns, what in (
        ("kube-system", "deployment/coredns"),
        ("local-path-storage", "deployment/local-path-provisioner"),
        ("local-path-storage", "deployment/yandex-disk-csi-standin"),
        (METALLB_NAMESPACE, "deployment/controller"),
        (METALLB_NAMESPACE, "daemonset/speaker"),
        ("kube-system", "daemonset/kube-router"),
    ):
        rollout(layout, ns, what)
        log(f"{ns}/{what} ready")
    apply(layout, metallb_pool())  # its CRDs are served once the controller runs


__all__ = ["STORAGE_CLASS", "install", "kubectl"]
