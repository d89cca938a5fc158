"""ClusterSpec: the one typed description of the HA Citus cluster.

Both backends (local processes and Kubernetes) are driven by this model, loaded from
YAML (``cluster.yaml`` at the repository root by default). An invalid spec is refused
before anything starts, with a message that names the field and the reason.

The parts: ``base`` (the strict model and field types), ``sections`` (what every backend
reads), ``backends`` (what only one reads), ``model`` (ClusterSpec and what derives from it),
``loading`` (YAML in, SpecError out), ``fixed`` (what both backends apply and the spec does
not expose). Every name is importable from here.
"""

from __future__ import annotations

from ...settings import DEFAULT_SPEC_PATH
from .backends import KubernetesSpec, LocalSpec, ResourcesSpec
from .fixed import (
    LIVENESS,
    REPLICA_BASEBACKUP_OPTIONS,
    TCP_TIMEOUTS,
    LivenessProbe,
    with_tcp_timeouts,
)
from .loading import load_spec, spec_from_mapping
from .model import ClusterSpec
from .sections import (
    BackupSpec,
    CoordinatorSpec,
    CredentialsSpec,
    MetricsSpec,
    PatroniSpec,
    PostgresSpec,
    WorkersSpec,
)

__all__ = [
    "DEFAULT_SPEC_PATH",
    "LIVENESS",
    "REPLICA_BASEBACKUP_OPTIONS",
    "TCP_TIMEOUTS",
    "BackupSpec",
    "ClusterSpec",
    "CoordinatorSpec",
    "CredentialsSpec",
    "KubernetesSpec",
    "LivenessProbe",
    "LocalSpec",
    "MetricsSpec",
    "PatroniSpec",
    "PostgresSpec",
    "ResourcesSpec",
    "WorkersSpec",
    "load_spec",
    "spec_from_mapping",
    "with_tcp_timeouts",
]
