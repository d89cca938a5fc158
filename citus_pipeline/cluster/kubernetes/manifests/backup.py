"""pgBackRest on Kubernetes: its config and S3 keys in every member, and the scheduled backup.

Every member archives its group's WAL (``archive_command``) into the group's stanza and a new
standby restores from the repository before it streams, as on the local backend: the image's
entrypoint wires the pgBackRest commands into Patroni from the environment rendered here.

The repository is always S3 on Kubernetes, whatever ``backup.repo_type`` says: a posix
repository inside a pod would be one member's own disk, lost with it. ``repo_type: posix`` is
the local backend's default; the ``s3_*`` settings (Yandex Object Storage by default) apply
here, with the keys from the Secret ``backup.s3_secret`` (``infra/`` creates the bucket and the
key).

The scheduled backup is a CronJob in the members' own image: ``citus-backup schedule`` finds
each group's leader pod and its standbys by their labels and runs ``citus-backup backup`` in
the leader through the exec API. pgBackRest there copies the files from a streaming standby
(``--backup-standby``), reaching it through pgBackRest's TLS server, a sidecar in every
member (``pgbackrest_server_container``): certificates from the cluster's CA both ways, the
members' own certificate as the client's, admitted by its CN. The leader only runs the
start/stop calls; a group without a standby answering is backed up from its leader. Its
ServiceAccount may list pods and exec into them in this namespace, nothing else
(``BACKUP_RBAC_RULES``).
"""

from __future__ import annotations

from ....errors import SpecError
from ... import pgbackrest as pgbr
from ...spec import ClusterSpec
from .names import (
    BACKUP_SCRIPT,
    FOLLOWER_LABEL_VALUE,
    GROUP_LABEL,
    IMAGE_UID,
    LEADER_LABEL_VALUE,
    MEMBER_CERT_CN,
    PATRONI_CONTAINER,
    PGBACKREST_CONF_KEY,
    PGBACKREST_CONFIG,
    PGBACKREST_CONTAINER,
    PGBACKREST_MOUNT,
    PGBACKREST_TLS_PORT,
    PGBACKREST_WORK_DIR,
    PGDATA_DIR,
    PGDATA_MOUNT,
    POSTGRES_PORT,
    ROLE_LABEL,
    S3_SECRET_KEYS,
    SECRET_KEYS,
    SOCKET_DIR,
    TLS_MOUNT,
    Manifest,
    backup_labels,
    backup_name,
    base_labels,
    container_security,
    headless_name,
    highest_group,
    object_meta,
    pgbackrest_configmap_name,
    secret_env,
)

VOLUME = "pgbackrest"


def kubernetes_repository(spec: ClusterSpec) -> tuple[ClusterSpec, str]:
    """The spec pgBackRest's config is rendered from on Kubernetes (S3 whatever repo_type
    says), and the repository's path prefix in the bucket: ``repo_path`` when the spec is
    already S3, else ``/<scope>`` (a posix repo_path is a local directory)."""
    b = spec.backup
    path = b.repo_path if b.repo_type == "s3" and b.repo_path else f"/{spec.name}"
    s3 = spec.model_copy(update={"backup": b.model_copy(update={"repo_type": "s3"})})
    return s3, path


def s3_secret_name(spec: ClusterSpec) -> str:
    name = spec.backup.s3_secret
    if "_" in name:
        raise SpecError(f"backup.s3_secret: {name!r} is not a valid Kubernetes name (no '_')")
    return name


def pgbackrest_conf(spec: ClusterSpec) -> str:
    """One pgbackrest.conf for every member: a stanza per group, each naming the pod's own
    PostgreSQL as pg1 (same path, socket and port in every pod). Groups up to
    ``highest_group`` have their stanza already, so ``add-worker`` needs no re-render."""
    s3, path = kubernetes_repository(spec)
    pod = [pgbr.PgTarget(PGDATA_DIR, SOCKET_DIR, POSTGRES_PORT)]
    stanzas = {pgbr.stanza(spec, g): pod for g in range(highest_group(spec) + 1)}
    # the TLS server's settings (only `pgbackrest server` reads them); the Secret's key is
    # root's, mode 0440, which pgBackRest accepts for a key file owned by root
    server = [
        "tls-server-address=*",
        f"tls-server-port={PGBACKREST_TLS_PORT}",
        f"tls-server-cert-file={TLS_MOUNT}/tls.crt",
        f"tls-server-key-file={TLS_MOUNT}/tls.key",
        f"tls-server-ca-file={TLS_MOUNT}/ca.crt",
        f"tls-server-auth={MEMBER_CERT_CN}=*",
    ]
    return pgbr.render_config(s3, path, stanzas, PGBACKREST_WORK_DIR, server)


def pgbackrest_configmap(spec: ClusterSpec) -> Manifest:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": object_meta(spec, pgbackrest_configmap_name(spec), base_labels(spec)),
        "data": {PGBACKREST_CONF_KEY: pgbackrest_conf(spec)},
    }


def pgbackrest_env(spec: ClusterSpec, group: int) -> list[Manifest]:
    """What a member's entrypoint and pgBackRest read: the config, the group's stanza, and
    the S3 keys (pgBackRest takes ``PGBACKREST_*`` variables as its options)."""
    if not spec.backup.archiving:
        return []
    env: list[Manifest] = [
        {"name": "CITUS_PGBACKREST_CONFIG", "value": PGBACKREST_CONFIG},
        {"name": "CITUS_PGBACKREST_STANZA", "value": pgbr.stanza(spec, group)},
    ]
    secret = s3_secret_name(spec)
    for var, key in S3_SECRET_KEYS.items():
        ref = {"name": secret, "key": key}
        env.append({"name": var, "valueFrom": {"secretKeyRef": ref}})
    return env


def pgbackrest_volume(spec: ClusterSpec) -> Manifest:
    return {"name": VOLUME, "configMap": {"name": pgbackrest_configmap_name(spec)}}


def pgbackrest_mount() -> Manifest:
    return {"name": VOLUME, "mountPath": PGBACKREST_MOUNT, "readOnly": True}


def pgbackrest_server_container(spec: ClusterSpec) -> Manifest:
    """pgBackRest's TLS server beside Patroni: what a backup run on the group's leader reads
    this member's files and PostgreSQL through, when this member is the standby it copies
    from. It shares the data volume and PostgreSQL's socket with the Patroni container."""
    return {
        "name": PGBACKREST_CONTAINER,
        "image": spec.kubernetes.image,
        "imagePullPolicy": "IfNotPresent",
        "command": ["pgbackrest", f"--config={PGBACKREST_CONFIG}", "server"],
        # the remote it starts for a backup logs in to PostgreSQL over the socket (SCRAM)
        "env": [secret_env(spec, "PGPASSWORD", SECRET_KEYS["superuser"])],
        "ports": [{"name": "pgbackrest", "containerPort": PGBACKREST_TLS_PORT, "protocol": "TCP"}],
        "readinessProbe": {
            "tcpSocket": {"port": "pgbackrest"},
            "periodSeconds": 10,
            "timeoutSeconds": 5,
        },
        "resources": {
            "requests": {"cpu": "10m", "memory": "32Mi"},
            # a backup's remote reads and compresses (process-max) with 1 MiB buffers
            "limits": {"memory": "256Mi"},
        },
        "securityContext": container_security(),
        "volumeMounts": [
            {"name": "pgdata", "mountPath": PGDATA_MOUNT},
            {"name": "tls", "mountPath": TLS_MOUNT, "readOnly": True},
            {"name": "run", "mountPath": SOCKET_DIR},
            {"name": "tmp", "mountPath": "/tmp"},
            pgbackrest_mount(),
        ],
    }


def standby_host_template(spec: ClusterSpec) -> str:
    """A member's address by pod name and group, as the scheduled backup names standbys."""
    ns = spec.kubernetes.namespace
    service = headless_name(spec, "{group}")  # type: ignore[arg-type] -- a placeholder
    return "{pod}." + f"{service}.{ns}.svc"


def backup_cronjob(spec: ClusterSpec) -> Manifest:
    """``backup.schedule``: a ``backup.scheduled_type`` backup of every group, on its leader."""
    b = spec.backup
    labels = backup_labels(spec)
    members = ",".join(f"{k}={v}" for k, v in base_labels(spec).items())
    container = {
        "name": "backup",
        "image": spec.kubernetes.image,
        "imagePullPolicy": "IfNotPresent",
        "command": [BACKUP_SCRIPT, "schedule"],
        "args": [
            f"--type={b.scheduled_type}",
            f"--members={members}",
            f"--group-label={GROUP_LABEL}",
            f"--leader={ROLE_LABEL}={LEADER_LABEL_VALUE}",
            f"--standby={ROLE_LABEL}={FOLLOWER_LABEL_VALUE}",
            f"--standby-host={standby_host_template(spec)}",
            f"--tls-port={PGBACKREST_TLS_PORT}",
            f"--container={PATRONI_CONTAINER}",
        ],
        "resources": {
            "requests": {"cpu": "10m", "memory": "64Mi"},
            "limits": {"memory": "256Mi"},
        },
        "securityContext": container_security(),
    }
    pod = {
        "serviceAccountName": backup_name(spec),
        "restartPolicy": "Never",
        "enableServiceLinks": False,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": IMAGE_UID,
            "runAsGroup": IMAGE_UID,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [container],
    }
    return {
        "apiVersion": "batch/v1",
        "kind": "CronJob",
        "metadata": object_meta(spec, backup_name(spec), labels),
        "spec": {
            "schedule": b.schedule,
            # the same clock as the Dagster schedules (UTC), not the controller manager's
            "timeZone": "Etc/UTC",
            # one backup at a time; a missed run is started up to an hour late, then skipped
            "concurrencyPolicy": "Forbid",
            "startingDeadlineSeconds": 3600,
            "successfulJobsHistoryLimit": 3,
            "failedJobsHistoryLimit": 3,
            "jobTemplate": {
                "metadata": {"labels": dict(labels)},
                "spec": {
                    # not retried blindly: pgBackRest resumes an interrupted backup next time
                    "backoffLimit": 0,
                    "template": {"metadata": {"labels": dict(labels)}, "spec": pod},
                },
            },
        },
    }


def backup_manifests(spec: ClusterSpec) -> list[Manifest]:
    """The pgBackRest ConfigMap and the scheduled backup; nothing when archiving is off."""
    if not spec.backup.archiving:
        return []
    return [pgbackrest_configmap(spec), backup_cronjob(spec)]


__all__ = [
    "backup_cronjob",
    "backup_manifests",
    "kubernetes_repository",
    "pgbackrest_conf",
    "pgbackrest_configmap",
    "pgbackrest_env",
    "pgbackrest_mount",
    "pgbackrest_server_container",
    "pgbackrest_volume",
    "s3_secret_name",
    "standby_host_template",
]
