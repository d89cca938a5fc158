"""Backups, restore points and restores of a whole cluster, the part both backends share:
the restore points (taken through the coordinator, recorded where the backend keeps them) and
the plan of a restore, decided from the repository before anything changes.

A plan refuses with one line naming the group when the point is unknown, its groups are not
the cluster's, a group has no backup that ended before it, or a WAL file from that backup to
the point is missing from the repository. How a backup is taken and how the groups are
brought back is each backend's (``LocalRecovery``, ``KubernetesRecovery``).
"""

from __future__ import annotations

import abc
from datetime import datetime

from ..errors import BackupError
from . import pgbackrest as pgbr
from . import restore_points
from .pgbackrest import BackupInfo, GroupRestore, StanzaInfo
from .progress import Progress
from .repository import Repository
from .restore_points import RestorePoint, RestorePoints


class Recovery(abc.ABC):
    """One cluster's backups and restores; the CLI and the Dagster resource call only these."""

    points: RestorePoints

    @abc.abstractmethod
    def _require_archiving(self) -> None:
        """Raise BackupError when the cluster archives no WAL (or is not there)."""

    @abc.abstractmethod
    def groups(self) -> list[int]:
        """The cluster's groups, as the restore must bring back."""

    @abc.abstractmethod
    def repository(self) -> Repository:
        """The pgBackRest repository as this backend reads it."""

    @abc.abstractmethod
    def backup(
        self, backup_type: str = "full", progress: Progress | None = None
    ) -> list[BackupInfo]:
        """Back up every group, from a streaming standby where the group has one."""

    @abc.abstractmethod
    def restore(
        self,
        to: str | None = None,
        to_time: datetime | None = None,
        progress: Progress | None = None,
        timeout: float = 900,
        backup_after: bool = True,
    ) -> None:
        """Every group back to the restore point ``to`` (or the time ``to_time``, per group)."""

    def list(self) -> list[StanzaInfo]:
        self._require_archiving()
        return self.repository().info(self.groups())

    # ---- restore points -----------------------------------------------------------------

    def restore_point(self, name: str, run_id: str | None = None) -> RestorePoint:
        """citus_create_restore_point on every group; recorded once archived."""
        self._require_archiving()
        return self.points.take(name, run_id)

    def restore_points(self) -> list[RestorePoint]:
        self._require_archiving()
        return self.points.list()

    # ---- the plan of a restore ----------------------------------------------------------

    def plan(self, to: str | None = None, to_time: datetime | None = None) -> list[GroupRestore]:
        """Which backup and WAL take every group to the target; refuses naming the group."""
        self._require_archiving()
        if (to is None) == (to_time is None):
            raise BackupError("give exactly one target: a restore point name or a time")
        groups = self.groups()
        repo = self.repository()
        infos = {i.group: i for i in repo.info(groups)}
        point = restore_points.find(self.points.list(), to) if to else None
        if point and sorted(point.groups) != groups:
            raise BackupError(
                f"restore point {to!r} has groups {sorted(point.groups)}, the cluster has "
                f"{groups}: add or remove worker groups to match first"
            )
        return [_plan_group(repo, infos[g], point, to_time) for g in groups]


def _plan_group(
    repo: Repository, info: StanzaInfo, point: RestorePoint | None, to_time: datetime | None
) -> GroupRestore:
    g = info.group
    if not info.backups or not info.archive_id or not info.wal_max:
        raise BackupError(f"group {g}: no backup in the repository ({info.status})")
    if point:
        pos = point.groups[g]
        if info.system_id is not None and str(info.system_id) != pos.system_id:
            raise BackupError(
                f"group {g}: the repository holds system {info.system_id}, the restore "
                f"point was taken on {pos.system_id}"
            )
        timeline, lsn = pos.timeline, pgbr.parse_lsn(pos.lsn)
        last = pgbr.parse_segment_name(pos.wal_file)[1]
        before = point.created_at
    else:
        timeline, last = pgbr.parse_segment_name(info.wal_max)
        lsn, before = (last + 1) * pgbr.WAL_SEGMENT_SIZE, to_time
    spans = pgbr.timeline_path(timeline, repo.history(g, info.archive_id, timeline))
    backup = pgbr.choose_backup(g, info.backups, spans, lsn, before)
    needed = pgbr.wal_needed(backup, spans, last)
    have = repo.archived(g, info.archive_id, {n[:16] for n in needed})
    missing = pgbr.missing_wal(needed, have)
    if missing:
        raise BackupError(
            f"group {g}: WAL file {missing} is missing from the repository, so the target "
            f"cannot be reached from backup {backup.label}"
        )
    return GroupRestore(g, backup, timeline, needed)


def restore_target(to: str | None, to_time: datetime | None) -> list[str]:
    """pgBackRest's ``--type``/``--target`` for a restore point name or a time."""
    if to:
        return ["--type=name", f"--target={to}"]
    assert to_time is not None
    return ["--type=time", f"--target={to_time.isoformat(sep=' ')}"]


__all__ = ["Recovery", "restore_target"]
