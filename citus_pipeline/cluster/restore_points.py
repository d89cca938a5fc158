"""Cluster-consistent restore points: Citus's ``citus_create_restore_point`` on every group.

``citus_create_restore_point(name)`` blocks distributed commits and writes one named WAL record
on every node at one instant, so restoring every group to that name gives a consistent cluster.
Right after it, each group's leader switches WAL, so the file holding the record is archived at
once instead of when it fills; the point is recorded with each group's position and timeline
(which restore needs: a point on an older timeline is reached by naming that timeline).
The record of points outlives any restore: locally a JSON file in the state directory.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol

import psycopg
from pydantic import BaseModel

from ..errors import BackupError, GroupUnreachable, WaitTimeout
from ..waiting import until
from .failover import message_is_transient

# PostgreSQL keeps a restore point's name in MAXFNAMELEN (64) bytes, the last one NUL
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,62}$")

CREATE_SQL = "SELECT pg_catalog.citus_create_restore_point(%s)::text"
# Run on every primary through the coordinator: the switch returns the end of the WAL file
# that now holds the point, which the archiver takes next.
SWITCH_SQL = """
SELECT n.groupid, r.success, r.result
FROM pg_catalog.run_command_on_all_nodes($cmd$
    SELECT concat_ws(' ', pg_walfile_name(l), l, s.system_identifier)
    FROM pg_catalog.pg_switch_wal() AS l, pg_catalog.pg_control_system() AS s
$cmd$) AS r
JOIN pg_catalog.pg_dist_node n ON n.nodeid = r.nodeid
WHERE n.noderole = 'primary'
ORDER BY n.groupid
"""
ARCHIVED_SQL = """
SELECT n.groupid, r.success, r.result
FROM pg_catalog.run_command_on_all_nodes($cmd$
    SELECT concat_ws(' ', coalesce(last_archived_wal, '-'), coalesce(last_failed_wal, '-'))
    FROM pg_catalog.pg_stat_archiver
$cmd$) AS r
JOIN pg_catalog.pg_dist_node n ON n.nodeid = r.nodeid
WHERE n.noderole = 'primary'
ORDER BY n.groupid
"""


class GroupPosition(BaseModel):
    """Where a restore point lies in one group's WAL."""

    lsn: str  # the end of the WAL switch right after the point: the point lies before it
    wal_file: str  # the file holding the point (its first 8 digits are the timeline)
    system_id: str

    @property
    def timeline(self) -> int:
        return int(self.wal_file[:8], 16)


class RestorePoint(BaseModel):
    name: str
    created_at: datetime  # taken just before the call: every backup usable for it ended earlier
    coordinator_lsn: str
    groups: dict[int, GroupPosition]
    run_id: str | None = None  # the Dagster run that took it, if any


def check_name(name: str, known: list[RestorePoint]) -> None:
    if not NAME_RE.match(name):
        raise BackupError(
            f"restore point name {name!r}: 1-63 characters of letters, digits, '_', '.', ':' "
            "or '-', starting with a letter or digit"
        )
    if any(p.name == name for p in known):
        # recovery stops at the first record of a name: a second one could never be reached
        raise BackupError(f"restore point {name!r} exists already: choose another name")


def _per_group(conn: psycopg.Connection, sql: str) -> dict[int, str]:
    out = {}
    for group, ok, result in conn.execute(sql).fetchall():
        if not ok:
            line = f"group {group}: {(result.strip().splitlines() or ['failed'])[0]}"
            raise (GroupUnreachable if message_is_transient(result) else BackupError)(line)
        out[group] = result
    return out


def create(
    conn: psycopg.Connection,
    name: str,
    known: list[RestorePoint],
    run_id: str | None = None,
    archive_timeout: float = 60,
) -> RestorePoint:
    """Take the point on every group through the coordinator and wait until it is archived."""
    check_name(name, known)
    created_at = datetime.now(UTC)
    coordinator_lsn = conn.execute(CREATE_SQL, (name,)).fetchone()[0]
    groups = {}
    for g, result in _per_group(conn, SWITCH_SQL).items():
        wal_file, lsn, system_id = result.split()
        groups[g] = GroupPosition(lsn=lsn, wal_file=wal_file, system_id=system_id)
    point = RestorePoint(
        name=name,
        created_at=created_at,
        coordinator_lsn=coordinator_lsn,
        groups=groups,
        run_id=run_id,
    )
    wait_archived(conn, point, archive_timeout)
    return point


def wait_archived(conn: psycopg.Connection, point: RestorePoint, timeout: float) -> None:
    """Until every group's archiver has taken the file holding the point."""
    files = {g: pos.wal_file for g, pos in point.groups.items()}
    wait_files_archived(conn, files, timeout, f"holding restore point {point.name!r}")


def switch_and_wait(conn: psycopg.Connection, timeout: float) -> None:
    """Switch every group's WAL and wait until the file just completed is archived: all the
    WAL written so far is then in the repository."""
    files = {g: result.split()[0] for g, result in _per_group(conn, SWITCH_SQL).items()}
    wait_files_archived(conn, files, timeout, "just completed")


def wait_files_archived(
    conn: psycopg.Connection, files: dict[int, str], timeout: float, what: str
) -> None:

    def late() -> dict[int, tuple[str, str]]:
        """group -> (the file it still owes, the last file its archiver failed on)."""
        owed = {}
        for g, result in _per_group(conn, ARCHIVED_SQL).items():
            last, failed = result.split()
            want = files.get(g)
            # a newer WAL file, or this one (not its .backup or .partial companions)
            if want and not (last == want or (len(last) >= 24 and last[:24] > want)):
                owed[g] = (want, failed)
        return owed

    try:
        until(late, timeout, 0.2, f"WAL files {what} archived", done=lambda owed: not owed)
    except WaitTimeout as err:
        g, (want, failed) = next(iter(err.last.items()))
        why = f"; the archiver last failed on {failed}" if failed != "-" else ""
        raise BackupError(
            f"group {g}: WAL file {want} {what} was not archived within {timeout:.0f} s{why}"
        ) from err


class RestorePointStore(Protocol):
    """Where a cluster's restore points are recorded (a file locally, a ConfigMap on k8s)."""

    def load(self) -> list[RestorePoint]: ...

    def add(self, point: RestorePoint) -> None: ...


def dump(points: list[RestorePoint]) -> str:
    return json.dumps([p.model_dump(mode="json") for p in points], indent=2)


def parse(text: str) -> list[RestorePoint]:
    return [RestorePoint.model_validate(p) for p in json.loads(text or "[]")]


class RestorePointFile:
    """The record of restore points of a local cluster: a JSON list, replaced atomically."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def load(self) -> list[RestorePoint]:
        try:
            return parse(self.path.read_text())
        except FileNotFoundError:
            return []

    def add(self, point: RestorePoint) -> None:
        points = [*self.load(), point]
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(dump(points))
        tmp.replace(self.path)


class RestorePoints:
    """Taking and listing one cluster's restore points, whichever backend keeps the record."""

    def __init__(
        self,
        connect: Callable[[], psycopg.Connection],
        store: RestorePointStore,
        archive_timeout: float,
    ) -> None:
        self.connect, self.store = connect, store
        # the archiver takes a switched file at once; a failing archive_command retries
        self.wait = max(30.0, 2.0 * archive_timeout)

    def take(self, name: str, run_id: str | None = None) -> RestorePoint:
        with self.connect() as conn:
            point = create(conn, name, self.store.load(), run_id, self.wait)
        self.store.add(point)
        return point

    def list(self) -> list[RestorePoint]:
        return self.store.load()


def find(points: list[RestorePoint], name: str) -> RestorePoint:
    for p in points:
        if p.name == name:
            return p
    known = ", ".join(p.name for p in points[-5:]) or "none yet"
    raise BackupError(f"unknown restore point {name!r} (latest: {known})")


__all__ = [
    "GroupPosition",
    "RestorePoint",
    "RestorePointFile",
    "RestorePointStore",
    "RestorePoints",
    "check_name",
    "create",
    "dump",
    "find",
    "parse",
    "switch_and_wait",
    "wait_archived",
    "wait_files_archived",
]
