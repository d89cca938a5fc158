"""What the pgBackRest repository holds, read the same way by both backends: every group's
backups and archive (``info``), the WAL files archived under a directory (``repo-ls``) and a
timeline's history file (``repo-get``).

A backend gives only how one ``pgbackrest`` command runs for a group (locally as the service
user with the group's config; on Kubernetes inside a member's pod through the exec API).
"""

from __future__ import annotations

import json
from collections.abc import Callable

from ..errors import BackupError
from . import pgbackrest as pgbr
from .pgbackrest import StanzaInfo
from .spec import ClusterSpec

# (group, pgBackRest's arguments after --stanza) -> its stdout; a failure raises BackupError
RunFn = Callable[[int, list[str]], str]


class Repository:
    def __init__(self, spec: ClusterSpec, run: RunFn) -> None:
        self.spec, self._run = spec, run

    def stanza(self, group: int) -> str:
        return pgbr.stanza(self.spec, group)

    def info(self, groups: list[int]) -> list[StanzaInfo]:
        out = []
        for g in groups:
            entries = json.loads(self._run(g, ["--output=json", "info"]) or "[]")
            out.append(
                pgbr.parse_info(g, entries[0])
                if entries
                else StanzaInfo(group=g, stanza=self.stanza(g), status="missing")
            )
        return out

    def archived(self, group: int, archive_id: str, prefixes: set[str]) -> set[str]:
        """WAL file names in the repository's archive under the given 16-digit directories."""
        names: set[str] = set()
        for prefix in sorted(prefixes):
            path = f"archive/{self.stanza(group)}/{archive_id}/{prefix}"
            text = self._run(group, ["--output=json", "repo-ls", path])
            names |= pgbr.archived_names(json.loads(text or "{}").keys())
        return names

    def history(self, group: int, archive_id: str, timeline: int) -> str | None:
        """The history file of ``timeline`` from the archive (None for timeline 1).

        Read with repo-get (history files are stored as they are, uncompressed): unlike
        archive-get it needs no data directory, which a lost group no longer has."""
        if timeline == 1:
            return None
        name = f"{timeline:08X}.history"
        try:
            return self._run(
                group, ["repo-get", f"archive/{self.stanza(group)}/{archive_id}/{name}"]
            )
        except BackupError:
            raise BackupError(
                f"group {group}: timeline history {name} is not in the repository"
            ) from None


__all__ = ["Repository", "RunFn"]
