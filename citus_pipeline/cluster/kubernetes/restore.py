"""`cluster restore --backend kubernetes`: every group back to one point, driven through the
StatefulSets and the restore's ConfigMap, which every member reads when it starts
(k8s/image/entrypoint.py).

As on the local backend: the cluster is stopped (every StatefulSet scaled to 0), each group's
Patroni objects leave the DCS (its Endpoints, as `patronictl remove` deletes them), member 0
of every group starts first and bootstraps from its backup to the point (Patroni's custom
bootstrap running `pgbackrest restore`), then the other members clone from it; each member
sets its data directory aside on its volume once and holds its WAL archiving until every
group is back. A failure from the stop on scales the cluster to 0 again, puts every data
directory back (phase "rollback") and starts the cluster as it was; the error names the
group. Once every member is back: the hold is released, every group's new timeline is
archived, the set-aside directories are deleted and the ConfigMap goes.
"""

from __future__ import annotations

import json
import secrets
from pathlib import PurePosixPath
from typing import TYPE_CHECKING, Any

from ...errors import BackupError, KubernetesClusterError, WaitTimeout
from ...waiting import until
from .. import restore_points
from ..pgbackrest import GroupRestore
from ..progress import Progress
from . import manifests as mf
from .api import status_of
from .apply import apply_manifests
from .members import patroni_container, patroni_ready
from .pod_exec import run_in_pod

if TYPE_CHECKING:
    from .cluster import KubernetesCluster

VOLUME_ROOT = PurePosixPath(mf.PGDATA_DIR).parent  # what the entrypoint leaves beside PGDATA


class StatefulSetRestore:
    """One restore of ``cluster`` to ``plan``'s backups with pgBackRest's ``target``."""

    def __init__(self, cluster: KubernetesCluster, plan: list[GroupRestore], target: list[str]):
        self.c, self.api = cluster, cluster.api
        self.ns = cluster.namespace
        self.id = secrets.token_hex(6)
        self.args = {
            str(gr.group): [
                f"--set={gr.backup.label}",
                *target,
                "--target-action=promote",
                f"--target-timeline={gr.timeline}",
            ]
            for gr in plan
        }
        self.replicas = {
            g: sts.spec.replicas for g, sts in sorted(cluster.statefulset_groups().items())
        }

    # ---- the request every member reads ---------------------------------------------------

    def _request(self, phase: str) -> None:
        body = {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {
                "name": mf.restore_name(self.c.spec),
                "namespace": self.ns,
                "labels": mf.selector_service_labels(self.c.spec, "restore"),
            },
            "data": {
                mf.RESTORE_KEY: json.dumps({"id": self.id, "phase": phase, "groups": self.args})
            },
        }
        apply_manifests([body], self.api.core.api_client)

    def _drop_request(self) -> None:
        try:
            self.api.core.delete_namespaced_config_map(mf.restore_name(self.c.spec), self.ns)
        except Exception as e:
            if status_of(e) != 404:
                raise

    # ---- the StatefulSets and the DCS -----------------------------------------------------

    def _scale(self, replicas: dict[int, int]) -> None:
        for g, n in replicas.items():
            self.api.apps.patch_namespaced_stateful_set(
                mf.group_name(self.c.spec, g), self.ns, {"spec": {"replicas": n}}
            )

    def _stop(self, timeout: float) -> None:
        self._scale(dict.fromkeys(self.replicas, 0))
        for g in self.replicas:
            self.c.objects.wait_pods_gone(g, timeout)

    def _forget(self) -> None:
        """Each group's Patroni objects, as `patronictl remove` deletes them: the next member
        to start finds no cluster and bootstraps (or takes its data directory's)."""
        for g in self.replicas:
            self.api.core.delete_collection_namespaced_endpoints(
                self.ns, label_selector=self.api.group_selector(g)
            )

    def _wait_members(self, counts: dict[int, int], timeout: float, what: str) -> None:
        """Every group's first ``counts[g]`` members ready; a member whose container failed
        ends the wait at once, naming its group and its last log line."""

        def ready() -> dict[int, int]:
            out: dict[int, int] = {}
            for g in counts:
                for p in self.api.group_pods(g):
                    self._raise_if_failed(g, p)
                    if patroni_ready(p):
                        out[g] = out.get(g, 0) + 1
            return out

        try:
            until(
                ready,
                timeout,
                3,
                what,
                done=lambda n: all(n.get(g, 0) >= k for g, k in counts.items()),
            )
        except WaitTimeout as e:
            late = [g for g, k in counts.items() if (e.last or {}).get(g, 0) < k]
            g = late[0] if late else next(iter(counts))
            raise BackupError(
                f"group {g}: {what} not ready within {timeout:.0f} s: {self._last_log(g)}"
            ) from None

    def _raise_if_failed(self, group: int, pod: Any) -> None:
        s = patroni_container(pod)
        if s is None:
            return
        # Patroni never ends on its own while its pod runs: any exit is a failure (after a
        # failed bootstrap it exits with status 0)
        term = (s.state and s.state.terminated) or (s.last_state and s.last_state.terminated)
        if term is not None:
            raise BackupError(
                f"group {group}: {pod.metadata.name} exited ({term.exit_code}) during the "
                f"restore: {self._last_log(group, pod.metadata.name, previous=True)}"
            )

    def _last_log(self, group: int, pod: str | None = None, previous: bool = False) -> str:
        name = pod or f"{mf.group_name(self.c.spec, group)}-0"
        try:
            text = self.api.core.read_namespaced_pod_log(
                name, self.ns, container=mf.PATRONI_CONTAINER, tail_lines=2, previous=previous
            )
        except Exception:  # noqa: BLE001 -- no log yet: say where to look
            return f"(kubectl -n {self.ns} logs {name} -c {mf.PATRONI_CONTAINER})"
        lines = [x for x in (text or "").splitlines() if x.strip()]
        return lines[-1] if lines else "(no output)"

    def _in_members(self, command: list[str]) -> None:
        for g in self.replicas:
            for p in self.api.group_pods(g):
                ran = run_in_pod(
                    self.api.core, self.ns, p.metadata.name, mf.PATRONI_CONTAINER, command, 120
                )
                if ran.status != 0:
                    raise BackupError(
                        f"group {g}: `{' '.join(command)}` failed in {p.metadata.name}: "
                        f"{(ran.stderr or ran.stdout).strip()[:200]}"
                    )

    # ---- the whole restore ----------------------------------------------------------------

    def run(self, progress: Progress | None, timeout: float) -> None:
        def step(what: str, done: int) -> None:
            if progress:
                progress(what, done, 5)

        step("stopping the cluster", 0)
        self._request("restore")
        try:
            self._stop(timeout)
            self._forget()
            step("restoring every group's first member from its backup", 1)
            self._scale(dict.fromkeys(self.replicas, 1))
            self._wait_members(dict.fromkeys(self.replicas, 1), timeout, "the restored leader")
            step("cloning the other members from the restored leaders", 2)
            self._scale(self.replicas)
            self._wait_members(self.replicas, timeout, "every member")
            self.c.wait_for_leaders(list(self.replicas), timeout)
        except BaseException as err:
            self._roll_back(err, timeout)
            raise
        step("archiving the restored timelines", 3)
        self._in_members(["rm", "-f", str(VOLUME_ROOT / mf.HOLD_ARCHIVE)])
        with self.c._connect(self.c.coordinator_dsn()) as conn:
            restore_points.switch_and_wait(conn, timeout)
        step("deleting the data set aside", 4)
        self._in_members(["rm", "-rf", str(VOLUME_ROOT / mf.RESTORE_ASIDE)])
        self._drop_request()
        step("restored", 5)

    def _roll_back(self, err: BaseException, timeout: float) -> None:
        """The cluster as it was: stopped, every data directory put back, started."""
        try:
            self._stop(timeout)
            self._request("rollback")
            self._forget()
            self._scale(self.replicas)
            self._wait_members(self.replicas, timeout, "every member, rolled back")
            self._drop_request()
        except (BackupError, KubernetesClusterError, WaitTimeout) as again:
            raise BackupError(f"{err}; putting the cluster back as it was failed: {again}") from err


__all__ = ["StatefulSetRestore"]
