"""Restarting one member on Kubernetes (`cluster restart`): its pod deleted, its StatefulSet
recreates it.

Not Patroni's REST restart, as on the local backend: from outside the cluster its password
does not get through the apiserver's pod proxy (which drops the Authorization header), and a
new pod is what a Kubernetes rolling update does anyway (it also takes a changed image or
resources). `rolling.rolling_restart` orders the calls (standbys, a switchover, the former
leader).
"""

from __future__ import annotations

from collections.abc import Callable

from ...errors import KubernetesClusterError
from ..health import group_ready
from ..topology import ClusterTopology
from .api import KubeApi, poll, status_of


def _pod_uid(api: KubeApi, name: str) -> str | None:
    """The uid of pod ``name``, None while there is none (deleted, not yet recreated)."""
    try:
        return api.core.read_namespaced_pod(name, api.namespace).metadata.uid
    except Exception as e:  # the client's ApiException, or a fake's
        if status_of(e) != 404:
            raise
        return None


def restart_member(
    api: KubeApi, observe: Callable[[], ClusterTopology], name: str, timeout: float
) -> None:
    """Delete member ``name``'s pod (gracefully: Patroni stops PostgreSQL on SIGTERM); its
    StatefulSet recreates it on the same volume, and PostgreSQL starts with the DCS's
    parameters. Returns once the member, in its new pod, runs (or streams) with no restart
    pending and its group is ready for the next step of a rolling restart."""
    ns = api.namespace
    try:
        old = api.core.read_namespaced_pod(name, ns).metadata.uid
    except Exception as e:  # the client's ApiException, or a fake's
        if status_of(e) == 404:
            raise KubernetesClusterError(f"no pod {name} in namespace {ns}") from None
        raise
    api.core.delete_namespaced_pod(name, ns)
    # what the member was last seen doing in its new pod, for the timeout's message
    seen = "its pod not yet recreated"

    def back() -> bool:
        nonlocal seen
        uid = _pod_uid(api, name)
        if uid is None or uid == old:
            return False
        topo = observe()
        me = next((m for m in topo.members if m.name == name), None)
        seen = f"{me.role} {me.state}" if me else "not reported by Patroni"
        return (
            me is not None
            and me.state in ("running", "streaming")
            and not me.pending_restart
            and group_ready(topo, api.spec, me.group)
        )

    poll(
        back,
        timeout,
        2,
        f"{name} running again in a new pod",
        lambda _done: (
            f"{name} not running again {timeout:.0f}s after its pod was deleted "
            f"({seen}; kubectl -n {ns} describe pod {name})"
        ),
    )


__all__ = ["restart_member"]
