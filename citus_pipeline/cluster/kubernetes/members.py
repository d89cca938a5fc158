"""Members of a Kubernetes cluster as Patroni records them, read into :class:`MemberStatus`.

Patroni's Kubernetes DCS writes a ``status`` annotation (JSON) on each member's pod, and keeps
per group the ``<scope>-<g>`` Endpoints (``leader`` and ``optime`` annotations) and the
``<scope>-<g>-sync`` Endpoints (``sync_standby`` list). These pure functions turn the listed
objects into the same rows the local backend reports; :func:`read_member_statuses` lists
them, and says which binding grants the listing when the API refuses it.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlsplit

from ...errors import KubernetesClusterError
from ..spec import ClusterSpec
from ..topology import MemberStatus
from . import manifests as mf
from .api import KubeApi, refusal, status_of


def get_path(obj: Any, *path: str) -> Any:
    """Attribute walk that tolerates None and dicts (client models or plain dicts)."""
    for p in path:
        if obj is None:
            return None
        obj = obj.get(p) if isinstance(obj, dict) else getattr(obj, p, None)
    return obj


def lsn(value: Any) -> int | None:
    """A WAL position from Patroni (an int, digits, or PostgreSQL's ``hi/lo`` hex), else None."""
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        if value.isdigit():
            return int(value)
        if "/" in value:
            hi, lo = value.split("/", 1)
            try:
                return (int(hi, 16) << 32) + int(lo, 16)
            except ValueError:
                return None
    return None


def pod_status(pod: Any) -> dict[str, Any]:
    """The member state Patroni's Kubernetes DCS keeps in the pod's ``status`` annotation
    ({} where there is none or it is not a JSON object)."""
    raw = (get_path(pod, "metadata", "annotations") or {}).get("status")
    try:
        status = json.loads(raw) if raw else {}
    except ValueError:
        return {}
    return status if isinstance(status, dict) else {}


def patroni_container(pod: Any) -> Any | None:
    """The kubelet's status of the member's Patroni container (None before it has one)."""
    statuses = get_path(pod, "status", "container_statuses") or []
    return next((s for s in statuses if s.name == mf.PATRONI_CONTAINER), None)


def patroni_ready(pod: Any) -> bool:
    """The member's Patroni container passes its readiness probe."""
    patroni = patroni_container(pod)
    return bool(patroni and patroni.ready)


def member_statuses(spec: ClusterSpec, pods: list[Any], endpoints: list[Any]) -> list[MemberStatus]:
    """One row per pod that carries a group label, ordered by group and name."""
    annotations = {e.metadata.name: (e.metadata.annotations or {}) for e in endpoints}
    members: list[MemberStatus] = []
    by_group: dict[int, list[tuple[Any, dict]]] = {}
    for pod in pods:
        label = (pod.metadata.labels or {}).get(mf.GROUP_LABEL)
        if label is None or not label.isdigit():
            continue
        by_group.setdefault(int(label), []).append((pod, pod_status(pod)))

    for group, entries in sorted(by_group.items()):
        leader_ann = annotations.get(mf.group_name(spec, group), {})
        sync_ann = annotations.get(mf.sync_name(spec, group), {})
        leader_name = leader_ann.get("leader")
        sync = {s for s in (sync_ann.get("sync_standby") or "").split(",") if s}
        if sync_ann.get("leader") and leader_name and sync_ann.get("leader") != leader_name:
            sync = set()  # stale sync state from a previous leader
        leader_lsn = lsn(leader_ann.get("optime"))
        for pod, st in entries:
            if pod.metadata.name == leader_name and st.get("role") in (
                "primary",
                "standby_leader",
            ):
                leader_lsn = max(leader_lsn or 0, lsn(st.get("xlog_location")) or 0) or leader_lsn
        for pod, st in sorted(entries, key=lambda e: e[0].metadata.name):
            members.append(_member(spec, group, pod, st, leader_name, sync, leader_lsn))
    return members


def read_member_statuses(api: KubeApi) -> list[MemberStatus]:
    """The members of ``api``'s cluster as they are now, from its pods and Endpoints."""
    try:
        pods = api.core.list_namespaced_pod(api.namespace, label_selector=api.selector).items
        endpoints = api.core.list_namespaced_endpoints(
            api.namespace, label_selector=api.selector
        ).items
    except Exception as e:  # the client's ApiException, or a fake's
        if status_of(e) == 403:
            # most often Dagster's runs under a ServiceAccount the rendered Role is not
            # bound to: say which binding reads the members
            k = api.spec.kubernetes
            raise KubernetesClusterError(
                f"{refusal(e)}; the Role {mf.dagster_role_name(api.spec)} grants this to "
                f"ServiceAccount {k.dagster_namespace}/{k.dagster_service_account} "
                "(kubernetes.dagster_namespace/dagster_service_account in the spec)"
            ) from None
        raise
    return member_statuses(api.spec, pods, endpoints)


def _member(
    spec: ClusterSpec,
    group: int,
    pod: Any,
    st: dict,
    leader: str | None,
    sync: set[str],
    leader_lsn: int | None,
) -> MemberStatus:
    name = pod.metadata.name
    ordinal = name.rsplit("-", 1)[-1]
    default_host = mf.member_dns_name(
        spec, group, int(ordinal) if ordinal.isdigit() else 0, pod.metadata.namespace
    )
    host, port = default_host, mf.POSTGRES_PORT
    if st.get("conn_url"):
        u = urlsplit(st["conn_url"])
        host, port = u.hostname or host, u.port or port
    pg_role = st.get("role")
    pod_role_label = (pod.metadata.labels or {}).get(mf.ROLE_LABEL)
    if not st:
        role, state = (
            "unknown",
            "starting"
            if get_path(pod, "status", "phase") in (None, "Pending", "Running")
            else "stopped",
        )
    else:
        if name == leader or (leader is None and pod_role_label == mf.LEADER_LABEL_VALUE):
            role = "leader"
        elif name in sync:
            role = "sync_standby"
        elif pg_role in ("replica", "standby_leader", "primary"):
            role = "replica"
        else:
            role = "unknown"
        state = st.get("state", "unknown")
        if state == "running" and role != "leader" and st.get("replication_state"):
            state = st["replication_state"]  # e.g. "streaming", as Patroni's /cluster reports
    lag_mb = None
    if role != "leader" and leader_lsn is not None and st:
        pos = lsn(st.get("replay_lsn")) or lsn(st.get("xlog_location"))
        if pos is not None:
            lag_mb = round(max(leader_lsn - pos, 0) / 1048576, 1)
    timeline = st.get("timeline")
    return MemberStatus(
        group=group,
        name=name,
        host=host,
        port=port,
        role=role,
        state=state,
        timeline=int(timeline)
        if isinstance(timeline, int | str) and str(timeline).isdigit()
        else None,
        lag_mb=lag_mb,
        api_url=st.get("api_url"),
        pending_restart=bool(st.get("pending_restart")),
    )


__all__ = [
    "get_path",
    "lsn",
    "member_statuses",
    "patroni_container",
    "patroni_ready",
    "pod_status",
    "read_member_statuses",
]
