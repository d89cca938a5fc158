"""pgBackRest on a local cluster: its configuration files, and its commands run as the service user.

Each member has its own ``pgbackrest.conf`` (pg1 is itself; its own spool, lock and log
directories), named by its ``archive_command`` and ``restore_command``. Each group has one more,
naming every member as pg1..pgN, for the commands that look at the whole group: ``backup``
(which then copies from a streaming standby, so the leader is not loaded), ``info``,
``stanza-create``. Both are rendered from the spec by :mod:`..pgbackrest`.
"""

from __future__ import annotations

import os
import pwd
import shlex
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ...errors import BackupError
from .. import pgbackrest as pgbr
from ..pgbackrest import PgTarget
from ..repository import Repository
from .credentials import write_private
from .layout import Layout, Member
from .patroni import S3_KEY_ENV_PREFIX

# `cluster restore` holds every member's WAL in pg_wal until each group is restored
HOLD_ARCHIVE = "false"


@dataclass(frozen=True)
class RestoreStart:
    """How a member starts inside `cluster restore`. ``bootstrap`` (member 1 of each group)
    runs pgBackRest's restore. Every member clones from its restored leader only (the
    repository's latest backup may be on a timeline the restore leaves), and keeps its WAL
    in pg_wal instead of archiving it until every group is restored: a restore that fails
    half-way leaves no new timeline in the repository for the rolled-back cluster to follow.
    """

    bootstrap: str | None = None


class LocalBackups:
    """pgBackRest for the groups of one local cluster."""

    def __init__(self, layout: Layout, run_as: pwd.struct_passwd | None) -> None:
        self.layout = layout
        self.spec = layout.spec
        self.run_as = run_as

    @property
    def enabled(self) -> bool:
        return self.spec.backup.archiving

    def stanza(self, group: int) -> str:
        return pgbr.stanza(self.spec, group)

    def group_config(self, group: int) -> Path:
        return self.layout.backup_dir / "conf" / f"{self.stanza(group)}.conf"

    @property
    def passfile(self) -> Path:
        return self.layout.backup_dir / "pgpass"

    @property
    def log_dir(self) -> Path:
        return self.layout.backup_dir / "work" / "log"

    # ---- configuration ----------------------------------------------------------------

    def _target(self, m: Member) -> PgTarget:
        return PgTarget(str(m.data_dir), str(m.socket_dir), m.pg_port)

    def _mkdir(self, path: Path, mode: int = 0o700) -> None:
        path.mkdir(parents=True, exist_ok=True)
        os.chmod(path, mode)
        if self.run_as:
            os.chown(path, self.run_as.pw_uid, self.run_as.pw_gid)

    def archive_command(self, m: Member) -> str:
        return (
            f"pgbackrest --config={shlex.quote(str(m.pgbackrest_conf))} "
            f"--stanza={self.stanza(m.group)} archive-push %p"
        )

    def restore_command(self, m: Member) -> str:
        return (
            f"pgbackrest --config={shlex.quote(str(m.pgbackrest_conf))} "
            f"--stanza={self.stanza(m.group)} archive-get %f %p"
        )

    def restore_cmd(self, m: Member, *args: str) -> str:
        """The ``pgbackrest ... restore`` command line for member ``m`` (Patroni runs it)."""
        return " ".join(
            [
                "pgbackrest",
                f"--config={shlex.quote(str(m.pgbackrest_conf))}",
                f"--stanza={self.stanza(m.group)}",
                *args,
                "restore",
            ]
        )

    def patroni_archive(self, m: Member, restore: RestoreStart | None = None) -> dict | None:
        """What Patroni's configuration of ``m`` says about pgBackRest (None: nothing):
        archiving and cloning through the repository, or how ``m`` starts in a restore."""
        if not (self.enabled or restore):
            return None
        archive = {"restore_command": self.restore_command(m)}
        if self.enabled:
            archive["archive_command"] = HOLD_ARCHIVE if restore else self.archive_command(m)
        if self.enabled and not restore:
            archive["replica_command"] = self.restore_cmd(m, "--delta", "--type=standby")
        if restore and restore.bootstrap:
            archive["restore_bootstrap"] = restore.bootstrap
        return archive

    def write_member_config(self, m: Member) -> None:
        """The member's own pgbackrest.conf, before its Patroni starts."""
        self._prepare_repo()
        self._mkdir(m.socket_dir)
        work = m.pgbackrest_dir
        for sub in ("", "spool", "lock", "log"):
            self._mkdir(work / sub if sub else work)
        text = pgbr.render_config(
            self.spec, self.layout.repo_path(), {self.stanza(m.group): [self._target(m)]}, str(work)
        )
        write_private(m.pgbackrest_conf, text, self.run_as)

    def write_group_config(self, group: int, members: list[Member]) -> Path:
        work = self.layout.backup_dir / "work"
        for sub in ("", "spool", "lock", "log"):
            self._mkdir(work / sub if sub else work)
        self._mkdir(self.group_config(group).parent)
        targets = [self._target(m) for m in members]
        text = pgbr.render_config(
            self.spec, self.layout.repo_path(), {self.stanza(group): targets}, str(work)
        )
        write_private(self.group_config(group), text, self.run_as)
        return self.group_config(group)

    def write_passfile(self, superuser_password: str) -> None:
        user = self.spec.credentials.superuser
        self.layout.backup_dir.mkdir(parents=True, exist_ok=True)
        write_private(self.passfile, f"*:*:*:{user}:{superuser_password}\n", self.run_as)

    def _prepare_repo(self) -> None:
        self._mkdir(self.layout.backup_dir, 0o755)
        if self.spec.backup.repo_type == "posix":
            self._mkdir(Path(self.layout.repo_path()), 0o750)

    # ---- running pgbackrest -------------------------------------------------------------

    def run(
        self, config: Path, args: list[str], on_line: Callable[[str], None] | None = None
    ) -> str:
        """Run ``pgbackrest --config=CONFIG ARGS`` as the service user; its stdout.

        A failure raises BackupError with pgBackRest's own error line (``ERROR: [nnn]: ...``).
        """
        cmd = ["pgbackrest", f"--config={config}", *args]
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "LANG": "C.UTF-8",
            "PGPASSFILE": str(self.passfile),
            "HOME": str(self.layout.backup_dir),
        }
        env.update({k: v for k, v in os.environ.items() if k.startswith(S3_KEY_ENV_PREFIX)})
        kwargs: dict = {}
        if self.run_as:
            kwargs = {"user": self.run_as.pw_uid, "group": self.run_as.pw_gid, "extra_groups": []}
        proc = subprocess.Popen(
            cmd,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            cwd=self.layout.backup_dir,
            **kwargs,
        )
        lines = []
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)
            if on_line:
                on_line(line.rstrip("\n"))
        err = proc.stderr.read() if proc.stderr else ""
        if proc.wait() != 0:
            msg = next(
                (x for x in (err + "".join(lines)).splitlines() if "ERROR" in x),
                err.strip() or f"exit code {proc.returncode}",
            )
            command = next(a for a in args if not a.startswith("--"))
            stanza = next((a.split("=", 1)[1] for a in args if a.startswith("--stanza=")), "")
            log = self.log_dir / f"{stanza}-{command}.log"
            raise BackupError(
                f"pgbackrest {command} failed: {msg.strip()}", log if log.exists() else None
            )
        return "".join(lines)

    def stanza_create(self, group: int, members: list[Member]) -> None:
        """Create the group's stanza, or confirm it (a no-op when it exists and matches)."""
        conf = self.write_group_config(group, members)
        self.run(conf, [f"--stanza={self.stanza(group)}", "stanza-create"])

    def stanza_delete(self, group: int, members: list[Member]) -> None:
        """Delete a removed group's stanza and its backups: the group's number is given to
        the next added group, whose new system must not meet this one's archive."""
        conf = self.write_group_config(group, members)
        st = f"--stanza={self.stanza(group)}"
        self.run(conf, [st, "stop"])
        try:
            self.run(conf, [st, "--force", "stanza-delete"])
        finally:
            self.run(conf, [st, "start"])

    def backup(
        self,
        group: int,
        members: list[Member],
        backup_type: str,
        from_standby: bool,
        on_line: Callable[[str], None] | None = None,
    ) -> None:
        conf = self.write_group_config(group, members)
        args = [
            f"--stanza={self.stanza(group)}",
            f"--type={backup_type}",
            f"--backup-standby={'y' if from_standby else 'n'}",
            "--log-level-console=info",
            "backup",
        ]
        self.run(conf, args, on_line)

    def repository(self, members: Callable[[int], list[Member]]) -> Repository:
        """The repository read through each group's config, written from ``members`` once
        per group (the first time that group is read)."""
        written: dict[int, Path] = {}

        def run(group: int, args: list[str]) -> str:
            if group not in written:
                written[group] = self.write_group_config(group, members(group))
            return self.run(written[group], [f"--stanza={self.stanza(group)}", *args])

        return Repository(self.spec, run)


__all__ = ["HOLD_ARCHIVE", "LocalBackups", "RestoreStart"]
