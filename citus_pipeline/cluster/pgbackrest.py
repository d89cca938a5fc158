"""pgBackRest for a Citus cluster: one stanza per group, its configuration, what it reports.

Both backends use this module: they differ only in how a ``pgbackrest`` command runs (as the
service user on this machine, or inside a member's pod). Everything here is pure: rendering
configuration files, reading ``pgbackrest info --output=json``, and WAL arithmetic, so the
decision whether a restore point can be reached is unit-tested without a cluster.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

from pydantic import BaseModel

from ..errors import BackupError
from .spec import ClusterSpec

WAL_SEGMENT_SIZE = 16 * 1024 * 1024  # initdb's default; neither backend changes it
SEGMENTS_PER_XLOGID = 0x1_0000_0000 // WAL_SEGMENT_SIZE


def stanza(spec: ClusterSpec, group: int) -> str:
    """The pgBackRest stanza of one Citus group: each group is its own PostgreSQL cluster."""
    return f"{spec.name}-g{group}"


@dataclass(frozen=True)
class PgTarget:
    """One member's PostgreSQL as pgBackRest reaches it: its data directory and its socket."""

    path: str
    socket_dir: str | None
    port: int


def render_config(
    spec: ClusterSpec,
    repo_path: str,
    stanzas: dict[str, list[PgTarget]],
    work_dir: str,
    more_global: Iterable[str] = (),
) -> str:
    """A pgbackrest.conf: the repository from the spec, and ``pg1..pgN`` of each stanza.

    ``work_dir`` holds the spool (async archiving), lock and log files: each member has its
    own, because members of one group may share a machine (locally they always do).
    ``more_global``: further ``key=value`` lines of ``[global]`` (Kubernetes: the TLS server).
    """
    b = spec.backup
    lines = [
        "[global]",
        f"repo1-type={b.repo_type}",
        f"repo1-path={repo_path}",
        f"repo1-retention-full={b.retention_full}",
    ]
    if b.retention_diff:
        lines.append(f"repo1-retention-diff={b.retention_diff}")
    if b.repo_type == "s3":
        lines += [
            f"repo1-s3-endpoint={b.s3_endpoint}",
            f"repo1-s3-bucket={b.s3_bucket}",
            f"repo1-s3-region={b.s3_region}",
            f"repo1-s3-uri-style={b.s3_uri_style}",
            f"repo1-storage-port={b.s3_port}",
            f"repo1-storage-verify-tls={'y' if b.s3_verify_tls else 'n'}",
        ]
    lines += [
        f"compress-type={b.compress_type}",
        f"process-max={b.process_max}",
        "start-fast=y",
        "archive-async=y",
        f"spool-path={work_dir}/spool",
        f"lock-path={work_dir}/lock",
        f"log-path={work_dir}/log",
        "log-level-file=info",
        "log-level-console=warn",
        "log-level-stderr=error",
        *more_global,
    ]
    user = spec.credentials.superuser
    for name, targets in stanzas.items():
        lines += ["", f"[{name}]"]
        for i, t in enumerate(targets, start=1):
            lines.append(f"pg{i}-path={t.path}")
            if t.socket_dir:
                lines.append(f"pg{i}-socket-path={t.socket_dir}")
            lines += [f"pg{i}-port={t.port}", f"pg{i}-user={user}"]
    return "\n".join(lines) + "\n"


# ---- LSNs, segments, timelines ------------------------------------------------------------


def parse_lsn(text: str) -> int:
    hi, lo = text.split("/")
    return (int(hi, 16) << 32) | int(lo, 16)


def format_lsn(lsn: int) -> str:
    return f"{lsn >> 32:X}/{lsn & 0xFFFFFFFF:X}"


def segment_of(lsn: int) -> int:
    return lsn // WAL_SEGMENT_SIZE


def segment_name(timeline: int, segno: int) -> str:
    return f"{timeline:08X}{segno // SEGMENTS_PER_XLOGID:08X}{segno % SEGMENTS_PER_XLOGID:08X}"


def parse_segment_name(name: str) -> tuple[int, int]:
    """(timeline, segment number) of a WAL file name such as 000000010000000000000003."""
    tli, hi, lo = int(name[:8], 16), int(name[8:16], 16), int(name[16:24], 16)
    return tli, hi * SEGMENTS_PER_XLOGID + lo


@dataclass(frozen=True)
class TimelineSpan:
    """Where a timeline begins in WAL (the switch point of its parent); 0 for the first."""

    timeline: int
    begins_at: int


def timeline_path(target: int, history: str | None) -> list[TimelineSpan]:
    """The timelines recovery follows to reach ``target``, oldest first, from its history
    file (``None`` for timeline 1, which has none). A history line is
    ``parent_tli<TAB>switch_lsn<TAB>reason``: the parent ends where the next timeline begins.
    """
    spans: list[TimelineSpan] = []
    begins = 0
    for line in (history or "").splitlines():
        parts = line.strip().split()
        if len(parts) < 2 or not parts[0].isdigit():
            continue
        spans.append(TimelineSpan(int(parts[0]), begins))
        begins = parse_lsn(parts[1])
    spans.append(TimelineSpan(target, begins))
    return spans


def timeline_at(spans: list[TimelineSpan], segno: int) -> int:
    """The timeline whose WAL file recovery reads for ``segno``: like PostgreSQL, the newest
    timeline that has begun by that segment (the switch segment is read from the new one)."""
    tli = spans[0].timeline
    for s in spans:
        if segment_of(s.begins_at) <= segno:
            tli = s.timeline
    return tli


def timeline_end(spans: list[TimelineSpan], timeline: int) -> int | None:
    """The LSN where ``timeline`` stops on the path (None: the target, it has no end)."""
    for s, nxt in itertools.pairwise(spans):
        if s.timeline == timeline:
            return nxt.begins_at
    return None


# ---- what `pgbackrest info` says ----------------------------------------------------------


class BackupInfo(BaseModel):
    """One backup of one group, as pgBackRest's info reports it."""

    group: int
    label: str
    type: str  # full | diff | incr
    started: datetime
    stopped: datetime
    size: int  # bytes of the database
    repo_size: int  # bytes in the repository of the whole backup (compressed)
    repo_delta: int = 0  # bytes this backup stored itself (an incr or diff: the changed files)
    wal_start: str
    wal_stop: str
    lsn_start: str
    lsn_stop: str
    error: bool = False

    @property
    def timeline(self) -> int:
        return parse_segment_name(self.wal_start)[0]

    @property
    def seconds(self) -> float:
        return (self.stopped - self.started).total_seconds()


class StanzaInfo(BaseModel):
    group: int
    stanza: str
    status: str  # pgBackRest's status message: ok, missing stanza path, ...
    archive_id: str | None = None
    wal_min: str | None = None
    wal_max: str | None = None
    system_id: int | None = None
    backups: list[BackupInfo] = []


def parse_info(group: int, entry: dict) -> StanzaInfo:
    """One stanza of ``pgbackrest info --output=json``."""
    archives = entry.get("archive") or []
    current = archives[-1] if archives else {}
    dbs = entry.get("db") or []
    info = StanzaInfo(
        group=group,
        stanza=entry.get("name", ""),
        status=(entry.get("status") or {}).get("message", "unknown"),
        archive_id=current.get("id"),
        wal_min=current.get("min"),
        wal_max=current.get("max"),
        system_id=dbs[-1].get("system-id") if dbs else None,
    )
    for b in entry.get("backup") or []:
        ts, arch, lsn = b.get("timestamp", {}), b.get("archive", {}), b.get("lsn", {})
        size = b.get("info", {})
        info.backups.append(
            BackupInfo(
                group=group,
                label=b["label"],
                type=b["type"],
                started=datetime.fromtimestamp(ts["start"], UTC),
                stopped=datetime.fromtimestamp(ts["stop"], UTC),
                size=size.get("size", 0),
                repo_size=(size.get("repository") or {}).get("size", 0),
                repo_delta=(size.get("repository") or {}).get("delta", 0),
                wal_start=arch.get("start", ""),
                wal_stop=arch.get("stop", ""),
                lsn_start=lsn.get("start", "0/0"),
                lsn_stop=lsn.get("stop", "0/0"),
                error=bool(b.get("error")),
            )
        )
    return info


# ---- can a group reach a point? -----------------------------------------------------------


@dataclass(frozen=True)
class GroupRestore:
    """How one group gets to the point: which backup, then which WAL files."""

    group: int
    backup: BackupInfo
    timeline: int
    wal_needed: list[str]


def choose_backup(
    group: int,
    backups: Iterable[BackupInfo],
    spans: list[TimelineSpan],
    lsn: int,
    before: datetime | None,
) -> BackupInfo:
    """The newest backup from which recovery can replay to ``lsn`` on the target timeline.

    It must have ended before the point (by LSN and, where known, by time), on a timeline of
    the target's path, before that timeline was left.
    """
    on_path = {s.timeline for s in spans}
    usable = []
    for b in backups:
        stop = parse_lsn(b.lsn_stop)
        end = timeline_end(spans, b.timeline)
        if b.error or b.timeline not in on_path or stop > lsn:
            continue
        if end is not None and stop > end:
            continue
        if before is not None and b.stopped > before:
            continue
        usable.append(b)
    if not usable:
        raise BackupError(f"group {group}: no backup ends before the point (run `cluster backup`)")
    return max(usable, key=lambda b: b.stopped)


def wal_needed(backup: BackupInfo, spans: list[TimelineSpan], last_segno: int) -> list[str]:
    """The WAL files recovery reads from the backup's start through segment ``last_segno``."""
    first = parse_segment_name(backup.wal_start)[1]
    return [segment_name(timeline_at(spans, s), s) for s in range(first, last_segno + 1)]


def missing_wal(needed: list[str], archived: set[str]) -> str | None:
    return next((w for w in needed if w not in archived), None)


_ARCHIVED = re.compile(r"^([0-9A-F]{24})-[0-9a-f]{40}(\.(gz|lz4|zst|bz2))?$")


def archived_names(listing: Iterable[str]) -> set[str]:
    """WAL file names from a listing of the repository's archive (``name-sha1.ext``)."""
    return {m.group(1) for n in listing if (m := _ARCHIVED.match(n))}


__all__ = [
    "BackupInfo",
    "GroupRestore",
    "PgTarget",
    "StanzaInfo",
    "TimelineSpan",
    "archived_names",
    "choose_backup",
    "format_lsn",
    "missing_wal",
    "parse_info",
    "parse_lsn",
    "parse_segment_name",
    "render_config",
    "segment_name",
    "segment_of",
    "stanza",
    "timeline_at",
    "timeline_end",
    "timeline_path",
    "wal_needed",
]
