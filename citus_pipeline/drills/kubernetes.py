"""The Kubernetes backend's fault injector: pods and containers.

A killed member is its pod deleted at once (no grace: what a crashed node's kubelet reports),
which its StatefulSet recreates on the same volume; the watchdog of a hung member is its
liveness probe. What the API alone cannot do is given by the caller where its platform can:
freezing a pod's processes needs a way to list them (``pod_processes``; the sandbox's nodes
list them through their containerd, `citus_pipeline.sandbox`). Who is out of recovery is
asked of each member's PostgreSQL through the exec API (`psql` on its socket), which needs
no path through the pods' network: it answers from a member cut off from it. The DCS is the
Kubernetes API itself; partitions, a cut network and full disks need what is below the API
(the sandbox's injector, `drills.sandbox`).
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

from ..cluster.kubernetes import KubernetesCluster
from ..cluster.kubernetes import manifests as mf
from ..cluster.kubernetes.pod_exec import run_in_pod
from ..cluster.local.faults import frozen
from ..waiting import until
from .injector import FREEZE, KILL, MEMBER_SQL, FaultInjector

# (namespace, pod name) -> the pids of every process of the pod's containers
PodProcesses = Callable[[str, str], list[int]]


def _ready(pod: Any) -> bool:
    return pod.metadata.deletion_timestamp is None and any(
        c.type == "Ready" and c.status == "True" for c in pod.status.conditions or []
    )


class KubernetesFaults(FaultInjector):
    backend_name = "kubernetes"
    watchdog = "its liveness probe"

    def __init__(
        self,
        cluster: KubernetesCluster,
        *,
        pod_processes: PodProcesses | None = None,
        revive_timeout: float = 240,
    ) -> None:
        super().__init__(cluster, cluster.spec)
        self.kube = cluster
        self.pod_processes = pod_processes
        self.revive_timeout = revive_timeout
        self.faults = frozenset({KILL, FREEZE, MEMBER_SQL} if pod_processes else {KILL, MEMBER_SQL})

    @property
    def namespace(self) -> str:
        return self.kube.namespace

    def group_pods(self, group: int) -> list[Any]:
        """The pods of one Citus group."""
        selector = f"{self.kube.selector},{mf.GROUP_LABEL}={group}"
        return self.kube.core.list_namespaced_pod(self.namespace, label_selector=selector).items

    def _group_of(self, name: str) -> int:
        pod = self.kube.core.read_namespaced_pod(name, self.namespace)
        return int(pod.metadata.labels[mf.GROUP_LABEL])

    def _want(self, group: int) -> int:
        return self.spec.coordinator.members if group == 0 else self.spec.workers.members

    def member_names(self, group: int) -> list[str]:
        return sorted(p.metadata.name for p in self.group_pods(group))

    def expected_members(self) -> int:
        return sum(self._want(g) for g in self.kube.statefulset_groups())

    def incarnation(self, name: str) -> tuple[str, int] | None:
        """The pod's uid and its container's restarts: a new pod, or the container killed
        and started again in the same pod."""
        try:
            pod = self.kube.core.read_namespaced_pod(name, self.namespace)
        except Exception:  # noqa: BLE001 - the client's ApiException: no such pod now
            return None
        statuses = pod.status.container_statuses or []
        if not statuses or not statuses[0].ready:
            return None
        return pod.metadata.uid, statuses[0].restart_count

    def members_ready(self, group: int) -> bool:
        """Every member of ``group`` Ready (its pod's condition, from the readiness probe)."""
        return sum(_ready(p) for p in self.group_pods(group)) == self._want(group)

    def set_group_config(self, group: int, patch: dict) -> None:
        self.kube.set_group_config(group, patch)

    def machine_of(self, name: str) -> str:
        return self.kube.core.read_namespaced_pod(name, self.namespace).spec.node_name

    def out_of_recovery(self, name: str) -> bool | None:
        # the superuser's password is in the Patroni container's environment already
        sql = (
            'PGPASSWORD="$PATRONI_SUPERUSER_PASSWORD" PGCONNECT_TIMEOUT=3 psql -XAtq '
            '-U "$PATRONI_SUPERUSER_USERNAME" -d postgres -c "SELECT pg_is_in_recovery()"'
        )
        try:
            ran = run_in_pod(
                self.kube.core, self.namespace, name, mf.PATRONI_CONTAINER, ["sh", "-c", sql], 10
            )
        except Exception:  # noqa: BLE001 - no such pod now, the exec refused, the stream cut
            return None
        answer = ran.stdout.strip()
        return None if ran.status != 0 or answer not in ("t", "f") else answer == "f"

    # ---- the faults ---------------------------------------------------------------------------
    def kill(self, name: str) -> None:
        self.kube.core.delete_namespaced_pod(name, self.namespace, grace_period_seconds=0)

    def revive(self, name: str) -> None:
        """The StatefulSet recreates the pod by itself: wait until its group is Ready again."""
        group = until(
            lambda: self._group_of(name),
            self.revive_timeout,
            2,
            f"pod {name} recreated",
            # the client's ApiException (404 until the StatefulSet has made the pod again)
            ignore=(Exception,),
            done=lambda _group: True,  # any group read is the pod back, the coordinator's 0 too
        )
        until(
            lambda: self.members_ready(group),
            self.revive_timeout,
            2,
            f"group {group}: every member ready again after {name}",
        )

    def frozen(self, name: str) -> AbstractContextManager[None]:
        if self.pod_processes is None:
            raise self._refuse(FREEZE)
        return frozen(self.pod_processes(self.namespace, name))

    def hang_kills(self, name: str, since: float) -> list[float]:
        pod = self.kube.core.read_namespaced_pod(name, self.namespace)
        kills = []
        for status in pod.status.container_statuses or []:
            ended = getattr(getattr(status.last_state, "terminated", None), "finished_at", None)
            if ended is not None and ended.timestamp() >= since:
                kills.append(ended.timestamp())
        return sorted(kills)


__all__ = ["KubernetesFaults", "PodProcesses"]
