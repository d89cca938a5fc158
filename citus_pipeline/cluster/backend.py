"""Choosing a cluster backend: the one place that maps a name to an implementation."""

from __future__ import annotations

import os
from typing import Literal

from .spec import ClusterSpec, load_spec
from .topology import ClusterBackend

BackendKind = Literal["local", "kubernetes"]


def get_backend(
    spec: ClusterSpec | None = None,
    kind: BackendKind = "local",
    state_dir: str | os.PathLike[str] | None = None,
) -> ClusterBackend:
    spec = spec or load_spec()
    if kind == "local":
        from .local import LocalCluster

        return LocalCluster(spec, state_dir)
    if kind == "kubernetes":
        from .kubernetes import KubernetesCluster

        return KubernetesCluster(spec)
    raise ValueError(f"unknown cluster backend {kind!r} (expected 'local' or 'kubernetes')")


__all__ = ["BackendKind", "get_backend"]
