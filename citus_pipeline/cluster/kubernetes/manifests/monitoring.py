"""Metrics on Kubernetes: the exporter sidecar of every member and of every pooler pod, their
configuration, and how Prometheus finds the pods (``prometheus.io`` annotations; PodMonitors
for the Prometheus operator).

The sidecars run the same exporter releases, arguments, queries and configuration as the local
backend's exporters (``cluster/metrics.py``), which the tests scrape for real.
"""

from __future__ import annotations

from ...metrics import (
    EXPORTER_ARGS,
    exporter_queries_yaml,
    pooler_exporter_argv,
    pooler_exporter_config,
)
from ...spec import ClusterSpec
from .names import (
    EXPORTER_PORT,
    EXPORTER_QUERIES_MOUNT,
    GROUP_LABEL,
    IMAGE_UID,
    POOLER_EXPORTER_PORT,
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
    pooler_labels,
    pooler_name,
    secret_env,
)

QUERIES_KEY = "queries.yaml"
POOLER_EXPORTER_KEY = "pgbouncer-exporter.yml"  # beside pgbouncer.ini in the pooler's ConfigMap


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


def pooler_exporter_config_text(spec: ClusterSpec) -> str:
    """The pooler exporter's config: PgBouncer in the same pod, over its loopback. TLS is
    required but not verified, as by the members' sidecars: the certificate names the
    Services, not 127.0.0.1."""
    return pooler_exporter_config(
        spec,
        listen_host="0.0.0.0",
        listen_port=POOLER_EXPORTER_PORT,
        pooler_host="127.0.0.1",
        tls="sslmode=require",
    )


def pooler_exporter_container(spec: ClusterSpec, config_mount: str) -> Manifest:
    """The pooler pod's sidecar: the exporter of the pooler's own image, its config from the
    pooler's ConfigMap (mounted at ``config_mount``), the superuser's password as PGPASSWORD,
    which its libpq reads (the config holds none)."""
    return {
        "name": "pgbouncer-exporter",
        "image": spec.kubernetes.pooler_image,
        "command": pooler_exporter_argv(f"{config_mount}/{POOLER_EXPORTER_KEY}"),
        "env": [secret_env(spec, "PGPASSWORD", SECRET_KEYS["superuser"])],
        "ports": [{"name": "metrics", "containerPort": POOLER_EXPORTER_PORT, "protocol": "TCP"}],
        "readinessProbe": {
            "httpGet": {"path": "/metrics", "port": "metrics"},
            "periodSeconds": 10,
            "timeoutSeconds": 5,
        },
        "resources": {
            "requests": {"cpu": "10m", "memory": "32Mi"},
            "limits": {"memory": "96Mi"},
        },
        "securityContext": container_security(),
        "volumeMounts": [{"name": "config", "mountPath": config_mount, "readOnly": True}],
    }


def scrape_annotations(port: int = EXPORTER_PORT) -> dict[str, str]:
    """The annotations a Prometheus with the common kubernetes-pods job scrapes a pod by: its
    exporter's ``port``. Patroni's /metrics, a member's second endpoint, is in the PodMonitor."""
    return {
        "prometheus.io/scrape": "true",
        "prometheus.io/port": str(port),
        "prometheus.io/path": "/metrics",
    }


def _pod_monitor(
    spec: ClusterSpec,
    name: str,
    labels: dict[str, str],
    pod_labels: list[str],
    endpoints: list[Manifest],
) -> Manifest:
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PodMonitor",
        "metadata": object_meta(spec, name, labels),
        "spec": {
            "selector": {"matchLabels": dict(labels)},
            "podTargetLabels": pod_labels,
            "podMetricsEndpoints": endpoints,
        },
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
    return _pod_monitor(
        spec,
        f"{spec.name}-members",
        base_labels(spec),
        [SCOPE_LABEL, ROLE_LABEL],
        [
            {"port": "metrics", "interval": every, "relabelings": relabel},
            {"port": "patroni", "path": "/metrics", "interval": every, "relabelings": relabel},
        ],
    )


def pooler_pod_monitor(spec: ClusterSpec) -> Manifest:
    """The exporter of every pooler pod (the members' PodMonitor selects Patroni's labels,
    which the pooler's pods do not carry)."""
    # the local Prometheus's target label: `pooler`, here the pod's name
    relabel = [{"sourceLabels": ["__meta_kubernetes_pod_name"], "targetLabel": "pooler"}]
    endpoint = {
        "port": "metrics",
        "interval": f"{spec.metrics.scrape_interval}s",
        "relabelings": relabel,
    }
    return _pod_monitor(spec, pooler_name(spec), pooler_labels(spec), [SCOPE_LABEL], [endpoint])


def _label_name(label: str) -> str:
    """A pod label as Prometheus's service discovery spells it (``-`` and ``.`` become ``_``)."""
    return label.replace("-", "_").replace(".", "_").replace("/", "_")


def scrape_rule(spec: ClusterSpec, *ports: int) -> Manifest:
    """A NetworkPolicy's ingress rule: Prometheus (its own namespace) may reach ``ports``."""
    ns = spec.kubernetes.prometheus_namespace
    return {
        "from": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": ns}}}],
        "ports": [{"protocol": "TCP", "port": p} for p in ports],
    }


def scrape_network_policy(spec: ClusterSpec) -> Manifest:
    """Prometheus (its own namespace) may reach the exporter and Patroni's REST API."""
    labels = base_labels(spec)
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": object_meta(spec, f"{spec.name}-prometheus-scrapes", labels),
        "spec": {
            "podSelector": {"matchLabels": dict(labels)},
            "policyTypes": ["Ingress"],
            "ingress": [scrape_rule(spec, EXPORTER_PORT, RESTAPI_PORT)],
        },
    }


__all__ = [
    "POOLER_EXPORTER_KEY",
    "QUERIES_KEY",
    "exporter_container",
    "exporter_queries_configmap",
    "exporter_volume",
    "pod_monitor",
    "pooler_exporter_config_text",
    "pooler_exporter_container",
    "pooler_pod_monitor",
    "scrape_annotations",
    "scrape_network_policy",
    "scrape_rule",
]
