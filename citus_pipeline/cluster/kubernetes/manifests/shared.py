"""The objects the whole cluster shares: Namespace, RBAC for Patroni's Kubernetes DCS and for
the scheduled backup, the bootstrap ConfigMap, the two LoadBalancer Services and the
NetworkPolicies."""

from __future__ import annotations

from typing import Any

import yaml

from ...spec import REPLICA_BASEBACKUP_OPTIONS, TCP_TIMEOUTS, ClusterSpec
from .names import (
    APP_LABEL,
    APP_VALUE,
    BACKUP_RBAC_RULES,
    BOOTSTRAP_KEY,
    FOLLOWER_LABEL_VALUE,
    LEADER_LABEL_VALUE,
    PATRONI_RBAC_RULES,
    PGBACKREST_TLS_PORT,
    POSTGRES_PORT,
    RESTAPI_PORT,
    ROLE_LABEL,
    SOCKET_DIR,
    TLS_KEY_COPY,
    TLS_MOUNT,
    TYPE_LABEL,
    Manifest,
    backup_labels,
    backup_name,
    base_labels,
    bootstrap_configmap_name,
    coordinator_lb_name,
    dagster_role_name,
    object_meta,
    read_lb_name,
    restore_points_name,
    selector_service_labels,
    service_account_name,
    workers_lb_name,
)


def namespace_manifest(spec: ClusterSpec) -> Manifest:
    return {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": spec.kubernetes.namespace, "labels": {APP_LABEL: APP_VALUE}},
    }


def _role_and_binding(
    spec: ClusterSpec, role: str, rules: list[Manifest], labels: dict[str, str], subject: Manifest
) -> list[Manifest]:
    """A namespaced Role with ``rules`` and its RoleBinding to ``subject``."""
    return [
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": object_meta(spec, role, labels),
            "rules": [dict(r, verbs=list(r["verbs"])) for r in rules],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": object_meta(spec, role, labels),
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": role},
            "subjects": [subject],
        },
    ]


def _service_account_rbac(
    spec: ClusterSpec, account: str, role: str, rules: list[Manifest], labels: dict[str, str]
) -> list[Manifest]:
    """A ServiceAccount of the cluster's namespace, a Role with ``rules`` and the binding."""
    subject = {"kind": "ServiceAccount", "name": account, "namespace": spec.kubernetes.namespace}
    return [
        {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": object_meta(spec, account, labels),
        },
        *_role_and_binding(spec, role, rules, labels, subject),
    ]


def dagster_rbac_rules(spec: ClusterSpec) -> list[Manifest]:
    """What Dagster's runs do through the Kubernetes backend: read the members (pods), the
    leaders (Endpoints), the coordinator's load balancer and the StatefulSets, and record
    restore points in their ConfigMap. Nothing that changes the cluster."""
    return [
        {
            "apiGroups": [""],
            "resources": ["pods", "endpoints", "services"],
            "verbs": ["get", "list"],
        },
        {"apiGroups": ["apps"], "resources": ["statefulsets"], "verbs": ["get", "list"]},
        # create cannot be limited to a name; reading and replacing can
        {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["create"]},
        {
            "apiGroups": [""],
            "resources": ["configmaps"],
            "resourceNames": [restore_points_name(spec)],
            "verbs": ["get", "update"],
        },
    ]


def dagster_rbac(spec: ClusterSpec) -> list[Manifest]:
    """A Role in the cluster's namespace for the ServiceAccount Dagster's runs use in theirs
    (the Helm release creates that account)."""
    k = spec.kubernetes
    subject = {
        "kind": "ServiceAccount",
        "name": k.dagster_service_account,
        "namespace": k.dagster_namespace,
    }
    return _role_and_binding(
        spec, dagster_role_name(spec), dagster_rbac_rules(spec), base_labels(spec), subject
    )


def rbac_manifests(spec: ClusterSpec) -> list[Manifest]:
    """Patroni's (the members' ServiceAccount), Dagster's runs' and, with archiving, the
    scheduled backup's."""
    out = _service_account_rbac(
        spec,
        service_account_name(spec),
        f"{spec.name}-patroni",
        PATRONI_RBAC_RULES,
        base_labels(spec),
    )
    out += dagster_rbac(spec)
    if spec.backup.archiving:
        name = backup_name(spec)
        out += _service_account_rbac(spec, name, name, BACKUP_RBAC_RULES, backup_labels(spec))
    return out


def k8s_postgres_parameters(spec: ClusterSpec) -> dict[str, Any]:
    """Spec parameters plus what the Kubernetes deployment enforces (SCRAM, TLS verify-full)."""
    params = dict(spec.postgresql.parameters)
    params["password_encryption"] = "scram-sha-256"
    params["citus.node_conninfo"] = (
        f"sslmode=verify-full sslrootcert={TLS_MOUNT}/ca.crt {TCP_TIMEOUTS}"
    )
    return params


def patroni_bootstrap_config(spec: ClusterSpec) -> dict[str, Any]:
    """patroni.yml fragment the entrypoint merges with the per-pod settings from the env."""
    repl = spec.credentials.replication_user
    # Per member (patroni.yml, applied at every start, unlike the DCS's bootstrap copy).
    local_parameters: dict[str, Any] = {
        "ssl": "on",
        "ssl_cert_file": f"{TLS_MOUNT}/tls.crt",
        "ssl_key_file": TLS_KEY_COPY,
        "ssl_ca_file": f"{TLS_MOUNT}/ca.crt",
        "unix_socket_directories": SOCKET_DIR,
    }
    if spec.backup.archiving:
        # archive_mode and archive_command come with the group's stanza (the entrypoint)
        local_parameters["archive_timeout"] = spec.backup.archive_timeout
    return {
        "bootstrap": {
            # Only TLS + SCRAM from the network; the unix socket needs the password too.
            "dcs": spec.patroni_dcs(
                k8s_postgres_parameters(spec),
                pg_hba=[
                    "local all all scram-sha-256",
                    f"hostssl replication {repl} 0.0.0.0/0 scram-sha-256",
                    f"hostssl replication {repl} ::/0 scram-sha-256",
                    "hostssl all all 0.0.0.0/0 scram-sha-256",
                    "hostssl all all ::/0 scram-sha-256",
                ],
            ),
            "initdb": [
                {"encoding": "UTF8"},
                {"locale": "C.UTF-8"},
                "data-checksums",
                {"auth-host": "scram-sha-256"},
                {"auth-local": "scram-sha-256"},
            ],
        },
        "postgresql": {
            "use_unix_socket": True,
            "basebackup": list(REPLICA_BASEBACKUP_OPTIONS),
            "parameters": local_parameters,
        },
    }


def bootstrap_configmap(spec: ClusterSpec) -> Manifest:
    text = yaml.safe_dump(patroni_bootstrap_config(spec), sort_keys=False, default_flow_style=False)
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": object_meta(spec, bootstrap_configmap_name(spec), base_labels(spec)),
        "data": {BOOTSTRAP_KEY: text},
    }


def load_balancer_manifests(spec: ClusterSpec) -> list[Manifest]:
    out = []
    for name, kind, role in (
        (coordinator_lb_name(spec), "coordinator", LEADER_LABEL_VALUE),
        (workers_lb_name(spec), "worker", LEADER_LABEL_VALUE),
        # the read endpoint: the coordinator's standbys (its sessions read from the worker
        # groups' standbys, citus.use_secondary_nodes = 'always', set by the client)
        (read_lb_name(spec), "coordinator", FOLLOWER_LABEL_VALUE),
    ):
        selector = {**base_labels(spec), TYPE_LABEL: kind, ROLE_LABEL: role}
        out.append(
            {
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": object_meta(
                    spec, name, selector_service_labels(spec, "load-balancer", **{TYPE_LABEL: kind})
                ),
                "spec": {
                    "type": "LoadBalancer",
                    # Local: the client address survives, so the NetworkPolicy's ipBlock applies.
                    "externalTrafficPolicy": "Local",
                    "selector": selector,
                    "ports": [
                        {
                            "name": "postgresql",
                            "port": POSTGRES_PORT,
                            "targetPort": "postgresql",
                            "protocol": "TCP",
                        }
                    ],
                },
            }
        )
    return out


def network_policy_manifests(spec: ClusterSpec) -> list[Manifest]:
    labels = base_labels(spec)
    citus_pods = {"matchLabels": dict(labels)}

    def policy(name: str, pod_selector: Manifest, ingress: list[Manifest]) -> Manifest:
        return {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": object_meta(spec, name, labels),
            "spec": {"podSelector": pod_selector, "policyTypes": ["Ingress"], "ingress": ingress},
        }

    def port(p: int) -> Manifest:
        return {"protocol": "TCP", "port": p}

    return [
        # Everything not allowed below is denied.
        policy(f"{spec.name}-default-deny", {"matchLabels": dict(labels)}, []),
        # Members reach each other: replication/Citus on 5432, Patroni REST API on 8008,
        # and (archiving) pgBackRest's TLS server, a leader's backup copying from a standby.
        policy(
            f"{spec.name}-members",
            citus_pods,
            [
                {
                    "from": [{"podSelector": {"matchLabels": dict(labels)}}],
                    "ports": [
                        port(POSTGRES_PORT),
                        port(RESTAPI_PORT),
                        *([port(PGBACKREST_TLS_PORT)] if spec.backup.archiving else []),
                    ],
                }
            ],
        ),
        # Dagster (its own namespace) reaches the coordinator on 5432.
        policy(
            f"{spec.name}-dagster-to-coordinator",
            {"matchLabels": {**labels, TYPE_LABEL: "coordinator"}},
            [
                {
                    "from": [
                        {
                            "namespaceSelector": {
                                "matchLabels": {
                                    "kubernetes.io/metadata.name": spec.kubernetes.dagster_namespace
                                }
                            }
                        }
                    ],
                    "ports": [port(POSTGRES_PORT)],
                }
            ],
        ),
        # Load balancer clients reach the leaders (the leader LBs' only targets) on 5432,
        policy(
            f"{spec.name}-load-balancer-clients",
            {"matchLabels": {**labels, ROLE_LABEL: LEADER_LABEL_VALUE}},
            [
                {
                    "from": [{"ipBlock": {"cidr": c}} for c in spec.kubernetes.client_cidrs],
                    "ports": [port(POSTGRES_PORT)],
                }
            ],
        ),
        # and the coordinator's standbys (the read endpoint's), no other standby.
        policy(
            f"{spec.name}-read-clients",
            {
                "matchLabels": {
                    **labels,
                    TYPE_LABEL: "coordinator",
                    ROLE_LABEL: FOLLOWER_LABEL_VALUE,
                }
            },
            [
                {
                    "from": [{"ipBlock": {"cidr": c}} for c in spec.kubernetes.client_cidrs],
                    "ports": [port(POSTGRES_PORT)],
                }
            ],
        ),
    ]


__all__ = [
    "bootstrap_configmap",
    "k8s_postgres_parameters",
    "load_balancer_manifests",
    "namespace_manifest",
    "network_policy_manifests",
    "patroni_bootstrap_config",
    "rbac_manifests",
]
