"""The sections only one backend reads: ``local`` (addresses and ports of processes on this
machine) and ``kubernetes`` (namespace, image, storage, resources, network policy).
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from .base import Identifier, Port, StrictModel


class LocalSpec(StrictModel):
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
    # on the pooler's address, off 9127 (where that exporter's own examples put it) likewise
    pooler_exporter_port: Port = Field(
        19127, description="the pooler's PgBouncer exporter (metrics), on the pooler's address"
    )
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


class ResourcesSpec(StrictModel):
    cpu: str = "1"
    memory: str = "4Gi"
    cpu_limit: str | None = None
    memory_limit: str | None = "4Gi"


class KubernetesSpec(StrictModel):
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
    # the pooler (pooler.enabled): Debian's PgBouncer and its exporter, built from
    # k8s/pooler/Dockerfile
    pooler_image: str = "cr.yandex/citus-pipeline/pgbouncer:1.18.0-2.1.2"
    pooler_replicas: int = Field(
        2, ge=1, le=16, description="PgBouncer pods behind the pooler's load balancer"
    )
    pooler_resources: ResourcesSpec = ResourcesSpec(cpu="250m", memory="64Mi", memory_limit="256Mi")
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


__all__ = ["KubernetesSpec", "LocalSpec", "ResourcesSpec"]
