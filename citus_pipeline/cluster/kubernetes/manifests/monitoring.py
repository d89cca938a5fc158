"""Metrics on Kubernetes: the exporter sidecar of every member, its queries, and how Prometheus
finds the pods (``prometheus.io`` annotations; a PodMonitor for the Prometheus operator).

The sidecar runs the same exporter release, arguments and queries as the local backend's
exporters (``cluster/metrics.py``), which the tests scrape for real.
"""

from __future__ import annotations

from ...metrics import EXPORTER_ARGS, exporter_queries_yaml
from ...spec import ClusterSpec
from .names import (
    EXPORTER_PORT,
    EXPORTER_QUERIES_MOUNT,
    GROUP_LABEL,
    IMAGE_UID,
    POSTGRES_PORT,
    RESTAPI_PORT,
    ROLE_LABEL,
    SCOPE_LABEL,
    SECRET_KEYS,
    Manifest,
    base_labels,
    container_security,
    exporter_queries_name,
    object_meta,
)

QUERIES_KEY = "queries.yaml"


def exporter_queries_configmap(spec: ClusterSpec) -> Manifest:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": object_meta(spec, exporter_queries_name(spec), base_labels(spec)),
        "data": {QUERIES_KEY: exporter_queries_yaml()},
    }


def exporter_container(spec: ClusterSpec) -> Manifest:
    """The sidecar: it reaches its own member's PostgreSQL over the pod's loopback."""
    cred = spec.credentials
    return {
        "name": "postgres-exporter",
        "image": spec.kubernetes.exporter_image,
        "imagePullPolicy": "IfNotPresent",
        "args": [
            f"--web.listen-address=:{EXPORTER_PORT}",
            f"--extend.query-path={EXPORTER_QUERIES_MOUNT}/{QUERIES_KEY}",
            *EXPORTER_ARGS,
        ],
        "env": [
            # 127.0.0.1, not localhost: PostgreSQL listens on IPv4 only; pg_hba takes hostssl only
            {
                "name": "DATA_SOURCE_URI",
                "value": f"127.0.0.1:{POSTGRES_PORT}/{spec.database}?sslmode=require",
            },
            {"name": "DATA_SOURCE_USER", "value": cred.superuser},
            {
                "name": "DATA_SOURCE_PASS",
                "valueFrom": {
                    "secretKeyRef": {
                        "name": cred.kubernetes_secret,
                        "key": SECRET_KEYS["superuser"],
                    }
                },
            },
        ],
        "ports": [{"name": "metrics", "containerPort": EXPORTER_PORT, "protocol": "TCP"}],
        "readinessProbe": {
            "httpGet": {"path": "/", "port": "metrics"},
            "periodSeconds": 10,
            "timeoutSeconds": 5,
        },
        "resources": {
            "requests": {"cpu": "10m", "memory": "32Mi"},
            "limits": {"memory": "128Mi"},
        },
        "securityContext": container_security(runAsUser=IMAGE_UID),
        "volumeMounts": [
            {"name": "exporter-queries", "mountPath": EXPORTER_QUERIES_MOUNT, "readOnly": True}
        ],
    }


def exporter_volume(spec: ClusterSpec) -> Manifest:
    return {"name": "exporter-queries", "configMap": {"name": exporter_queries_name(spec)}}


def scrape_annotations(spec: ClusterSpec) -> dict[str, str]:
    """The annotations a Prometheus with the common kubernetes-pods job scrapes a pod by: the
    exporter. Patroni's /metrics, a second endpoint, is in the PodMonitor."""
    return {
        "prometheus.io/scrape": "true",
        "prometheus.io/port": str(EXPORTER_PORT),
        "prometheus.io/path": "/metrics",
    }


def pod_monitor(spec: ClusterSpec) -> Manifest:
    """Both endpoints of every member, for the Prometheus operator (monitoring.coreos.com)."""
    every = f"{spec.metrics.scrape_interval}s"
    relabel = [
        # the same target labels as the local Prometheus: `member` and `citus_group`
        {"sourceLabels": ["__meta_kubernetes_pod_name"], "targetLabel": "member"},
        {
            "sourceLabels": [f"__meta_kubernetes_pod_label_{_label_name(GROUP_LABEL)}"],
            "targetLabel": "citus_group",
        },
    ]
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PodMonitor",
        "metadata": object_meta(spec, f"{spec.name}-members", base_labels(spec)),
        "spec": {
            "selector": {"matchLabels": base_labels(spec)},
            "podTargetLabels": [SCOPE_LABEL, ROLE_LABEL],
            "podMetricsEndpoints": [
                {"port": "metrics", "interval": every, "relabelings": relabel},
                {"port": "patroni", "path": "/metrics", "interval": every, "relabelings": relabel},
            ],
        },
    }


def _label_name(label: str) -> str:
    """A pod label as Prometheus's service discovery spells it (``-`` and ``.`` become ``_``)."""
    return label.replace("-", "_").replace(".", "_").replace("/", "_")


def scrape_network_policy(spec: ClusterSpec) -> Manifest:
    """Prometheus (its own namespace) may reach the exporter and Patroni's REST API."""
    labels = base_labels(spec)
    ns = spec.kubernetes.prometheus_namespace
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": object_meta(spec, f"{spec.name}-prometheus-scrapes", labels),
        "spec": {
            "podSelector": {"matchLabels": dict(labels)},
            "policyTypes": ["Ingress"],
            "ingress": [
                {
                    "from": [
                        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": ns}}}
                    ],
                    "ports": [
                        {"protocol": "TCP", "port": EXPORTER_PORT},
                        {"protocol": "TCP", "port": RESTAPI_PORT},
                    ],
                }
            ],
        },
    }


__all__ = [
    "QUERIES_KEY",
    "exporter_container",
    "exporter_queries_configmap",
    "exporter_volume",
    "pod_monitor",
    "scrape_annotations",
    "scrape_network_policy",
]
