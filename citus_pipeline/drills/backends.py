"""The fault injector of a backend, by the backend's name."""

from __future__ import annotations

from ..cluster.topology import ClusterBackend
from .injector import FaultInjector


def injector_for(cluster: ClusterBackend) -> FaultInjector:
    """The fault injector of ``cluster``'s backend, with what that backend gives alone (a
    caller that can do more, such as freezing a pod's processes, builds its own)."""
    # imported here: a local drill never needs the Kubernetes client, nor the other way round
    if cluster.name == "local":
        from .local import LocalFaults

        return LocalFaults(cluster)  # type: ignore[arg-type]
    from .kubernetes import KubernetesFaults

    return KubernetesFaults(cluster)  # type: ignore[arg-type]


__all__ = ["injector_for"]
