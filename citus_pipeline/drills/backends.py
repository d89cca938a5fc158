"""The fault injector of each backend: the one table that maps a backend to its injector, as
``cluster.backend.get_backend`` maps a name to a backend."""

from __future__ import annotations

import importlib

from ..cluster.topology import ClusterBackend
from .injector import FaultInjector

# backend name -> (module of this package, injector class); imported when chosen, so a local
# drill never needs the Kubernetes client, nor the other way round
INJECTORS = {
    "local": ("local", "LocalFaults"),
    "kubernetes": ("kubernetes", "KubernetesFaults"),
}


def injector_for(cluster: ClusterBackend) -> FaultInjector:
    """The fault injector of ``cluster``'s backend, with what that backend gives alone (a
    caller that can do more, such as freezing a pod's processes, builds its own)."""
    module, name = INJECTORS[cluster.name]
    return getattr(importlib.import_module(f".{module}", __package__), name)(cluster)


__all__ = ["INJECTORS", "injector_for"]
