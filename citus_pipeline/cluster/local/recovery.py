"""Backups, restore points and point-in-time restores of a local cluster, every group at once.

A restore is planned in full before anything changes: the restore point must be known, every
group must have a backup that ended before it and every WAL file from there to the point in
the repository. Only then is the cluster stopped; each member's data directory is set aside
(put back if the restore fails), each group's Patroni keys leave the DCS, member 1 of each
group bootstraps from its backup with ``recovery_target_name`` (Patroni's custom bootstrap
running ``pgbackrest restore``), and the other members clone from it. Patroni's Citus support
then points pg_dist_node at the restored leaders.
"""

from __future__ import annotations

import json
import shutil
from datetime import datetime

from ...errors import BackupError, UserError, WaitTimeout
from ...waiting import until
from .. import restore_points
from ..pgbackrest import BackupInfo, GroupRestore
from ..recovery import Recovery, restore_target
from ..repository import Repository
from ..topology import Progress
from . import processes
from .cluster import LocalCluster, RestoreStart
from .etcd import DCS_NAMESPACE
from .layout import Member

ASIDE = "data.before-restore"


class LocalRecovery(Recovery):
    """What pgBackRest and Citus restore points do for one :class:`LocalCluster`."""

    def __init__(self, cluster: LocalCluster) -> None:
        self.cluster = cluster
        self.backups = cluster.backups
        self.points = cluster.restore_points()

    def _require_archiving(self) -> None:
        c = self.cluster
        if not c.state.read():
            raise BackupError(f"no local cluster in {c.state_dir}: run `citus-pipeline cluster up`")
        if not self.backups.enabled:
            raise BackupError(
                "backup.archiving is off in the spec: this cluster archives no WAL and has no "
                "backups"
            )

    # ---- backups ----------------------------------------------------------------------

    def backup(
        self, backup_type: str = "full", progress: Progress | None = None
    ) -> list[BackupInfo]:
        """Back up every group, from a streaming standby where the group has one."""
        self._require_archiving()
        c = self.cluster
        topo = c.status(with_shards=False)
        groups = c.groups()  # their stanzas exist: `up` and `add-worker` create them
        for i, g in enumerate(groups):
            if topo.leader(g) is None:
                raise BackupError(f"group {g} has no leader: no backup was taken of it")
            standbys = [m for m in topo.members_of(g) if m.state == "streaming"]
            source = standbys[0].name if standbys else topo.leader(g).name

            def line(text: str, g: int = g, i: int = i, source: str = source) -> None:
                if progress:
                    step = text.split("INFO: ", 1)[-1][:60]
                    progress(f"group {g} ({backup_type} from {source}): {step}", i, len(groups))

            line("starting")
            self.backups.backup(g, c.members([g]), backup_type, bool(standbys), line)
        if progress:
            progress("done", len(groups), len(groups))
        return [i.backups[-1] for i in self.list() if i.backups]

    def groups(self) -> list[int]:
        return self.cluster.groups()

    def repository(self) -> Repository:
        c = self.cluster
        return self.backups.repository(lambda g: c.members([g]))

    # ---- restore ------------------------------------------------------------------------

    def restore(
        self,
        to: str | None = None,
        to_time: datetime | None = None,
        progress: Progress | None = None,
        timeout: float = 900,
        backup_after: bool = True,
    ) -> None:
        """Every group back to the restore point ``to`` (or the time ``to_time``, per group).

        Refuses, changing nothing, when :meth:`plan` does. A failure once the cluster is
        stopped puts every data directory back as it was and starts the cluster again.
        """
        c = self.cluster
        with c.state.exclusive("restore"):
            plan = self.plan(to, to_time)
            target = restore_target(to, to_time)
            self._step(progress, "stopping the cluster", 0)
            c._down_locked()
            members = c.members()
            self._set_aside(members)
            try:
                self._bootstrap(plan, target, progress, timeout)
            except BaseException as err:
                self._roll_back(members)
                try:  # the cluster as it was before the restore
                    c._up_locked()
                except UserError as up:
                    raise BackupError(
                        f"{err}; starting the cluster as it was failed: {up}"
                    ) from err
                raise
        for m in members:
            shutil.rmtree(m.dir / ASIDE, ignore_errors=True)
        if c.metrics_on():
            c.monitoring.start(c.members(), c.credentials()["superuser"])
        if backup_after:
            # new standbys restore the latest backup: it must be on the restored timeline
            self.backup("full", progress)

    def _step(self, progress: Progress | None, what: str, done: int) -> None:
        if progress:
            progress(what, done, 4)

    def _set_aside(self, members: list[Member]) -> None:
        for m in members:
            shutil.rmtree(m.dir / ASIDE, ignore_errors=True)
            if m.data_dir.exists():
                m.data_dir.rename(m.dir / ASIDE)

    def _forget_groups(self) -> None:
        c = self.cluster
        for g in c.groups():
            c.etcd.delete_prefix(f"{DCS_NAMESPACE}{c.spec.name}/{g}/")
        state = c.state.read()
        state["paused"], state["stopped"] = [], {}
        c.state.save(state)

    def _bootstrap(
        self, plan: list[GroupRestore], target: list[str], progress: Progress | None, timeout: float
    ) -> None:
        c = self.cluster
        c.etcd.start()
        self._forget_groups()
        creds = c.credentials()
        self._step(progress, "restoring every group's leader from its backup", 1)
        leaders = []
        for gr in plan:
            m = c.member(gr.group, 1)
            cmd = self.backups.restore_cmd(
                m,
                f"--set={gr.backup.label}",
                *target,
                "--target-action=promote",
                f"--target-timeline={gr.timeline}",
            )
            c._start_member(m, creds, RestoreStart(bootstrap=cmd))
            leaders.append(m)
        self._wait_leaders(leaders, timeout)
        self._step(progress, "cloning the standbys from the restored leaders", 2)
        for m in c.members():
            if m not in leaders:
                c._start_member(m, creds, RestoreStart())
        c.wait_ready(c.groups(), timeout)
        self._step(progress, "archiving the restored timelines", 3)
        for m in c.members():
            c.reload_member(m, creds)
        with c._coordinator_conn() as conn:
            restore_points.switch_and_wait(conn, timeout)
        c.ensure_stanzas(c.groups())

    def _wait_leaders(self, leaders: list[Member], timeout: float) -> None:
        c = self.cluster

        def recovering() -> list[Member]:
            statuses = {s.name: s for s in c.member_statuses()}
            waiting = [
                m
                for m in leaders
                if not (s := statuses.get(m.name)) or s.role != "leader" or s.state != "running"
            ]
            for m in waiting:
                if not processes.member_pid(m):
                    raise BackupError(
                        f"group {m.group}: Patroni of {m.name} exited during the restore: "
                        f"{processes.tail(m.log, 1)}",
                        m.log,
                    )
            return waiting

        try:
            until(recovering, timeout, 1, "the restored leaders", done=lambda left: not left)
        except WaitTimeout as err:
            m = err.last[0]
            raise BackupError(
                f"group {m.group}: {m.name} did not finish recovery in {timeout:.0f} s: "
                f"{processes.tail(m.log, 1)}",
                m.log,
            ) from None

    def _roll_back(self, members: list[Member]) -> None:
        """Stop what the restore started and put every data directory back as it was."""
        c = self.cluster
        processes.stop_members(members, timeout=15)
        for m in members:
            if (m.dir / ASIDE).exists():
                shutil.rmtree(m.data_dir, ignore_errors=True)
                (m.dir / ASIDE).rename(m.data_dir)
        for m in members:
            _unpause_cached_config(m)
        self._forget_groups()
        c.etcd.stop()


def _unpause_cached_config(m: Member) -> None:
    """Patroni keeps the DCS config it last saw in the data directory and, finding the DCS
    empty, writes it back: the copy saved while `down` had the group paused would keep the
    group in maintenance mode, with nothing in the DCS to resume."""
    cache = m.data_dir / "patroni.dynamic.json"
    try:
        config = json.loads(cache.read_text())
    except (OSError, ValueError):
        return
    if config.pop("pause", None) is not None:
        cache.write_text(json.dumps(config))  # in place: its owner and mode stay


__all__ = ["ASIDE", "LocalRecovery"]
