"""Names, labels and constants every manifest shares (one definition each).

Patroni's Kubernetes DCS finds its pods by these labels and writes the role label itself;
the Services select on them, so a name or label is spelled here and nowhere else.
"""

from __future__ import annotations

import re
from typing import Any

from ....errors import SpecError
from ...spec import ClusterSpec, ResourcesSpec

Manifest = dict[str, Any]

POSTGRES_PORT = 5432
RESTAPI_PORT = 8008
EXPORTER_PORT = 9187  # the postgres exporter sidecar (its own default port)
POOLER_EXPORTER_PORT = 9127  # the pooler's exporter sidecar (the port its README uses)
EXPORTER_QUERIES_MOUNT = "/etc/postgres-exporter"
APP_LABEL = "application"
APP_VALUE = "citus-pipeline"
SCOPE_LABEL = "cluster-name"  # Patroni's default kubernetes.scope_label
GROUP_LABEL = "citus-group"  # Patroni: <mpp type>-group (postgresql/mpp/__init__.py)
TYPE_LABEL = "citus-type"
ROLE_LABEL = "role"  # set by Patroni on its own pod
LEADER_LABEL_VALUE = "primary"
FOLLOWER_LABEL_VALUE = "replica"  # Patroni's label on every other running member
FIELD_MANAGER = "citus-pipeline"

PGDATA_MOUNT = "/home/postgres/pgdata"
PGDATA_DIR = f"{PGDATA_MOUNT}/pgroot/data"
# PostgreSQL's socket directory (an emptyDir), named explicitly because pgBackRest connects
# through it: the compiled-in defaults of the two only happen to agree.
SOCKET_DIR = "/var/run/postgresql"
PATRONI_CONTAINER = "patroni"
TLS_MOUNT = "/etc/citus-tls"
BOOTSTRAP_MOUNT = "/etc/patroni"
BOOTSTRAP_KEY = "bootstrap.yaml"
# The entrypoint copies the mounted key here with mode 0600 (PostgreSQL refuses group-readable keys).
TLS_KEY_COPY = "/tmp/tls/tls.key"
IMAGE_UID = 999  # user `postgres` in k8s/image/Dockerfile

SECRET_KEYS = {
    "superuser": "superuser-password",
    "replication": "replication-password",
    "restapi": "restapi-password",
}

# pgBackRest (spec.backup.archiving). The config directory is pgBackRest's default, so a
# `pgbackrest ...` typed in a member's pod reads the same file.
PGBACKREST_MOUNT = "/etc/pgbackrest"
PGBACKREST_CONF_KEY = "pgbackrest.conf"
PGBACKREST_CONFIG = f"{PGBACKREST_MOUNT}/{PGBACKREST_CONF_KEY}"
# Spool (async archiving), lock and log files: on the data volume, beside PGDATA (not in it,
# so restores and base backups leave them alone). pgBackRest wants the spool kept across
# restarts and on the filesystem of pg_wal; the logs then survive the pod too.
PGBACKREST_WORK_DIR = f"{PGDATA_MOUNT}/pgbackrest"
BACKUP_SCRIPT = "citus-backup"  # k8s/image/backup.py, on the image's PATH
# pgBackRest's TLS server in every member (a sidecar): the group's leader backs up from a
# standby through it. It admits clients whose certificate's CN is MEMBER_CERT_CN: the
# members' own certificate (k8s/README.md issues it with that CN), which they present.
PGBACKREST_CONTAINER = "pgbackrest"
# `cluster restore`: the request every member reads at its start (k8s/image/entrypoint.py),
# and what it leaves beside its data directory until the restore is done
RESTORE_KEY = "request"
RESTORE_ASIDE = "data.before-restore"
HOLD_ARCHIVE = "restore-hold-archive"
PGBACKREST_TLS_PORT = 8432
MEMBER_CERT_CN = "citus"
# The Secret spec.backup.s3_secret: pgBackRest's environment variable -> the Secret's key.
S3_SECRET_KEYS = {
    "PGBACKREST_REPO1_S3_KEY": "access-key",
    "PGBACKREST_REPO1_S3_KEY_SECRET": "secret-key",
}
# Groups `add-worker` may create without a re-render: the certificate's SANs and the
# pgBackRest stanzas cover this many beyond the spec's.
ADDED_GROUPS_HEADROOM = 16

# Exactly what patroni/dcs/kubernetes.py calls with use_endpoints: true (see the unit test that
# re-derives it from Patroni's source): the pod/endpoint caches list+watch, touch_member patches
# its own pod, the leader/config/sync/failover endpoints are created, read and patched, and
# _create_config_service creates the headless `-config` Service when it is missing.
# `deletecollection` on endpoints is used only by `patronictl remove`, not by the daemon: left out.
PATRONI_RBAC_RULES: list[Manifest] = [
    {
        "apiGroups": [""],
        "resources": ["endpoints"],
        "verbs": ["create", "get", "list", "patch", "watch"],
    },
    {"apiGroups": [""], "resources": ["pods"], "verbs": ["list", "patch", "watch"]},
    {"apiGroups": [""], "resources": ["services"], "verbs": ["create"]},
]

# The scheduled backup lists the members to find each group's leader and execs pgBackRest in
# it. An exec over WebSocket (the Python client's) starts as a GET, which API servers before
# 1.35 authorize as `get` on pods/exec; SPDY (kubectl) and 1.35+ ask for `create`: both.
BACKUP_RBAC_RULES: list[Manifest] = [
    {"apiGroups": [""], "resources": ["pods"], "verbs": ["list"]},
    {"apiGroups": [""], "resources": ["pods/exec"], "verbs": ["create", "get"]},
]

_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


def check_names(spec: ClusterSpec) -> None:
    if not _DNS_LABEL.match(spec.name):
        raise SpecError(f"name: {spec.name!r} is not a valid Kubernetes name (a-z, 0-9, '-')")
    longest = f"{spec.name}-{highest_group(spec)}-config"
    if len(longest) > 63:
        raise SpecError(f"name: {spec.name!r} is too long for Kubernetes object names")
    if not spec.tls.enabled:
        raise SpecError(
            "tls.enabled: false is for the local backend only: on Kubernetes every connection "
            f"uses TLS (the Secret {spec.kubernetes.tls_secret!r})"
        )


def highest_group(spec: ClusterSpec) -> int:
    """The highest group id the rendered objects are ready for (add-worker's headroom)."""
    return spec.workers.groups + ADDED_GROUPS_HEADROOM


def group_name(spec: ClusterSpec, group: int) -> str:
    """StatefulSet, leader Service/Endpoints and PDB name; also Patroni's leader endpoint."""
    return f"{spec.name}-{group}"


def headless_name(spec: ClusterSpec, group: int) -> str:
    return f"{spec.name}-{group}-headless"


def config_name(spec: ClusterSpec, group: int) -> str:
    return f"{spec.name}-{group}-config"


def sync_name(spec: ClusterSpec, group: int) -> str:
    return f"{spec.name}-{group}-sync"


def failover_name(spec: ClusterSpec, group: int) -> str:
    return f"{spec.name}-{group}-failover"


def service_account_name(spec: ClusterSpec) -> str:
    return spec.name


def bootstrap_configmap_name(spec: ClusterSpec) -> str:
    return f"{spec.name}-patroni"


def pgbackrest_configmap_name(spec: ClusterSpec) -> str:
    return f"{spec.name}-pgbackrest"


def restore_points_name(spec: ClusterSpec) -> str:
    """The ConfigMap the restore points taken on Kubernetes are recorded in."""
    return f"{spec.name}-restore-points"


def dagster_role_name(spec: ClusterSpec) -> str:
    return f"{spec.name}-dagster"


def restore_name(spec: ClusterSpec) -> str:
    """The ConfigMap of a restore under way (absent otherwise)."""
    return f"{spec.name}-restore"


def backup_name(spec: ClusterSpec) -> str:
    """The scheduled backup's CronJob, and its ServiceAccount, Role and RoleBinding."""
    return f"{spec.name}-backup"


def exporter_queries_name(spec: ClusterSpec) -> str:
    """The ConfigMap of the exporter sidecars' queries."""
    return f"{spec.name}-exporter-queries"


def coordinator_lb_name(spec: ClusterSpec) -> str:
    return f"{spec.name}-coordinator"


def workers_lb_name(spec: ClusterSpec) -> str:
    return f"{spec.name}-workers"


def read_lb_name(spec: ClusterSpec) -> str:
    """The read endpoint: the coordinator's standbys."""
    return f"{spec.name}-read"


def pooler_name(spec: ClusterSpec) -> str:
    """The pooler's Deployment, load balancer Service and PDB (``-config``: its ConfigMap)."""
    return f"{spec.name}-pooler"


def pooler_labels(spec: ClusterSpec) -> dict[str, str]:
    """The pooler's pods: not Patroni's labels (its selector would take them for members)."""
    return {
        SCOPE_LABEL: spec.name,
        "app.kubernetes.io/part-of": APP_VALUE,
        "app.kubernetes.io/component": "pooler",
    }


def leader_service_host(spec: ClusterSpec, group: int) -> str:
    """The DNS name of a group's leader Service (the Endpoints Patroni keeps on its leader)."""
    return f"{group_name(spec, group)}.{spec.kubernetes.namespace}.svc"


def member_dns_name(
    spec: ClusterSpec, group: int, ordinal: int, namespace: str | None = None
) -> str:
    ns = namespace or spec.kubernetes.namespace
    return f"{group_name(spec, group)}-{ordinal}.{headless_name(spec, group)}.{ns}.svc"


def tls_dns_names(spec: ClusterSpec, groups: int | None = None) -> list[str]:
    """DNS names the member certificate must cover (wildcard per group's headless service).

    ``groups``: highest group id to cover (default: the spec's groups + 16 for add-worker).
    """
    last = highest_group(spec) if groups is None else groups
    ns = spec.kubernetes.namespace
    names = []
    for g in range(last + 1):
        names.append(f"*.{headless_name(spec, g)}.{ns}.svc")
        names.append(f"*.{headless_name(spec, g)}.{ns}.svc.cluster.local")
    names.append(f"{coordinator_lb_name(spec)}.{ns}.svc")
    names.append(f"{workers_lb_name(spec)}.{ns}.svc")
    names.append(f"{read_lb_name(spec)}.{ns}.svc")
    # the pooler serves with the same certificate and reaches the coordinator's leader Service
    names.append(f"{pooler_name(spec)}.{ns}.svc")
    names.append(leader_service_host(spec, 0))
    # a member's connections to itself: Patroni's and Citus's (citus.local_hostname, which
    # Patroni sets to localhost here: the background rebalance's tasks connect through it)
    names.append("localhost")
    return names


def base_labels(spec: ClusterSpec) -> dict[str, str]:
    """Labels Patroni selects on (its kubernetes.labels plus the scope label)."""
    return {APP_LABEL: APP_VALUE, SCOPE_LABEL: spec.name}


def group_type(group: int) -> str:
    return "coordinator" if group == 0 else "worker"


def group_labels(spec: ClusterSpec, group: int) -> dict[str, str]:
    return {**base_labels(spec), GROUP_LABEL: str(group), TYPE_LABEL: group_type(group)}


def patroni_kubernetes_labels(spec: ClusterSpec) -> dict[str, str]:
    """PATRONI_KUBERNETES_LABELS: deliberately WITHOUT citus-group.

    Patroni builds its list/watch label selector from these labels (plus the scope label)
    before adding the group label, so a group label here would hide the other groups from
    the coordinator, which then never registers the workers in pg_dist_node. Patroni adds
    ``citus-group`` itself (from PATRONI_CITUS_GROUP) to the objects it writes; the pod
    template carries it for the same reason.
    """
    return {APP_LABEL: APP_VALUE}


def selector_service_labels(spec: ClusterSpec, component: str, **more: str) -> dict[str, str]:
    """Labels for Services WITH a selector (headless, load balancers).

    Their Endpoints are written by the endpoints controller, which copies the Service's
    labels; without the ``application`` label they stay out of Patroni's label selector, so
    Patroni neither caches nor wakes up on every readiness change of those Endpoints.
    """
    return {
        SCOPE_LABEL: spec.name,
        "app.kubernetes.io/part-of": APP_VALUE,
        "app.kubernetes.io/component": component,
        **more,
    }


def backup_labels(spec: ClusterSpec) -> dict[str, str]:
    """The scheduled backup's objects and pod: without the ``application`` label, so neither
    Patroni's pod selector nor the members' NetworkPolicies take its pod for a member."""
    return selector_service_labels(spec, "backup")


def container_security(**more: Any) -> Manifest:
    """Every container's securityContext: no privilege escalation and no capabilities, its
    root filesystem read-only (what it writes goes to its volumes); ``more`` adds to it."""
    return {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
        **more,
    }


def container_resources(r: ResourcesSpec) -> Manifest:
    """A container's requests and limits."""
    out: Manifest = {"requests": {"cpu": r.cpu, "memory": r.memory}}
    limits = {k: v for k, v in (("cpu", r.cpu_limit), ("memory", r.memory_limit)) if v}
    if limits:
        out["limits"] = limits
    return out


def secret_env(spec: ClusterSpec, name: str, key: str) -> Manifest:
    """An environment variable from a key of the members' password Secret."""
    return {
        "name": name,
        "valueFrom": {"secretKeyRef": {"name": spec.credentials.kubernetes_secret, "key": key}},
    }


def object_meta(spec: ClusterSpec, name: str, labels: dict[str, str], **extra: Any) -> Manifest:
    meta: Manifest = {"name": name, "namespace": spec.kubernetes.namespace, "labels": dict(labels)}
    meta.update(extra)
    return meta


__all__ = [
    "ADDED_GROUPS_HEADROOM",
    "APP_LABEL",
    "APP_VALUE",
    "BACKUP_RBAC_RULES",
    "BACKUP_SCRIPT",
    "BOOTSTRAP_KEY",
    "BOOTSTRAP_MOUNT",
    "EXPORTER_PORT",
    "EXPORTER_QUERIES_MOUNT",
    "FIELD_MANAGER",
    "FOLLOWER_LABEL_VALUE",
    "GROUP_LABEL",
    "HOLD_ARCHIVE",
    "IMAGE_UID",
    "LEADER_LABEL_VALUE",
    "MEMBER_CERT_CN",
    "PATRONI_CONTAINER",
    "PATRONI_RBAC_RULES",
    "PGBACKREST_CONFIG",
    "PGBACKREST_CONF_KEY",
    "PGBACKREST_CONTAINER",
    "PGBACKREST_MOUNT",
    "PGBACKREST_TLS_PORT",
    "PGBACKREST_WORK_DIR",
    "PGDATA_DIR",
    "PGDATA_MOUNT",
    "POOLER_EXPORTER_PORT",
    "POSTGRES_PORT",
    "RESTAPI_PORT",
    "RESTORE_ASIDE",
    "RESTORE_KEY",
    "ROLE_LABEL",
    "S3_SECRET_KEYS",
    "SCOPE_LABEL",
    "SECRET_KEYS",
    "SOCKET_DIR",
    "TLS_KEY_COPY",
    "TLS_MOUNT",
    "TYPE_LABEL",
    "Manifest",
    "backup_labels",
    "backup_name",
    "base_labels",
    "bootstrap_configmap_name",
    "check_names",
    "config_name",
    "container_resources",
    "container_security",
    "coordinator_lb_name",
    "dagster_role_name",
    "exporter_queries_name",
    "failover_name",
    "group_labels",
    "group_name",
    "group_type",
    "headless_name",
    "highest_group",
    "leader_service_host",
    "member_dns_name",
    "object_meta",
    "patroni_kubernetes_labels",
    "pgbackrest_configmap_name",
    "pooler_labels",
    "pooler_name",
    "read_lb_name",
    "restore_name",
    "restore_points_name",
    "secret_env",
    "selector_service_labels",
    "service_account_name",
    "sync_name",
    "tls_dns_names",
    "workers_lb_name",
]
