"""Backups and restore points of a Kubernetes cluster, through the objects it runs as.

A backup is a Job made from the backup CronJob's own template (what `kubectl create job
--from=cronjob/<scope>-backup` does), with the type asked for: the same code in the members'
image backs up every group on its leader, copied from a streaming standby through the
standby's pgBackRest TLS server. The repository (every group's backups and archive, the WAL
files and timeline histories a restore plan reads) is read by ``pgbackrest`` run in a member's
container through the exec API, where the S3 keys and the config already are. Restore points
are the backend's (``restore_points``): taken through the coordinator, recorded in a ConfigMap.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from ...errors import BackupError, WaitTimeout
from ...waiting import until
from .. import pgbackrest as pgbr
from ..pgbackrest import BackupInfo
from ..progress import Progress
from ..recovery import Recovery, restore_target
from ..repository import Repository
from . import manifests as mf
from .api import status_of
from .members import patroni_ready
from .pod_exec import run_in_pod

if TYPE_CHECKING:
    from .cluster import KubernetesCluster

BACKUP_CONTAINER = "backup"  # the CronJob's container (manifests/backup.py)
JOB_TTL_S = 86_400  # a finished manual backup Job stays a day for its log, then goes


def first_error(text: str, default: str) -> str:
    """pgBackRest's own error line (``ERROR: [nnn]: ...``), else the last non-empty line."""
    lines = [x.strip() for x in text.splitlines() if x.strip()]
    return next((x for x in lines if "ERROR" in x), lines[-1] if lines else default)


class KubernetesRecovery(Recovery):
    """What pgBackRest and Citus restore points do for one :class:`KubernetesCluster`."""

    def __init__(self, cluster: KubernetesCluster) -> None:
        self.cluster = cluster
        self.spec = cluster.spec
        self.api = cluster.api
        self.namespace = cluster.namespace
        self.points = cluster.restore_points()
        self.log = ""  # the last backup Job's output

    def _require_archiving(self) -> None:
        if not self.spec.backup.archiving:
            raise BackupError(
                "backup.archiving is off in the spec: this cluster archives no WAL and has no "
                "backups"
            )

    def groups(self) -> list[int]:
        return sorted(self.cluster.statefulset_groups())

    # ---- the repository, read inside a member -------------------------------------------

    def repository(self) -> Repository:
        """The repository read by pgBackRest in a running member, the members listed once:
        one of the group's own where it has one, else any (every member's config names every
        group's stanza and the same repository)."""
        pods = self.api.core.list_namespaced_pod(
            self.namespace, label_selector=self.api.selector
        ).items
        running = sorted(
            (p for p in pods if p.status.phase == "Running" and patroni_ready(p)),
            key=lambda p: p.metadata.name,
        )

        def run(group: int, args: list[str]) -> str:
            if not running:
                raise BackupError(
                    f"no member of {self.spec.name} is running in namespace {self.namespace} "
                    "to read the backup repository from"
                )
            own = [
                p for p in running if (p.metadata.labels or {}).get(mf.GROUP_LABEL) == str(group)
            ]
            return self._pgbackrest((own or running)[0].metadata.name, group, args)

        return Repository(self.spec, run)

    def _pgbackrest(self, pod: str, group: int, args: list[str]) -> str:
        cmd = [
            "pgbackrest",
            f"--config={mf.PGBACKREST_CONFIG}",
            f"--stanza={pgbr.stanza(self.spec, group)}",
            *args,
        ]
        ran = run_in_pod(self.api.core, self.namespace, pod, mf.PATRONI_CONTAINER, cmd)
        if ran.status != 0:
            command = next(a for a in args if not a.startswith("--"))
            line = first_error(ran.stderr + ran.stdout, f"exit status {ran.status}")
            raise BackupError(f"pgbackrest {command} failed in {pod}: {line}")
        return ran.stdout

    # ---- backups: a Job from the CronJob ------------------------------------------------

    def _batch(self) -> Any:
        from kubernetes import client

        return client.BatchV1Api(self.api.core.api_client)

    def _job_body(self, batch: Any, backup_type: str) -> dict:
        name = mf.backup_name(self.spec)
        try:
            cronjob = batch.read_namespaced_cron_job(name, self.namespace)
        except Exception as e:  # the client's ApiException
            if status_of(e) == 404:
                raise BackupError(
                    f"CronJob {self.namespace}/{name} not found: the cluster was applied "
                    "without backup.archiving (run `citus-pipeline k8s apply` with it on)"
                ) from None
            raise
        template = batch.api_client.sanitize_for_serialization(cronjob.spec.job_template)
        spec = template["spec"]
        container = spec["template"]["spec"]["containers"][0]
        args = [a for a in container.get("args") or [] if not a.startswith("--type=")]
        container["args"] = [f"--type={backup_type}", *args]
        meta = template.get("metadata") or {}
        return {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": {
                "name": f"{name}-manual-{datetime.now(UTC):%Y%m%d%H%M%S}",
                "namespace": self.namespace,
                "labels": meta.get("labels") or {},
                "annotations": {"cronjob.kubernetes.io/instantiate": "manual"},
                "ownerReferences": [
                    {
                        "apiVersion": "batch/v1",
                        "kind": "CronJob",
                        "name": name,
                        "uid": cronjob.metadata.uid,
                        # the CronJob's own: its concurrencyPolicy (Forbid) then skips a
                        # scheduled run while this one is active, as for `kubectl create job
                        # --from`, instead of two backups of a stanza meeting at its lock
                        "controller": True,
                    }
                ],
            },
            "spec": {**spec, "ttlSecondsAfterFinished": JOB_TTL_S},
        }

    def _job_log(self, job: str, tail: int | None = None) -> str:
        pods = self.api.core.list_namespaced_pod(
            self.namespace, label_selector=f"job-name={job}"
        ).items
        out = []
        for p in sorted(pods, key=lambda p: p.metadata.name):
            try:
                kw = {"tail_lines": tail} if tail else {}
                text = self.api.core.read_namespaced_pod_log(
                    p.metadata.name, self.namespace, container=BACKUP_CONTAINER, **kw
                )
                out.append(text or "")  # None: the container has written nothing yet
            except Exception as e:
                if status_of(e) not in (400, 404):
                    raise
        return "".join(out)

    def _wait_for_scheduled(self, batch: Any, progress: Progress | None, timeout: float) -> None:
        """A scheduled backup still running is waited for: pgBackRest takes one backup of a
        stanza at a time, and the second would fail at its lock."""
        name = mf.backup_name(self.spec)

        def active() -> list[str]:
            cronjob = batch.read_namespaced_cron_job(name, self.namespace)
            running = [a.name for a in (cronjob.status.active or [])]
            if running and progress:
                progress(f"waiting for the scheduled backup {running[0]} to finish", 0, 1)
            return running

        try:
            until(active, timeout, 5, "the scheduled backup", done=lambda running: not running)
        except WaitTimeout as e:
            raise BackupError(
                f"the scheduled backup {e.last} is still running after {timeout:.0f} s"
            ) from None

    def backup(
        self, backup_type: str = "full", progress: Progress | None = None, timeout: float = 4 * 3600
    ) -> list[BackupInfo]:
        """Every group backed up by a Job of the backup CronJob, from a streaming standby
        where the group has one; the newest backup of each group once it has finished."""
        self._require_archiving()
        batch = self._batch()
        groups = self.groups()
        body = self._job_body(batch, backup_type)  # a missing CronJob said first
        job = body["metadata"]["name"]
        self._wait_for_scheduled(batch, progress, timeout)
        batch.create_namespaced_job(self.namespace, body)

        def look() -> tuple[int, int]:
            st = batch.read_namespaced_job(job, self.namespace).status
            if progress:
                last = self._job_log(job, tail=1).strip()
                progress(f"Job {job}: {last[:70] or 'starting'}", 0, len(groups))
            return st.succeeded or 0, st.failed or 0

        try:
            succeeded, _ = until(look, timeout, 3, f"the backup Job {job}", done=lambda s: any(s))
        except WaitTimeout:
            raise BackupError(
                f"the backup Job {self.namespace}/{job} did not finish within {timeout:.0f} s "
                f"(kubectl -n {self.namespace} logs job/{job})"
            ) from None
        self.log = self._job_log(job)
        if not succeeded:
            said = [x for x in self.log.splitlines() if x.startswith("not backed up")]
            raise BackupError(
                f"the backup Job {self.namespace}/{job} failed: "
                f"{said[-1] if said else first_error(self.log, 'no output')} "
                f"(kubectl -n {self.namespace} logs job/{job})"
            )
        if progress:
            progress("done", len(groups), len(groups))
        return [i.backups[-1] for i in self.list() if i.backups]

    def restore(
        self,
        to: str | None = None,
        to_time: datetime | None = None,
        progress: Progress | None = None,
        timeout: float = 900,
        backup_after: bool = True,
    ) -> None:
        """Every group back to the restore point ``to`` (or the time ``to_time``, per group)
        through the StatefulSets; refuses, changing nothing, when :meth:`plan` does; a
        failure once the cluster is stopped puts it back as it was."""
        from .restore import StatefulSetRestore

        plan = self.plan(to, to_time)
        StatefulSetRestore(self.cluster, plan, restore_target(to, to_time)).run(progress, timeout)
        if backup_after:
            # new standbys restore the latest backup: it must be on the restored timeline
            self.backup("full", progress)


__all__ = ["KubernetesRecovery"]
