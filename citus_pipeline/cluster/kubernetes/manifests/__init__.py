"""Kubernetes manifests rendered from the ClusterSpec (pure functions: spec -> list of dicts).

One Citus group (0 = coordinator, 1..N = workers) is one Patroni cluster inside the scope
``spec.name``; Patroni's Kubernetes DCS keeps its state in Endpoints annotations
(``use_endpoints: true``) and labels its pods with the role. Per group we render:

* ``<scope>-<g>`` StatefulSet (PVC storage, hostname anti-affinity, readiness on /readiness)
* ``<scope>-<g>-headless`` headless Service: stable DNS ``<pod>.<scope>-<g>-headless.<ns>.svc``
  that every member registers as its connect address (so pg_dist_node never keeps a dead pod IP)
* ``<scope>-<g>`` Service + Endpoints without selector: the leader endpoint Patroni maintains
* ``<scope>-<g>-config`` headless Service: keeps the ``-config`` Endpoints from being garbage
  collected by the endpoints controller
* ``<scope>-<g>`` PodDisruptionBudget (at most one member voluntarily down)

Shared objects: Namespace, ServiceAccount/Role/RoleBinding (exactly the verbs Patroni's
Kubernetes DCS calls), the Patroni bootstrap ConfigMap, NetworkPolicies and the two
``LoadBalancer`` Services (``<scope>-coordinator`` -> coordinator leader,
``<scope>-workers`` -> worker leaders). Metrics: every member's pod has a postgres exporter
sidecar and ``prometheus.io`` scrape annotations; the exporter queries' ConfigMap, a
NetworkPolicy for the Prometheus namespace and (``kubernetes.pod_monitor``) a PodMonitor.
Backups (``backup.archiving``): a pgBackRest ConfigMap every member mounts, the S3 keys from a
Secret, and a CronJob that backs up each group on its leader (its own ServiceAccount and Role).
Secrets are referenced, never rendered.
"""

from __future__ import annotations

from .backup import (
    backup_cronjob,
    backup_manifests,
    kubernetes_repository,
    pgbackrest_conf,
    pgbackrest_configmap,
    pgbackrest_env,
)
from .files import (
    HEADER,
    dump_yaml,
    load_manifest_dir,
    render_files,
    write_rendered,
)
from .group import (
    cluster_manifests,
    group_manifests,
    member_env,
    monitoring_manifests,
    shared_manifests,
    statefulset_manifest,
)
from .names import (
    ADDED_GROUPS_HEADROOM,
    APP_LABEL,
    APP_VALUE,
    BACKUP_RBAC_RULES,
    BACKUP_SCRIPT,
    BOOTSTRAP_KEY,
    BOOTSTRAP_MOUNT,
    FIELD_MANAGER,
    FOLLOWER_LABEL_VALUE,
    GROUP_LABEL,
    IMAGE_UID,
    LEADER_LABEL_VALUE,
    PATRONI_CONTAINER,
    PATRONI_RBAC_RULES,
    PGBACKREST_CONF_KEY,
    PGBACKREST_CONFIG,
    PGBACKREST_MOUNT,
    PGBACKREST_WORK_DIR,
    PGDATA_DIR,
    PGDATA_MOUNT,
    POSTGRES_PORT,
    RESTAPI_PORT,
    ROLE_LABEL,
    S3_SECRET_KEYS,
    SCOPE_LABEL,
    SECRET_KEYS,
    SOCKET_DIR,
    TLS_KEY_COPY,
    TLS_MOUNT,
    TYPE_LABEL,
    Manifest,
    backup_labels,
    backup_name,
    base_labels,
    bootstrap_configmap_name,
    config_name,
    coordinator_lb_name,
    dagster_role_name,
    failover_name,
    group_labels,
    group_name,
    group_type,
    headless_name,
    highest_group,
    member_dns_name,
    patroni_kubernetes_labels,
    pgbackrest_configmap_name,
    restore_points_name,
    selector_service_labels,
    service_account_name,
    sync_name,
    tls_dns_names,
    workers_lb_name,
)
from .shared import (
    bootstrap_configmap,
    k8s_postgres_parameters,
    load_balancer_manifests,
    namespace_manifest,
    network_policy_manifests,
    patroni_bootstrap_config,
    rbac_manifests,
)

__all__ = [
    "ADDED_GROUPS_HEADROOM",
    "APP_LABEL",
    "APP_VALUE",
    "BACKUP_RBAC_RULES",
    "BACKUP_SCRIPT",
    "BOOTSTRAP_KEY",
    "BOOTSTRAP_MOUNT",
    "FIELD_MANAGER",
    "FOLLOWER_LABEL_VALUE",
    "GROUP_LABEL",
    "HEADER",
    "IMAGE_UID",
    "LEADER_LABEL_VALUE",
    "PATRONI_CONTAINER",
    "PATRONI_RBAC_RULES",
    "PGBACKREST_CONFIG",
    "PGBACKREST_CONF_KEY",
    "PGBACKREST_MOUNT",
    "PGBACKREST_WORK_DIR",
    "PGDATA_DIR",
    "PGDATA_MOUNT",
    "POSTGRES_PORT",
    "RESTAPI_PORT",
    "ROLE_LABEL",
    "S3_SECRET_KEYS",
    "SCOPE_LABEL",
    "SECRET_KEYS",
    "SOCKET_DIR",
    "TLS_KEY_COPY",
    "TLS_MOUNT",
    "TYPE_LABEL",
    "Manifest",
    "backup_cronjob",
    "backup_labels",
    "backup_manifests",
    "backup_name",
    "base_labels",
    "bootstrap_configmap",
    "bootstrap_configmap_name",
    "cluster_manifests",
    "config_name",
    "coordinator_lb_name",
    "dagster_role_name",
    "dump_yaml",
    "failover_name",
    "group_labels",
    "group_manifests",
    "group_name",
    "group_type",
    "headless_name",
    "highest_group",
    "k8s_postgres_parameters",
    "kubernetes_repository",
    "load_balancer_manifests",
    "load_manifest_dir",
    "member_dns_name",
    "member_env",
    "monitoring_manifests",
    "namespace_manifest",
    "network_policy_manifests",
    "patroni_bootstrap_config",
    "patroni_kubernetes_labels",
    "pgbackrest_conf",
    "pgbackrest_configmap",
    "pgbackrest_configmap_name",
    "pgbackrest_env",
    "rbac_manifests",
    "render_files",
    "restore_points_name",
    "selector_service_labels",
    "service_account_name",
    "shared_manifests",
    "statefulset_manifest",
    "sync_name",
    "tls_dns_names",
    "workers_lb_name",
    "write_rendered",
]
