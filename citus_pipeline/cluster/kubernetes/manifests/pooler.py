"""The pooler on Kubernetes (``pooler.enabled``): PgBouncer pods in front of the coordinator's
leader Service, behind their own load balancer.

The configuration is the local backend's (``pooler_ini``): transaction pooling, SCRAM to the
clients and to PostgreSQL, clients on TLS, the server verified (``verify-full``) under the
name of the leader Service, which Patroni points at the coordinator's leader alone: a
switchover stops the old leader's PostgreSQL (its sessions end) before the Endpoints name
the new one, so the pool never holds a connection to a standby that accepts writes.
The pods serve with the members' certificate (it names the pooler's Service), get the
superuser's password from the members' Secret, and spread over the nodes. Each pod has an
exporter sidecar (``monitoring.py``), which reads PgBouncer's admin console over the pod's
loopback; Prometheus's namespace may scrape it.
"""

from __future__ import annotations

import hashlib

from ...pooler_ini import PoolerPlace, pgbouncer_ini
from ...spec import ClusterSpec
from .monitoring import (
    POOLER_EXPORTER_KEY,
    pooler_exporter_config_text,
    pooler_exporter_container,
    pooler_pod_monitor,
    scrape_annotations,
    scrape_rule,
)
from .names import (
    IMAGE_UID,
    POOLER_EXPORTER_PORT,
    POSTGRES_PORT,
    SECRET_KEYS,
    TLS_MOUNT,
    TYPE_LABEL,
    Manifest,
    base_labels,
    container_resources,
    container_security,
    leader_service_host,
    object_meta,
    pooler_labels,
    pooler_name,
    secret_env,
)

CONFIG_MOUNT = "/etc/pgbouncer-config"
CONFIG_KEY = "pgbouncer.ini"
RUN_DIR = "/run/pgbouncer"  # the auth file the entrypoint writes (memory, never the image)
PORT_NAME = "pooler"
# Kubernetes stops sending new connections to a pod being removed a moment after it starts
# terminating; PgBouncer keeps serving those few seconds before its SIGTERM.
DRAIN_S = 5


def pooler_config_text(spec: ClusterSpec) -> str:
    place = PoolerPlace(
        listen_addr="*",
        server_host=leader_service_host(spec, 0),
        server_port=POSTGRES_PORT,
        auth_file=f"{RUN_DIR}/userlist.txt",
        ca_file=f"{TLS_MOUNT}/ca.crt",
        cert_file=f"{TLS_MOUNT}/tls.crt",
        key_file=f"{TLS_MOUNT}/tls.key",
    )
    return pgbouncer_ini(spec, place, "rendered by `citus-pipeline k8s render` from the spec")


def _deployment(spec: ClusterSpec, config: dict[str, str]) -> Manifest:
    k, labels = spec.kubernetes, pooler_labels(spec)
    container = {
        "name": "pgbouncer",
        "image": k.pooler_image,
        "env": [
            {"name": "POOLER_USER", "value": spec.credentials.superuser},
            secret_env(spec, "POOLER_PASSWORD", SECRET_KEYS["superuser"]),
        ],
        "ports": [{"name": PORT_NAME, "containerPort": spec.pooler.port, "protocol": "TCP"}],
        "readinessProbe": {"tcpSocket": {"port": PORT_NAME}, "periodSeconds": 5},
        "livenessProbe": {
            "tcpSocket": {"port": PORT_NAME},
            "periodSeconds": 10,
            "failureThreshold": 3,
        },
        "lifecycle": {"preStop": {"sleep": {"seconds": DRAIN_S}}},
        "resources": container_resources(k.pooler_resources),
        "securityContext": container_security(),
        "volumeMounts": [
            {"name": "config", "mountPath": CONFIG_MOUNT, "readOnly": True},
            {"name": "tls", "mountPath": TLS_MOUNT, "readOnly": True},
            {"name": "run", "mountPath": RUN_DIR},
        ],
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": object_meta(spec, pooler_name(spec), labels),
        "spec": {
            "replicas": k.pooler_replicas,
            "selector": {"matchLabels": dict(labels)},
            # a new pod is ready before an old one goes: the load balancer never empties
            "strategy": {
                "type": "RollingUpdate",
                "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1},
            },
            "template": {
                "metadata": {
                    "labels": dict(labels),
                    "annotations": {
                        # a changed configuration rolls the pods (PgBouncer and the exporter
                        # read theirs at start)
                        "citus-pipeline/config-sha256": config_digest(config),
                        **scrape_annotations(POOLER_EXPORTER_PORT),
                    },
                },
                "spec": {
                    "automountServiceAccountToken": False,
                    "enableServiceLinks": False,
                    "terminationGracePeriodSeconds": 30,
                    "securityContext": {
                        "runAsNonRoot": True,
                        "runAsUser": IMAGE_UID,
                        "runAsGroup": IMAGE_UID,
                        "fsGroup": IMAGE_UID,  # reads the TLS Secret (mode 0440) by group
                        "seccompProfile": {"type": "RuntimeDefault"},
                    },
                    "affinity": {
                        "podAntiAffinity": {
                            "preferredDuringSchedulingIgnoredDuringExecution": [
                                {
                                    "weight": 100,
                                    "podAffinityTerm": {
                                        "labelSelector": {"matchLabels": dict(labels)},
                                        "topologyKey": "kubernetes.io/hostname",
                                    },
                                }
                            ]
                        }
                    },
                    "containers": [container, pooler_exporter_container(spec, CONFIG_MOUNT)],
                    "volumes": [
                        {"name": "config", "configMap": {"name": f"{pooler_name(spec)}-config"}},
                        {
                            "name": "tls",
                            "secret": {"secretName": k.tls_secret, "defaultMode": 0o440},
                        },
                        {"name": "run", "emptyDir": {"medium": "Memory", "sizeLimit": "1Mi"}},
                    ],
                },
            },
        },
    }


def config_digest(config: dict[str, str]) -> str:
    """sha256 over the ConfigMap's files, each name and text in turn."""
    h = hashlib.sha256()
    for key in sorted(config):
        h.update(f"{key}\0{config[key]}\0".encode())
    return h.hexdigest()


def _policy(spec: ClusterSpec, name: str, selector: dict[str, str], rule: Manifest) -> Manifest:
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": object_meta(spec, name, pooler_labels(spec)),
        "spec": {
            "podSelector": {"matchLabels": selector},
            "policyTypes": ["Ingress"],
            "ingress": [rule],
        },
    }


def pooler_manifests(spec: ClusterSpec) -> list[Manifest]:
    """ConfigMap, Deployment, PodDisruptionBudget, load balancer, the policies that let
    clients reach the pooler, the pooler reach the coordinator and Prometheus reach its
    exporters, and (``kubernetes.pod_monitor``) their PodMonitor; nothing when the pooler is
    off."""
    if not spec.pooler.enabled:
        return []
    name, labels, k = pooler_name(spec), pooler_labels(spec), spec.kubernetes
    config = {
        CONFIG_KEY: pooler_config_text(spec),
        POOLER_EXPORTER_KEY: pooler_exporter_config_text(spec),
    }
    dagster_ns = {"kubernetes.io/metadata.name": k.dagster_namespace}
    return [
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": object_meta(spec, f"{name}-config", labels),
            "data": config,
        },
        _deployment(spec, config),
        {
            "apiVersion": "policy/v1",
            "kind": "PodDisruptionBudget",
            "metadata": object_meta(spec, name, labels),
            "spec": {"maxUnavailable": 1, "selector": {"matchLabels": dict(labels)}},
        },
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": object_meta(spec, name, labels),
            "spec": {
                "type": "LoadBalancer",
                # Local: the client address survives, so the NetworkPolicy's ipBlock applies
                "externalTrafficPolicy": "Local",
                "selector": dict(labels),
                "ports": [
                    {
                        "name": PORT_NAME,
                        "port": spec.pooler.port,
                        "targetPort": PORT_NAME,
                        "protocol": "TCP",
                    }
                ],
            },
        },
        # the load balancer's clients and Dagster's pods reach the pooler,
        _policy(
            spec,
            f"{name}-clients",
            labels,
            {
                "from": [{"ipBlock": {"cidr": c}} for c in k.client_cidrs]
                + [{"namespaceSelector": {"matchLabels": dagster_ns}}],
                "ports": [{"protocol": "TCP", "port": spec.pooler.port}],
            },
        ),
        # the pooler reaches the coordinator's members (the leader Service's target),
        _policy(
            spec,
            f"{name}-to-coordinator",
            {**base_labels(spec), TYPE_LABEL: "coordinator"},
            {
                "from": [{"podSelector": {"matchLabels": dict(labels)}}],
                "ports": [{"protocol": "TCP", "port": POSTGRES_PORT}],
            },
        ),
        # and Prometheus's namespace reaches the exporter sidecars
        _policy(
            spec,
            f"{name}-prometheus-scrapes",
            labels,
            scrape_rule(spec, POOLER_EXPORTER_PORT),
        ),
        *([pooler_pod_monitor(spec)] if k.pod_monitor else []),
    ]


__all__ = ["config_digest", "pooler_config_text", "pooler_manifests"]
