"""The sections of the spec every backend reads: the topology's sizes, Patroni's timing,
PostgreSQL's parameters, where credentials come from, metrics and backups.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from .base import Identifier, Port, StrictModel


class CoordinatorSpec(StrictModel):
    members: int = Field(3, ge=1, le=9, description="Patroni members of Citus group 0")


class WorkersSpec(StrictModel):
    groups: int = Field(2, ge=1, le=64, description="worker groups at `up` (groups 1..N)")
    members: int = Field(2, ge=1, le=9, description="Patroni members per worker group")


class PatroniSpec(StrictModel):
    ttl: int = Field(20, ge=5)
    loop_wait: int = Field(5, ge=1)
    retry_timeout: int = Field(5, ge=1)
    synchronous_mode: bool = True
    synchronous_mode_strict: bool = False
    primary_start_timeout: int = Field(
        0, ge=0, description="0: fail over as soon as a leader's postmaster crash is seen"
    )
    maximum_lag_on_failover: int = Field(1048576, ge=0)
    failsafe_mode: bool = Field(
        True,
        description="Patroni's DCS failsafe mode: while the DCS (etcd, or the Kubernetes API) "
        "is unreachable, a leader that still reaches every member of its group over the REST "
        "API stays primary instead of demoting itself; applied when a cluster is created",
    )

    @model_validator(mode="after")
    def _timing(self) -> PatroniSpec:
        if self.loop_wait + 2 * self.retry_timeout > self.ttl:
            raise ValueError(
                f"loop_wait + 2*retry_timeout must not exceed ttl "
                f"({self.loop_wait} + 2*{self.retry_timeout} > {self.ttl})"
            )
        return self


class PostgresSpec(StrictModel):
    version: Literal[15] = 15
    parameters: dict[str, str | int | float | bool] = Field(
        default_factory=lambda: {
            "max_connections": 200,
            # Every insert lands on a random leaf of the uuid primary key (~560 MB per worker
            # at 28 M rows): with PostgreSQL's 128 MB most of them missed the cache, and
            # checkpoints a few GB apart made each touched leaf a full-page image in the WAL
            # again (which the synchronous standby replays). 1 GB, 15 min / 4 GB between
            # checkpoints and lz4 page images: 8 M rows \copy 51.0 -> 46.0 s.
            "shared_buffers": "1GB",
            "work_mem": "16MB",
            "maintenance_work_mem": "128MB",
            "max_wal_size": "4GB",
            "checkpoint_timeout": "15min",
            "wal_compression": "lz4",
            "wal_keep_size": "256MB",
            "max_worker_processes": 16,
            "max_replication_slots": 20,
            "max_wal_senders": 20,
            "wal_retrieve_retry_interval": "250ms",
            # A synchronous standby that stops answering without its connection closing (the
            # network between its node and its leader's cut) holds every commit of its group
            # until the leader's walsender gives up on it and Patroni takes it out of
            # synchronous_standby_names: after PostgreSQL's 60 s that was a 60 s write gap on
            # the sandbox (`bench faults --scenario cut-leader-from-standby`).
            "wal_sender_timeout": "10s",
            # citus.node_conninfo is the backends': sslmode=verify-full with the cluster's CA
            # (locally where tls.enabled) and TCP_TIMEOUTS; a spec may still set its own
            "citus.max_cached_conns_per_worker": 4,
            # Four shard moves at once (Citus's global limit is 1, which runs every move of a
            # rebalance alone whatever the per-node limit says): 33 MB/s instead of 30 at
            # 28 M rows. A move waiting for its subscription to catch up errors after this
            # long without progress, and Citus retries it 5 s later: when a source group
            # fails over, the moves already past their copy otherwise wait for a dead
            # publisher for Citus's default of 2 h, and the rebalance with them.
            "citus.max_background_task_executors": 4,
            "citus.logical_replication_timeout": "60s",
            "citus.max_background_task_executors_per_node": 4,
        }
    )

    @field_validator("parameters")
    @classmethod
    def _managed_by_patroni(cls, v: dict[str, Any]) -> dict[str, Any]:
        owned = {"listen_addresses", "port", "data_directory", "hba_file", "ident_file"}
        clash = sorted(owned & set(v))
        if clash:
            raise ValueError(f"{', '.join(clash)} are set by the backend, not by the spec")
        return v


class CredentialsSpec(StrictModel):
    """Where passwords come from. Never stored in the spec itself.

    ``generate`` (local default): random passwords created once and kept in the state
    directory with mode 0600. ``env``: read from the named environment variables (the
    Kubernetes deployment maps them from a Secret).
    """

    source: Literal["generate", "env"] = "generate"
    superuser: Identifier = "postgres"
    replication_user: Identifier = "replicator"
    restapi_user: Identifier = "patroni"
    superuser_password_env: str = "CITUS_SUPERUSER_PASSWORD"
    replication_password_env: str = "CITUS_REPLICATION_PASSWORD"
    restapi_password_env: str = "PATRONI_RESTAPI_PASSWORD"
    # local etcd: Patroni's user may read and write its namespace only; root only administers
    etcd_user: Identifier = "patroni"
    kubernetes_secret: Identifier = "citus-credentials"


class MetricsSpec(StrictModel):
    """Prometheus metrics of every member: Patroni's /metrics and a postgres exporter."""

    scrape_interval: int = Field(10, ge=1, le=300, description="seconds between scrapes")
    prepared_xact_alert_seconds: int = Field(
        300, ge=1, description="a prepared (2PC) transaction older than this raises an alert"
    )


class TLSSpec(StrictModel):
    """TLS between every client and member: a CA of the cluster's own, a certificate per
    member (its address), ``hostssl`` rules only, ``sslmode=verify-full`` for Citus's and
    Patroni's connections, Patroni's REST API on HTTPS.

    Locally the CA and the certificates are generated into the state directory (keys mode
    0600); on Kubernetes TLS is always on, from the Secret ``kubernetes.tls_secret``.
    """

    enabled: bool = Field(True, description="local: off only to compare against plain TCP")
    validity_days: int = Field(
        365, ge=2, le=3650, description="local certificates; renewed by `up` in their last tenth"
    )


class PoolerSpec(StrictModel):
    """PgBouncer in front of the coordinator's leader, the clients' default way in.

    Transaction pooling: a client keeps no session state (no SET, no session temp tables, no
    server-side prepared statements: the project's clients connect with psycopg's
    ``prepare_threshold=None``); one server connection serves many clients in turn. Locally
    PgBouncer reaches the leader through HAProxy, which asks each coordinator member's
    Patroni ``/primary`` every second; on Kubernetes, through the leader Service.
    """

    enabled: bool = Field(True, description="off: clients connect to the coordinator directly")
    port: Port = 6432
    pool_mode: Literal["transaction", "session"] = "transaction"
    max_client_conn: int = Field(2000, ge=10, le=100_000, description="clients at once")
    default_pool_size: int = Field(
        40, ge=1, le=1000, description="server connections per database and user"
    )


class BackupSpec(StrictModel):
    """Continuous WAL archiving and backups with pgBackRest: one stanza per Citus group.

    The repository is a posix directory (local default: ``<state dir>/backup/repo``) or
    S3-compatible object storage (Kubernetes: Yandex Object Storage, path-style). S3 keys are
    never in the spec: pgBackRest reads them from ``PGBACKREST_REPO1_S3_KEY`` and
    ``PGBACKREST_REPO1_S3_KEY_SECRET`` (on Kubernetes, the Secret ``s3_secret``).
    """

    archiving: bool = Field(True, description="archive every group's WAL (off: no PITR)")
    repo_type: Literal["posix", "s3"] = "posix"
    repo_path: str | None = Field(
        None, description="posix: a directory (default <state>/backup/repo); s3: a path prefix"
    )
    s3_endpoint: str = "storage.yandexcloud.net"
    s3_bucket: str = "citus-pipeline-backups"
    s3_region: str = "ru-central1"
    s3_uri_style: Literal["path", "host"] = "path"
    s3_verify_tls: bool = True
    s3_port: Port = 443
    s3_secret: Identifier = Field("citus-backup-s3", description="Kubernetes Secret of the keys")
    retention_full: int = Field(2, ge=1, le=9999, description="full backups kept per group")
    retention_diff: int | None = Field(None, ge=1, le=9999)
    compress_type: Literal["lz4", "zst", "gz", "none"] = "lz4"
    archive_timeout: int = Field(
        60, ge=0, description="seconds before a partly filled WAL segment is archived (RPO)"
    )
    process_max: int = Field(2, ge=1, le=64, description="pgBackRest processes per command")
    schedule: str = Field(
        "0 3 * * *", description="cron of the scheduled backup and restore point (Dagster, k8s)"
    )
    scheduled_type: Literal["full", "diff", "incr"] = "incr"

    @field_validator("repo_path")
    @classmethod
    def _absolute(cls, v: str | None) -> str | None:
        if v is not None and not v.startswith("/"):
            raise ValueError(f"{v!r} must be an absolute path")
        return v

    @field_validator("schedule")
    @classmethod
    def _cron(cls, v: str) -> str:
        if len(v.split()) != 5:
            raise ValueError(f"{v!r} is not a 5-field cron expression")
        return v


__all__ = [
    "BackupSpec",
    "CoordinatorSpec",
    "CredentialsSpec",
    "MetricsSpec",
    "PatroniSpec",
    "PoolerSpec",
    "PostgresSpec",
    "TLSSpec",
    "WorkersSpec",
]
