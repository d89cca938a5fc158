"""ClusterSpec: the one typed description of the HA Citus cluster.

Both backends (local processes and Kubernetes) are driven by this model, loaded from
YAML (``cluster.yaml`` at the repository root by default). An invalid spec is refused
before anything starts, with a message that names the field and the reason.
"""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .. import settings
from ..errors import UserError
from ..settings import DEFAULT_SPEC_PATH

Port = Annotated[int, Field(ge=1, le=65535)]
Identifier = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_-]{0,39}$")]


# Patroni's pg_basebackup options for a new replica, on every backend: clone at once instead of
# waiting for the leader's spread checkpoint (up to 0.9 × checkpoint_timeout, ~4.5 min).
REPLICA_BASEBACKUP_OPTIONS: tuple[dict[str, str], ...] = ({"checkpoint": "fast"},)


class SpecError(UserError):
    """An invalid cluster spec; the message names the file, the field and the reason."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CoordinatorSpec(_Strict):
    members: int = Field(3, ge=1, le=9, description="Patroni members of Citus group 0")


class WorkersSpec(_Strict):
    groups: int = Field(2, ge=1, le=64, description="worker groups at `up` (groups 1..N)")
    members: int = Field(2, ge=1, le=9, description="Patroni members per worker group")


class PatroniSpec(_Strict):
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


# TCP timeouts for every connection to a node: the coordinator's to the workers (in
# citus.node_conninfo) and the clients' to the coordinator (in the DSNs the project hands out).
# A node cut off by the network, or paused, never closes its sockets: without these a
# statement waits for the kernel's retransmissions (about 15 min), holding the shard locks
# Patroni's citus_update_node needs to put the new leader into pg_dist_node. Sent data
# unacknowledged for 10 s, or an idle connection silent for 10 + 2 x 5 s, closes it.
TCP_TIMEOUTS = (
    "keepalives=1 keepalives_idle=10 keepalives_interval=5 keepalives_count=2 "
    "tcp_user_timeout=10000"
)


@dataclass(frozen=True)
class LivenessProbe:
    """How often a member's Patroni is asked ``/liveness``, and when it counts as hung."""

    initial_delay_s: int
    period_s: int
    timeout_s: int
    failure_threshold: int


# One probe for both backends: the kubelet's on Kubernetes, the supervisor's locally. A member
# that stops answering is killed about ttl after the stall (3 probes 5 s apart, each given
# 5 s); a Patroni that only starts gets 30 s first.
LIVENESS = LivenessProbe(initial_delay_s=30, period_s=5, timeout_s=5, failure_threshold=3)


def with_tcp_timeouts(conninfo: str) -> str:
    """``conninfo`` with :data:`TCP_TIMEOUTS`, unless it sets TCP timeouts of its own."""
    if "keepalives" in conninfo or "tcp_user_timeout" in conninfo:
        return conninfo
    return f"{conninfo} {TCP_TIMEOUTS}".strip()


class PostgresSpec(_Strict):
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
            # local loopback; k8s renders verify-full; both add TCP_TIMEOUTS
            "citus.node_conninfo": "sslmode=disable",
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


class CredentialsSpec(_Strict):
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


class LocalSpec(_Strict):
    """Local backend: every member is its own loopback 'host'.

    Group g, member m (1-based) listens on ``base_address + 256*g + m``: with the default
    127.0.10.0 the coordinator members are 127.0.10.1-3, group 1 is 127.0.11.x, ...
    With ``network: netns`` every member has a network namespace of its own on a private
    /16 (default 10.213.0.0), so faults can cut members off from each other (root only).
    """

    network: Literal["loopback", "netns"] = Field(
        "loopback",
        description="loopback: every member an address of the host's loopback; netns: every "
        "member in its own network namespace behind a bridge, so partitions are real (root)",
    )
    base_address: ipaddress.IPv4Address  # default 127.0.10.0, or 10.213.0.0 with netns
    supervisor: bool = Field(
        True,
        description="a process that probes every member's Patroni /liveness and kills and "
        "restarts a member that stops answering (a kubelet's liveness probe, locally)",
    )
    postgres_port: Port = 5432
    restapi_port: Port = 8008
    etcd_address: ipaddress.IPv4Address | None = None  # default: base_address + 254
    etcd_client_port: Port = 2379
    etcd_peer_port: Port = 2380
    service_user: str = Field("postgres", description="unprivileged user that runs Patroni as root")
    pg_bin_dir: Path | None = Field(None, description="default: from PG_CONFIG or pg_config")
    # Off the ports of Debian's own prometheus (9090) and postgres-exporter (9187) services,
    # which their packages start system-wide where systemd runs.
    exporter_port: Port = Field(19187, description="each member's postgres exporter (metrics)")
    prometheus_address: ipaddress.IPv4Address | None = None  # default: base_address + 253
    prometheus_port: Port = 19090
    prometheus_retention: str = Field("7d", pattern=r"^[0-9]+[hdwy]$")

    @model_validator(mode="before")
    @classmethod
    def _default_base(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("base_address") is None:
            netns = data.get("network") == "netns"
            data = {**data, "base_address": "10.213.0.0" if netns else "127.0.10.0"}
        return data

    @model_validator(mode="after")
    def _addresses(self) -> LocalSpec:
        v = self.base_address
        if self.network == "loopback":
            if not v.is_loopback:
                raise ValueError(f"local.base_address {v} is not a loopback address (127/8)")
            if int(v) & 0xFF:
                raise ValueError(
                    f"local.base_address {v} must end in .0 (member m of group g is "
                    "base + 256*g + m)"
                )
            for name in ("etcd_address", "prometheus_address"):
                a = getattr(self, name)
                if a is not None and not a.is_loopback:
                    raise ValueError(f"local.{name} {a} is not a loopback address (127/8)")
        else:
            # the whole cluster in one private /16; etcd and Prometheus on the host's bridge
            if not v.is_private or v.is_loopback or int(v) & 0xFFFF:
                raise ValueError(
                    f"local.base_address {v}: with network netns, a private /16 that ends in "
                    ".0.0 (10.213.0.0 by default)"
                )
            for name in ("etcd_address", "prometheus_address"):
                if getattr(self, name) is not None:
                    raise ValueError(
                        f"local.{name}: with network netns it is the bridge's, base + 254 "
                        "(etcd) or + 253 (Prometheus); leave it unset"
                    )
        return self


class MetricsSpec(_Strict):
    """Prometheus metrics of every member: Patroni's /metrics and a postgres exporter."""

    scrape_interval: int = Field(10, ge=1, le=300, description="seconds between scrapes")
    prepared_xact_alert_seconds: int = Field(
        300, ge=1, description="a prepared (2PC) transaction older than this raises an alert"
    )


class BackupSpec(_Strict):
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


class ResourcesSpec(_Strict):
    cpu: str = "1"
    memory: str = "4Gi"
    cpu_limit: str | None = None
    memory_limit: str | None = "4Gi"


class KubernetesSpec(_Strict):
    """Settings only the Kubernetes backend reads (manifests are rendered from the spec)."""

    namespace: Identifier = "citus"
    image: str = "cr.yandex/citus-pipeline/patroni-citus:15-13.2-4.1"
    storage_class: str | None = "yc-network-ssd"
    storage_size: str = "100Gi"
    coordinator_resources: ResourcesSpec = ResourcesSpec(cpu="1", memory="4Gi", memory_limit="4Gi")
    worker_resources: ResourcesSpec = ResourcesSpec(cpu="1500m", memory="6Gi", memory_limit="6Gi")
    termination_grace_period_seconds: int = Field(120, ge=30)
    tls_secret: Identifier = "citus-tls"
    api_version: str = Field(
        "1.30",
        pattern=r"^1\.[0-9]{2}$",
        description="Kubernetes minor version the rendered manifests are validated against",
    )
    client_cidrs: tuple[str, ...] = Field(
        ("10.128.0.0/24", "10.129.0.0/24", "10.130.0.0/24"),
        description="source ranges allowed to reach the coordinator/workers load balancers' "
        "targets on 5432 (default: the three subnets infra/ creates)",
    )
    dagster_namespace: Identifier = Field(
        "dagster", description="namespace whose Dagster pods may reach the coordinator on 5432"
    )
    dagster_service_account: Identifier = Field(
        "dagster-user-deployments",
        description="ServiceAccount of Dagster's runs: the code location's, which the Helm "
        "chart puts on the runs it launches (`<release>-user-deployments`); may read the "
        "cluster's members and record restore points",
    )
    # the release of Debian's prometheus-postgres-exporter, which the tests run with the same
    # arguments and queries as this sidecar
    exporter_image: str = "quay.io/prometheuscommunity/postgres-exporter:v0.11.1"
    prometheus_namespace: Identifier = Field(
        "monitoring", description="namespace whose Prometheus may scrape the members' metrics"
    )
    pod_monitor: bool = Field(
        False, description="render a PodMonitor (needs the Prometheus operator's CRDs)"
    )

    @field_validator(
        "namespace",
        "tls_secret",
        "dagster_namespace",
        "dagster_service_account",
        "prometheus_namespace",
    )
    @classmethod
    def _dns_label(cls, v: str) -> str:
        if "_" in v:
            raise ValueError(f"{v!r} is not a valid Kubernetes name (no '_' allowed)")
        return v

    @field_validator("client_cidrs")
    @classmethod
    def _cidrs(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        for c in v:
            try:
                ipaddress.ip_network(c)
            except ValueError:
                raise ValueError(f"{c!r} is not a CIDR network (e.g. 10.128.0.0/24)") from None
        return v


class ClusterSpec(_Strict):
    """Topology and settings of one HA Citus cluster (one Patroni scope)."""

    name: Identifier = Field("citusdemo", description="Patroni scope")
    database: Identifier = "citus"
    shard_count: int = Field(32, ge=1, le=4096)
    coordinator: CoordinatorSpec = CoordinatorSpec()
    workers: WorkersSpec = WorkersSpec()
    patroni: PatroniSpec = PatroniSpec()
    postgresql: PostgresSpec = PostgresSpec()
    credentials: CredentialsSpec = CredentialsSpec()
    metrics: MetricsSpec = MetricsSpec()
    backup: BackupSpec = BackupSpec()
    local: LocalSpec = LocalSpec()
    kubernetes: KubernetesSpec = KubernetesSpec()

    @model_validator(mode="after")
    def _addresses(self) -> ClusterSpec:
        # Every (address, port) a member or etcd binds must be distinct and inside 127/8.
        taken: dict[tuple[str, int], str] = {}
        loc = self.local
        last_group = self.workers.groups + 16  # headroom for add-worker
        top = (
            int(loc.base_address)
            + 256 * last_group
            + max(self.coordinator.members, self.workers.members)
        )
        if top > int(ipaddress.IPv4Address("127.255.255.254")):
            raise ValueError(
                f"local.base_address {loc.base_address} leaves no room for "
                f"{last_group} groups inside 127.0.0.0/8"
            )

        def claim(addr: str, port: int, what: str) -> None:
            other = taken.get((addr, port))
            if other:
                raise ValueError(f"address clash: {what} and {other} both use {addr}:{port}")
            taken[(addr, port)] = what

        for g in range(self.workers.groups + 1):
            n = self.coordinator.members if g == 0 else self.workers.members
            for m in range(1, n + 1):
                a = str(self.member_address(g, m))
                claim(a, loc.postgres_port, f"member {g}-{m} postgres")
                claim(a, loc.restapi_port, f"member {g}-{m} REST API")
                claim(a, loc.exporter_port, f"member {g}-{m} exporter")
        e = str(self.etcd_address)
        claim(e, loc.etcd_client_port, "etcd client")
        claim(e, loc.etcd_peer_port, "etcd peer")
        claim(str(self.prometheus_address), loc.prometheus_port, "prometheus")
        return self

    # ---- derived topology -------------------------------------------------------------
    @property
    def etcd_address(self) -> ipaddress.IPv4Address:
        return self.local.etcd_address or self.local.base_address + 254

    @property
    def prometheus_address(self) -> ipaddress.IPv4Address:
        return self.local.prometheus_address or self.local.base_address + 253

    def member_address(self, group: int, index: int) -> ipaddress.IPv4Address:
        return self.local.base_address + 256 * group + index

    def members_in_group(self, group: int) -> int:
        return self.coordinator.members if group == 0 else self.workers.members

    def member_name(self, group: int, index: int) -> str:
        return f"{self.name}-{group}-{index}"

    @property
    def worker_groups(self) -> list[int]:
        return list(range(1, self.workers.groups + 1))

    def patroni_dcs(self, parameters: dict[str, Any], **postgresql: Any) -> dict[str, Any]:
        """Patroni's ``bootstrap.dcs``: the cluster-wide settings, the same for both backends.

        ``parameters`` are the PostgreSQL parameters the backend runs with; ``postgresql``
        adds backend-specific keys of the DCS ``postgresql`` section (e.g. ``pg_hba``).
        """
        p = self.patroni
        return {
            "ttl": p.ttl,
            "loop_wait": p.loop_wait,
            "retry_timeout": p.retry_timeout,
            "maximum_lag_on_failover": p.maximum_lag_on_failover,
            "synchronous_mode": p.synchronous_mode,
            "synchronous_mode_strict": p.synchronous_mode_strict,
            "primary_start_timeout": p.primary_start_timeout,
            "failsafe_mode": p.failsafe_mode,
            "postgresql": {
                "use_pg_rewind": True,
                "use_slots": True,
                "parameters": parameters,
                **postgresql,
            },
        }


def _format_validation_error(source: str, err: ValidationError) -> str:
    first = err.errors()[0]
    loc = ".".join(str(p) for p in first["loc"]) or "(top level)"
    msg = first["msg"].removeprefix("Value error, ")
    if first["type"] == "extra_forbidden":
        msg = "unknown field"
    more = f" (and {len(err.errors()) - 1} more)" if len(err.errors()) > 1 else ""
    return f"{source}: {loc}: {msg}{more}"


def spec_from_mapping(data: Any, source: str = "<spec>") -> ClusterSpec:
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise SpecError(f"{source}: the spec must be a mapping, got {type(data).__name__}")
    try:
        return ClusterSpec.model_validate(data)
    except ValidationError as err:
        raise SpecError(_format_validation_error(source, err)) from None


def load_spec(path: str | os.PathLike[str] | None = None) -> ClusterSpec:
    """Load and validate a spec: explicit path, else $CITUS_PIPELINE_SPEC, else cluster.yaml."""
    from_env = settings.SPEC.get()
    p = Path(path or from_env or DEFAULT_SPEC_PATH)
    if not p.exists():
        if path is None and not from_env and p == DEFAULT_SPEC_PATH:
            return ClusterSpec()
        raise SpecError(f"{p}: spec file not found")
    try:
        data = yaml.safe_load(p.read_text())
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise SpecError(f"{p}:{where}: invalid YAML: {problem}") from None
    return spec_from_mapping(data, str(p))


__all__ = [
    "DEFAULT_SPEC_PATH",
    "BackupSpec",
    "ClusterSpec",
    "CoordinatorSpec",
    "CredentialsSpec",
    "KubernetesSpec",
    "LocalSpec",
    "MetricsSpec",
    "PatroniSpec",
    "PostgresSpec",
    "ResourcesSpec",
    "SpecError",
    "WorkersSpec",
    "load_spec",
    "spec_from_mapping",
]
