"""One Citus group's objects: its StatefulSet, Services, Endpoints and PodDisruptionBudget,
and every object of the cluster in apply order."""

from __future__ import annotations

import json

from ....errors import SpecError
from ...spec import LIVENESS, ClusterSpec
from .backup import (
    backup_manifests,
    pgbackrest_env,
    pgbackrest_mount,
    pgbackrest_server_container,
    pgbackrest_volume,
)
from .monitoring import (
    exporter_container,
    exporter_queries_configmap,
    exporter_volume,
    pod_monitor,
    scrape_annotations,
    scrape_network_policy,
)
from .names import (
    BOOTSTRAP_KEY,
    BOOTSTRAP_MOUNT,
    FOLLOWER_LABEL_VALUE,
    GROUP_LABEL,
    IMAGE_UID,
    LEADER_LABEL_VALUE,
    PATRONI_CONTAINER,
    PGDATA_DIR,
    PGDATA_MOUNT,
    POSTGRES_PORT,
    RESTAPI_PORT,
    RESTORE_KEY,
    ROLE_LABEL,
    SCOPE_LABEL,
    SECRET_KEYS,
    SOCKET_DIR,
    TLS_MOUNT,
    TYPE_LABEL,
    Manifest,
    base_labels,
    bootstrap_configmap_name,
    check_names,
    config_name,
    container_resources,
    container_security,
    group_labels,
    group_name,
    group_type,
    headless_name,
    object_meta,
    patroni_kubernetes_labels,
    restore_name,
    secret_env,
    selector_service_labels,
    service_account_name,
)
from .pooler import pooler_manifests
from .shared import (
    bootstrap_configmap,
    load_balancer_manifests,
    namespace_manifest,
    network_policy_manifests,
    rbac_manifests,
)


def _field_env(name: str, path: str) -> Manifest:
    return {"name": name, "valueFrom": {"fieldRef": {"apiVersion": "v1", "fieldPath": path}}}


def member_env(spec: ClusterSpec, group: int) -> list[Manifest]:
    """The environment Patroni (and the image's entrypoint) needs in a member of ``group``."""
    cred = spec.credentials
    headless = headless_name(spec, group)
    dns = f"$(PATRONI_NAME).{headless}.$(PATRONI_KUBERNETES_NAMESPACE).svc"
    ca = f"{TLS_MOUNT}/ca.crt"
    # PATRONI_NAME and PATRONI_KUBERNETES_NAMESPACE come first: later values expand them.
    return [
        _field_env("PATRONI_NAME", "metadata.name"),
        _field_env("PATRONI_KUBERNETES_NAMESPACE", "metadata.namespace"),
        _field_env("PATRONI_KUBERNETES_POD_IP", "status.podIP"),
        {"name": "PATRONI_SCOPE", "value": spec.name},
        {"name": "PATRONI_KUBERNETES_USE_ENDPOINTS", "value": "true"},
        {"name": "PATRONI_KUBERNETES_LABELS", "value": json.dumps(patroni_kubernetes_labels(spec))},
        {"name": "PATRONI_KUBERNETES_SCOPE_LABEL", "value": SCOPE_LABEL},
        {"name": "PATRONI_KUBERNETES_ROLE_LABEL", "value": ROLE_LABEL},
        {"name": "PATRONI_KUBERNETES_LEADER_LABEL_VALUE", "value": LEADER_LABEL_VALUE},
        {"name": "PATRONI_KUBERNETES_FOLLOWER_LABEL_VALUE", "value": FOLLOWER_LABEL_VALUE},
        {
            "name": "PATRONI_KUBERNETES_PORTS",
            "value": json.dumps([{"name": "postgresql", "port": POSTGRES_PORT}]),
        },
        {"name": "PATRONI_CITUS_GROUP", "value": str(group)},
        {"name": "PATRONI_CITUS_DATABASE", "value": spec.database},
        {"name": "PATRONI_POSTGRESQL_DATA_DIR", "value": PGDATA_DIR},
        {"name": "PATRONI_POSTGRESQL_PGPASS", "value": "/tmp/pgpass"},
        {"name": "PATRONI_POSTGRESQL_LISTEN", "value": f"0.0.0.0:{POSTGRES_PORT}"},
        {"name": "PATRONI_POSTGRESQL_CONNECT_ADDRESS", "value": f"{dns}:{POSTGRES_PORT}"},
        {"name": "PATRONI_RESTAPI_LISTEN", "value": f"0.0.0.0:{RESTAPI_PORT}"},
        {"name": "PATRONI_RESTAPI_CONNECT_ADDRESS", "value": f"{dns}:{RESTAPI_PORT}"},
        {"name": "PATRONI_RESTAPI_USERNAME", "value": cred.restapi_user},
        secret_env(spec, "PATRONI_RESTAPI_PASSWORD", SECRET_KEYS["restapi"]),
        {"name": "PATRONI_SUPERUSER_USERNAME", "value": cred.superuser},
        secret_env(spec, "PATRONI_SUPERUSER_PASSWORD", SECRET_KEYS["superuser"]),
        {"name": "PATRONI_SUPERUSER_SSLMODE", "value": "verify-full"},
        {"name": "PATRONI_SUPERUSER_SSLROOTCERT", "value": ca},
        {"name": "PATRONI_REPLICATION_USERNAME", "value": cred.replication_user},
        secret_env(spec, "PATRONI_REPLICATION_PASSWORD", SECRET_KEYS["replication"]),
        {"name": "PATRONI_REPLICATION_SSLMODE", "value": "verify-full"},
        {"name": "PATRONI_REPLICATION_SSLROOTCERT", "value": ca},
        {"name": "CITUS_PATRONI_BOOTSTRAP_FILE", "value": f"{BOOTSTRAP_MOUNT}/{BOOTSTRAP_KEY}"},
        {"name": "CITUS_TLS_DIR", "value": TLS_MOUNT},
        *pgbackrest_env(spec, group),
        # only while `cluster restore` runs (read at the container's start)
        {
            "name": "CITUS_RESTORE",
            "valueFrom": {
                "configMapKeyRef": {
                    "name": restore_name(spec),
                    "key": RESTORE_KEY,
                    "optional": True,
                }
            },
        },
    ]


def statefulset_manifest(spec: ClusterSpec, group: int) -> Manifest:
    k = spec.kubernetes
    name = group_name(spec, group)
    labels = group_labels(spec, group)
    selector = {**base_labels(spec), GROUP_LABEL: str(group)}
    resources = k.coordinator_resources if group == 0 else k.worker_resources
    pvc_spec: Manifest = {
        "accessModes": ["ReadWriteOnce"],
        "resources": {"requests": {"storage": k.storage_size}},
    }
    if k.storage_class:
        pvc_spec["storageClassName"] = k.storage_class
    probe_common = {"periodSeconds": 10, "timeoutSeconds": 5}
    archiving = spec.backup.archiving
    container = {
        "name": PATRONI_CONTAINER,
        "image": k.image,
        "imagePullPolicy": "IfNotPresent",
        "ports": [
            {"name": "postgresql", "containerPort": POSTGRES_PORT, "protocol": "TCP"},
            {"name": "patroni", "containerPort": RESTAPI_PORT, "protocol": "TCP"},
        ],
        "env": member_env(spec, group),
        "resources": container_resources(resources),
        "readinessProbe": {
            "httpGet": {"path": "/readiness", "port": "patroni", "scheme": "HTTP"},
            "initialDelaySeconds": 5,
            "failureThreshold": 3,
            **probe_common,
        },
        # A member that stops answering (a paused VM, storage that hangs the processes) keeps
        # its sockets open, and its kernel still acknowledges what the coordinator sends:
        # statements on it wait, holding the shard locks Patroni needs to put the standby it
        # promotes into pg_dist_node. Killing the container closes those sockets. About ttl
        # after the stall (3 probes 5 s apart, each given 5 s, then 5 s of grace, not the
        # pod's long one: a member that does not answer its liveness probe cannot shut down).
        "livenessProbe": {
            "httpGet": {"path": "/liveness", "port": "patroni", "scheme": "HTTP"},
            "initialDelaySeconds": LIVENESS.initial_delay_s,
            "periodSeconds": LIVENESS.period_s,
            "timeoutSeconds": LIVENESS.timeout_s,
            "failureThreshold": LIVENESS.failure_threshold,
            "terminationGracePeriodSeconds": 5,
        },
        "securityContext": container_security(),
        "volumeMounts": [
            {"name": "pgdata", "mountPath": PGDATA_MOUNT},
            {"name": "tls", "mountPath": TLS_MOUNT, "readOnly": True},
            {"name": "bootstrap", "mountPath": BOOTSTRAP_MOUNT, "readOnly": True},
            {"name": "tmp", "mountPath": "/tmp"},
            {"name": "run", "mountPath": SOCKET_DIR},
            *([pgbackrest_mount()] if archiving else []),
        ],
    }
    pod_spec = {
        "serviceAccountName": service_account_name(spec),
        "terminationGracePeriodSeconds": k.termination_grace_period_seconds,
        "enableServiceLinks": False,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": IMAGE_UID,
            "runAsGroup": IMAGE_UID,
            "fsGroup": IMAGE_UID,
            # the volume's files regrouped only while its root is not the pod's group (its
            # first start): never again on a restart, where `Always` would give PGDATA
            # g+rwx, which PostgreSQL refuses (the entrypoint puts 0700 back if it happens)
            "fsGroupChangePolicy": "OnRootMismatch",
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "affinity": {
            "podAntiAffinity": {
                # Never two members of one group on one node ...
                "requiredDuringSchedulingIgnoredDuringExecution": [
                    {
                        "labelSelector": {"matchLabels": dict(selector)},
                        "topologyKey": "kubernetes.io/hostname",
                    }
                ],
                # ... and spread them over zones where there is room.
                "preferredDuringSchedulingIgnoredDuringExecution": [
                    {
                        "weight": 100,
                        "podAffinityTerm": {
                            "labelSelector": {"matchLabels": dict(selector)},
                            "topologyKey": "topology.kubernetes.io/zone",
                        },
                    }
                ],
            }
        },
        "containers": [
            container,
            exporter_container(spec),
            *([pgbackrest_server_container(spec)] if archiving else []),
        ],
        "volumes": [
            {"name": "tls", "secret": {"secretName": k.tls_secret, "defaultMode": 0o440}},
            {"name": "bootstrap", "configMap": {"name": bootstrap_configmap_name(spec)}},
            {"name": "tmp", "emptyDir": {}},
            {"name": "run", "emptyDir": {}},
            exporter_volume(spec),
            *([pgbackrest_volume(spec)] if archiving else []),
        ],
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": object_meta(spec, name, labels),
        "spec": {
            "serviceName": headless_name(spec, group),
            "replicas": spec.members_in_group(group),
            "podManagementPolicy": "Parallel",
            "selector": {"matchLabels": selector},
            "template": {
                "metadata": {"labels": dict(labels), "annotations": scrape_annotations()},
                "spec": pod_spec,
            },
            "volumeClaimTemplates": [
                {"metadata": {"name": "pgdata", "labels": dict(labels)}, "spec": pvc_spec}
            ],
        },
    }


def group_manifests(spec: ClusterSpec, group: int) -> list[Manifest]:
    """Every object of one Citus group (what add-worker creates and remove-worker deletes)."""
    check_names(spec)
    if group < 0:
        raise SpecError(f"group {group}: groups are 0 (coordinator) or 1..N (workers)")
    labels = group_labels(spec, group)
    selector = {**base_labels(spec), GROUP_LABEL: str(group)}
    name = group_name(spec, group)
    pg_port = {"name": "postgresql", "port": POSTGRES_PORT, "protocol": "TCP"}
    return [
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": object_meta(
                spec,
                headless_name(spec, group),
                selector_service_labels(
                    spec, "member-dns", **{GROUP_LABEL: str(group), TYPE_LABEL: group_type(group)}
                ),
            ),
            "spec": {
                "clusterIP": "None",
                # Members must resolve each other while still bootstrapping (not yet ready).
                "publishNotReadyAddresses": True,
                "selector": selector,
                "ports": [
                    {**pg_port, "targetPort": "postgresql"},
                    {
                        "name": "patroni",
                        "port": RESTAPI_PORT,
                        "targetPort": "patroni",
                        "protocol": "TCP",
                    },
                ],
            },
        },
        {
            # Leader service: no selector, Patroni writes the leader's IP into its Endpoints.
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": object_meta(spec, name, labels),
            "spec": {"type": "ClusterIP", "ports": [{**pg_port, "targetPort": POSTGRES_PORT}]},
        },
        {
            "apiVersion": "v1",
            "kind": "Endpoints",
            "metadata": object_meta(spec, name, labels),
            "subsets": [],
        },
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": object_meta(spec, config_name(spec, group), labels),
            "spec": {"clusterIP": "None"},
        },
        statefulset_manifest(spec, group),
        {
            "apiVersion": "policy/v1",
            "kind": "PodDisruptionBudget",
            "metadata": object_meta(spec, name, labels),
            "spec": {"maxUnavailable": 1, "selector": {"matchLabels": selector}},
        },
    ]


def shared_manifests(spec: ClusterSpec) -> list[Manifest]:
    check_names(spec)
    return [
        namespace_manifest(spec),
        *rbac_manifests(spec),
        bootstrap_configmap(spec),
        *network_policy_manifests(spec),
        *load_balancer_manifests(spec),
        *pooler_manifests(spec),
        *monitoring_manifests(spec),
        *backup_manifests(spec),
    ]


def monitoring_manifests(spec: ClusterSpec) -> list[Manifest]:
    """The exporters' queries and who may scrape them; the PodMonitor where the spec asks."""
    out = [exporter_queries_configmap(spec), scrape_network_policy(spec)]
    if spec.kubernetes.pod_monitor:
        out.append(pod_monitor(spec))
    return out


def cluster_manifests(spec: ClusterSpec) -> list[Manifest]:
    """All objects of the cluster: shared ones, then groups 0..N."""
    out = shared_manifests(spec)
    for g in range(spec.workers.groups + 1):
        out.extend(group_manifests(spec, g))
    return out


__all__ = [
    "cluster_manifests",
    "group_manifests",
    "member_env",
    "monitoring_manifests",
    "shared_manifests",
    "statefulset_manifest",
]
