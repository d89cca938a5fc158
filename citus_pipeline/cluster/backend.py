"""Choosing a cluster backend: the one place that maps a name to an implementation.

The name comes from the caller (``--backend``, a Dagster resource's config), else from
``$CITUS_PIPELINE_BACKEND`` (default local). Each backend is imported only when chosen: the
local one needs no Kubernetes client, the Kubernetes one no local binaries.
"""

from __future__ import annotations

import os
from typing import Literal, get_args

from .. import settings
from ..errors import UserError
from .restore_points import RestorePoints
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


def restore_points_of(backend: ClusterBackend) -> RestorePoints:
    """Taking and listing restore points on ``backend``: through its coordinator, recorded
    in the state directory (local) or in the ConfigMap ``<scope>-restore-points``."""
    archive_timeout = backend.spec.backup.archive_timeout
    if backend.name == "local":
        from .local.recovery import LocalRecovery

        return LocalRecovery(backend).points
    from . import manifests as mf
    from .k8s_restore_points import ConfigMapRestorePoints

    store = ConfigMapRestorePoints(
        backend.core, backend.namespace, mf.restore_points_name(backend.spec)
    )
    return RestorePoints(
        lambda: backend._connect(backend.coordinator_dsn()), store, archive_timeout
    )


__all__ = ["BackendKind", "get_backend", "restore_points_of"]
