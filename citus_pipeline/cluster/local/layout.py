"""Where everything of a local cluster lives: one spec and one state directory give every path.

The other parts of the local backend take a :class:`Layout` rather than the cluster, so each
sees the addresses and files it works on and nothing else.
"""

from __future__ import annotations

import ssl
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from ...errors import ClusterError
from ...pki import client_context
from ..spec import ClusterSpec


@dataclass(frozen=True)
class Member:
    group: int
    index: int
    name: str
    address: str
    pg_port: int
    api_port: int
    dir: Path
    ca_file: Path | None = None  # the cluster's CA where tls is on: HTTPS, verify-full

    @property
    def data_dir(self) -> Path:
        return self.dir / "data"

    @property
    def config(self) -> Path:
        return self.dir / "patroni.yml"

    @property
    def log(self) -> Path:
        return self.dir / "patroni.log"

    @property
    def pidfile(self) -> Path:
        """Patroni's pid, written when we start it."""
        return self.dir / "patroni.pid"

    @property
    def postmaster_pidfile(self) -> Path:
        """PostgreSQL's own pid file: Patroni detaches the postmaster, so only this finds it."""
        return self.data_dir / "postmaster.pid"

    @property
    def pgpass(self) -> Path:
        """The passfile Patroni's own connections (replication, rewind) read."""
        return self.dir / "pgpass"

    @property
    def socket_dir(self) -> Path:
        """PostgreSQL's unix socket: pgBackRest reaches its database through a socket only."""
        return self.dir / "run"

    @property
    def pgbackrest_dir(self) -> Path:
        """pgBackRest's spool (async archiving), lock and log files of this member."""
        return self.dir / "pgbackrest"

    @property
    def pgbackrest_conf(self) -> Path:
        return self.dir / "pgbackrest.conf"

    @property
    def tls_cert(self) -> Path:
        """This member's serving certificate (PostgreSQL and Patroni's REST API)."""
        return self.dir / "tls" / "server.crt"

    @property
    def tls_key(self) -> Path:
        return self.dir / "tls" / "server.key"

    @property
    def api_url(self) -> str:
        scheme = "https" if self.ca_file else "http"
        return f"{scheme}://{self.address}:{self.api_port}"

    @property
    def api_verify(self) -> ssl.SSLContext | bool:
        """httpx's ``verify`` for this member's REST API."""
        return client_context(self.ca_file)


class Layout:
    """The state directory of one cluster: its files, and each member's address and directory."""

    def __init__(self, spec: ClusterSpec, state_dir: Path) -> None:
        self.spec = spec
        self.state_dir = state_dir

    @property
    def etcd_dir(self) -> Path:
        return self.state_dir / "etcd"

    @property
    def etcd_pidfile(self) -> Path:
        return self.etcd_dir / "etcd.pid"

    @property
    def supervisor_dir(self) -> Path:
        return self.state_dir / "supervisor"

    @property
    def supervisor_pidfile(self) -> Path:
        return self.supervisor_dir / "supervisor.pid"

    @property
    def metrics_dir(self) -> Path:
        """The exporters' and Prometheus's configuration, logs, pids and Prometheus's data."""
        return self.state_dir / "metrics"

    @property
    def metrics_pid_dir(self) -> Path:
        return self.metrics_dir / "pids"

    def metrics_pidfile(self, name: str) -> Path:
        """The pid of the metrics process ``name`` (``prometheus``, ``exporter-<member>``)."""
        return self.metrics_pid_dir / f"{name}.pid"

    @property
    def state_file(self) -> Path:
        return self.state_dir / "cluster.json"

    @property
    def lock_file(self) -> Path:
        return self.state_dir / ".lock"

    @property
    def tls_dir(self) -> Path:
        """The cluster's CA (ca.crt, ca.key) where tls is on."""
        return self.state_dir / "tls"

    @property
    def ca_file(self) -> Path | None:
        return self.tls_dir / "ca.crt" if self.spec.tls.enabled else None

    @property
    def pooler_dir(self) -> Path:
        """PgBouncer's and HAProxy's configs, pidfiles, logs (``pooler:``)."""
        return self.state_dir / "pooler"

    @property
    def pooler_tls(self) -> tuple[Path, Path]:
        """PgBouncer's serving certificate and key."""
        return self.pooler_dir / "tls" / "server.crt", self.pooler_dir / "tls" / "server.key"

    @property
    def secrets_file(self) -> Path:
        return self.state_dir / "secrets.json"

    @property
    def client_passfile(self) -> Path:
        return self.state_dir / "pgpass"

    @property
    def backup_dir(self) -> Path:
        """pgBackRest's group configurations, the restore points, and the default repository."""
        return self.state_dir / "backup"

    @property
    def restore_points_file(self) -> Path:
        return self.backup_dir / "restore-points.json"

    def repo_path(self) -> str:
        b = self.spec.backup
        if b.repo_path:
            return b.repo_path
        return str(self.backup_dir / "repo") if b.repo_type == "posix" else f"/{self.spec.name}"

    def member(self, group: int, index: int) -> Member:
        name = self.spec.member_name(group, index)
        return Member(
            group=group,
            index=index,
            name=name,
            address=str(self.spec.member_address(group, index)),
            pg_port=self.spec.local.postgres_port,
            api_port=self.spec.local.restapi_port,
            dir=self.state_dir / "members" / name,
            ca_file=self.ca_file,
        )

    def members(self, groups: Iterable[int]) -> list[Member]:
        out = []
        for g in groups:
            out += [self.member(g, i) for i in range(1, self.spec.members_in_group(g) + 1)]
        return out

    def member_by_name(self, name: str, groups: Iterable[int]) -> Member:
        members = self.members(groups)
        for m in members:
            if m.name == name:
                return m
        known = ", ".join(m.name for m in members)
        raise ClusterError(f"no member named {name!r} in this cluster (members: {known})")


__all__ = ["Layout", "Member"]
