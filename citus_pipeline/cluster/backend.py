"""Choosing a cluster backend: the one place that maps a name to an implementation.

The name comes from the caller (``--backend``, a Dagster resource's config), else from
``$CITUS_PIPELINE_BACKEND`` (default local). Each backend is imported only when chosen: the
local one needs no Kubernetes client, the Kubernetes one no local binaries. Past this choice
nothing asks which backend it has: what differs is a method of the ClusterBackend contract.
"""

from __future__ import annotations

import os
from typing import Literal, get_args

from .. import settings
from ..errors import UserError
from .recovery import Recovery
from .spec import ClusterSpec, load_spec
from .topology import ClusterBackend

BackendKind = Literal["local", "kubernetes"]


def get_backend(
    spec: ClusterSpec | None = None,
    kind: BackendKind | None = None,
    state_dir: str | os.PathLike[str] | None = None,
    context: str | None = None,
) -> ClusterBackend:
    """The backend ``kind`` for ``spec`` (default: the spec file's).

    ``state_dir`` is the local backend's, ``context`` the kubeconfig context of the Kubernetes
    backend (default: the current one); each is ignored by the other backend.
    """
    chosen = kind or settings.BACKEND.get()
    if chosen not in get_args(BackendKind):
        where = "" if kind else f"${settings.BACKEND.name}: "
        raise UserError(
            f"{where}unknown cluster backend {chosen!r} (expected 'local' or 'kubernetes')"
        )
    spec = spec or load_spec()
    if chosen == "local":
        from .local import LocalCluster

        return LocalCluster(spec, state_dir)
    from .kubernetes import KubernetesCluster

    return KubernetesCluster(spec, context=context)


def get_recovery(backend: ClusterBackend) -> Recovery:
    """``backend``'s backups, restore points and restores (pgBackRest and Citus): on this
    machine through the service user, on Kubernetes through a Job and the members' pods."""
    if backend.name == "local":
        from .local.recovery import LocalRecovery

        return LocalRecovery(backend)  # type: ignore[arg-type]
    from .kubernetes.recovery import KubernetesRecovery

    return KubernetesRecovery(backend)  # type: ignore[arg-type]


__all__ = ["BackendKind", "get_backend", "get_recovery"]
