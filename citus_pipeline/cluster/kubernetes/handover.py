"""Switchover and failover on Kubernetes: written where Patroni's Kubernetes DCS looks for them.

Patroni takes a requested leader change from the annotations of the group's ``-failover``
Endpoints (``leader`` for a switchover away from it, ``member`` for the candidate), as
``patronictl`` writes them; the new leader then shows in the group's leader Endpoints, which
is what the wait below reads. No REST call to a member: from outside the cluster Patroni's
REST password does not get through the apiserver's pod proxy.
"""

from __future__ import annotations

from collections.abc import Callable

from ...errors import KubernetesClusterError
from ..topology import ClusterTopology
from . import manifests as mf
from .api import KubeApi, poll, status_of


def request_failover(api: KubeApi, group: int, leader: str | None, candidate: str | None):
    """Write the request into the group's ``-failover`` Endpoints, creating it if absent."""
    name = mf.failover_name(api.spec, group)
    body = {
        "metadata": {
            "name": name,
            "namespace": api.namespace,
            "labels": {**mf.base_labels(api.spec), mf.GROUP_LABEL: str(group)},
            "annotations": {"leader": leader, "member": candidate, "scheduled_at": None},
        }
    }
    try:
        api.core.patch_namespaced_endpoints(name, api.namespace, body)
    except Exception as e:  # the client's ApiException, or a fake's
        if status_of(e) != 404:
            raise
        # a created object has no annotation to remove: the None values are left out
        body["metadata"]["annotations"] = {
            k: v for k, v in body["metadata"]["annotations"].items() if v
        }
        api.core.create_namespaced_endpoints(api.namespace, body)


def change_leader(
    api: KubeApi,
    observe: Callable[[], ClusterTopology],
    group: int,
    candidate: str | None,
    planned: bool,
    timeout: float,
) -> str:
    """A switchover (``planned``: away from the running leader) or failover of ``group`` to
    ``candidate`` (else its synchronous standby, else a replica); returns the new leader's
    name once ``observe()`` reports it leading."""
    topo = observe()
    members = topo.members_of(group)
    if not members:
        raise KubernetesClusterError(f"group {group} has no members in namespace {api.namespace}")
    leader = topo.leader(group)
    if planned and leader is None:
        raise KubernetesClusterError(f"group {group} has no leader to switch over from")
    if candidate is not None and candidate not in {m.name for m in members}:
        raise KubernetesClusterError(f"{candidate} is not a member of group {group}")
    if candidate is None:
        pick = [m for m in members if m.role == "sync_standby"] or [
            m for m in members if m.role == "replica"
        ]
        if not pick:
            raise KubernetesClusterError(f"group {group} has no standby to take over")
        candidate = pick[0].name
    request_failover(api, group, leader.name if (planned and leader) else None, candidate)
    chosen = candidate
    poll(
        lambda: observe().leader(group),
        timeout,
        2,
        f"{chosen} leading group {group}",
        lambda _leader: f"{chosen} did not become leader of group {group} in {timeout:.0f}s",
        done=lambda new: new is not None and new.name == chosen,
    )
    return chosen


__all__ = ["change_leader", "request_failover"]
