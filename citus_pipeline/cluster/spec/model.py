"""ClusterSpec: the whole spec, its sections together, and what derives from them (every
member's address and name, Patroni's cluster-wide DCS settings).
"""

from __future__ import annotations

import ipaddress
from typing import Any

from pydantic import Field, model_validator

from .backends import KubernetesSpec, LocalSpec
from .base import Identifier, StrictModel
from .sections import (
    BackupSpec,
    CoordinatorSpec,
    CredentialsSpec,
    MetricsSpec,
    PatroniSpec,
    PoolerSpec,
    PostgresSpec,
    TLSSpec,
    WorkersSpec,
)


class ClusterSpec(StrictModel):
    """Topology and settings of one HA Citus cluster (one Patroni scope)."""

    name: Identifier = Field("citusdemo", description="Patroni scope")
    database: Identifier = "citus"
    shard_count: int = Field(32, ge=1, le=4096)
    coordinator: CoordinatorSpec = CoordinatorSpec()
    workers: WorkersSpec = WorkersSpec()
    patroni: PatroniSpec = PatroniSpec()
    postgresql: PostgresSpec = PostgresSpec()
    credentials: CredentialsSpec = CredentialsSpec()
    tls: TLSSpec = TLSSpec()
    pooler: PoolerSpec = PoolerSpec()
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
        if self.pooler.enabled:
            claim(str(self.leader_endpoint_address), loc.postgres_port, "leader endpoint")
            claim(str(self.pooler_address), self.pooler.port, "pooler")
            claim(str(self.pooler_address), loc.pooler_exporter_port, "pooler exporter")
        conns = int(self.postgresql.parameters.get("max_connections", 100))
        if self.pooler.enabled and self.pooler.default_pool_size > conns // 2:
            raise ValueError(
                f"pooler.default_pool_size {self.pooler.default_pool_size} must leave the "
                f"coordinator's max_connections ({conns}) half for Citus, Patroni and backups"
            )
        return self

    # ---- derived topology -------------------------------------------------------------
    @property
    def etcd_address(self) -> ipaddress.IPv4Address:
        return self.local.etcd_address or self.local.base_address + 254

    @property
    def prometheus_address(self) -> ipaddress.IPv4Address:
        return self.local.prometheus_address or self.local.base_address + 253

    @property
    def leader_endpoint_address(self) -> ipaddress.IPv4Address:
        """Local: HAProxy's address, where the coordinator's leader answers (what the leader
        Service is on Kubernetes); PgBouncer's server side."""
        return self.local.base_address + 252

    @property
    def pooler_address(self) -> ipaddress.IPv4Address:
        """Local: PgBouncer's address."""
        return self.local.base_address + 251

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


__all__ = ["ClusterSpec"]
