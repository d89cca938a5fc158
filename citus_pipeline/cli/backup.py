"""`citus-pipeline cluster backup | backups | restore-point | restore-points | restore`.

pgBackRest backs up every Citus group (its own stanza); ``citus_create_restore_point`` marks a
cluster-consistent point; ``restore --to NAME`` brings every group back to it. The commands
join the ``cluster`` group (cli/__init__.py), with its ``--spec`` and ``--backend`` options.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from typing import Annotated, Literal

import typer
from pydantic import BaseModel

from .cluster import BackendOpt, _backend
from .render import _fmt_bytes, titled_table
from .terminal import ContextOpt, SpecOpt, fail, out, run, step_bar

app = typer.Typer()

JsonOpt = Annotated[bool, typer.Option("--json", help="machine-readable output")]


def _recovery(spec, backend, context=None):
    """The backend's backups and restores: locally pgBackRest on this machine; on
    Kubernetes a Job of the backup CronJob, and pgBackRest in a member's pod."""
    from ..cluster.backend import get_recovery

    return get_recovery(_backend(spec, backend, context))


@app.command("backup")
def backup(
    backup_type: Annotated[
        Literal["full", "diff", "incr"], typer.Option("--type", help="pgBackRest backup type")
    ] = "full",
    spec: SpecOpt = None,
    backend: BackendOpt = None,
    context: ContextOpt = None,
):
    """Back up every group with pgBackRest (from a streaming standby where there is one; on
    Kubernetes in a Job of the backup CronJob)."""
    r = _recovery(spec, backend, context)
    with step_bar("backup") as progress:
        done = run(r.backup, backup_type, progress)
    for b in done:
        out.print(
            f"group {b.group}: {b.type} backup {b.label}, {_fmt_bytes(b.size)} "
            f"({_fmt_bytes(b.repo_size)} in the repository) in {b.seconds:.0f} s"
        )


def _print_listing(
    items: list[BaseModel],
    as_json: bool,
    title: str,
    header: tuple[str, ...],
    rows: Iterable[tuple[str, ...]],
) -> bool:
    """``items`` as JSON, or else the table of ``rows``; whether it was the table (``rows`` is
    read only then)."""
    if as_json:
        print(json.dumps([i.model_dump(mode="json") for i in items], indent=2))
        return False
    t = titled_table(title, header)
    for row in rows:
        t.add_row(*row)
    out.print(t)
    return True


def _backup_rows(infos) -> Iterator[tuple[str, ...]]:
    """One row per backup; a group without any gets one row with its status."""
    for i in infos:
        if not i.backups:
            yield (str(i.group), i.stanza, "-", "", "", "", "", "", i.status)
        for b in i.backups:
            yield (
                str(i.group),
                i.stanza,
                b.label,
                b.type,
                b.stopped.strftime("%Y-%m-%d %H:%M:%S"),
                f"{b.seconds:.0f}",
                _fmt_bytes(b.size),
                _fmt_bytes(b.repo_size),
                f"{b.wal_start[-8:]}..{b.wal_stop[-8:]}",
            )


@app.command("backups")
def backups(
    spec: SpecOpt = None,
    backend: BackendOpt = None,
    context: ContextOpt = None,
    as_json: JsonOpt = False,
):
    """Every group's backups: size, duration, WAL range; and its archive."""
    r = _recovery(spec, backend, context)
    infos = run(r.list)
    header = ("Group", "Stanza", "Label", "Type", "Stopped", "Seconds", "Size", "Repo", "WAL")
    if _print_listing(infos, as_json, "Backups (pgBackRest)", header, _backup_rows(infos)):
        for i in infos:
            out.print(
                f"group {i.group}: archive {i.archive_id} {i.wal_min} .. {i.wal_max} ({i.status})"
            )


@app.command("restore-point")
def restore_point(
    name: str, spec: SpecOpt = None, backend: BackendOpt = None, context: ContextOpt = None
):
    """A cluster-consistent restore point NAME (citus_create_restore_point), once archived."""
    r = _recovery(spec, backend, context)
    p = run(r.restore_point, name)
    where = ", ".join(f"group {g} {pos.lsn}" for g, pos in sorted(p.groups.items()))
    out.print(f"restore point {p.name} at {p.created_at:%Y-%m-%d %H:%M:%S} UTC: {where}")


@app.command("restore-points")
def restore_points(
    spec: SpecOpt = None,
    backend: BackendOpt = None,
    context: ContextOpt = None,
    as_json: JsonOpt = False,
):
    """Every restore point taken: name, time, Dagster run, and its position in each group."""
    r = _recovery(spec, backend, context)
    points = run(r.restore_points)
    rows = (
        (
            p.name,
            f"{p.created_at:%Y-%m-%d %H:%M:%S}",
            p.run_id or "",
            "  ".join(f"{g}: {pos.timeline}/{pos.lsn}" for g, pos in sorted(p.groups.items())),
        )
        for p in points
    )
    header = ("Name", "Created (UTC)", "Run", "Group: timeline/LSN")
    _print_listing(points, as_json, "Restore points", header, rows)


@app.command("restore")
def restore(
    to: Annotated[str | None, typer.Option("--to", help="a restore point's name")] = None,
    to_time: Annotated[
        datetime | None,
        typer.Option(
            "--to-time",
            help="a time (UTC unless it names its zone); per group, NOT cluster-consistent",
        ),
    ] = None,
    yes: Annotated[bool, typer.Option("--yes", help="do not ask for confirmation")] = False,
    no_backup: Annotated[
        bool, typer.Option("--no-backup", help="skip the full backup taken after the restore")
    ] = False,
    spec: SpecOpt = None,
    backend: BackendOpt = None,
    context: ContextOpt = None,
):
    """Every group back to restore point --to (or --to-time); refuses, changing nothing, when a
    group's backup or WAL does not reach it."""
    r = _recovery(spec, backend, context)
    if to_time and to_time.tzinfo is None:
        to_time = to_time.replace(tzinfo=UTC)
    plan = run(r.plan, to, to_time)
    target = f"restore point {to}" if to else f"{to_time.isoformat()} (per group)"
    for gr in plan:
        out.print(
            f"group {gr.group}: backup {gr.backup.label}, then {len(gr.wal_needed)} WAL files "
            f"on timeline {gr.timeline}"
        )
    if not yes and not typer.confirm(f"stop the cluster and restore every group to {target}?"):
        fail("restore cancelled: nothing changed")
    started = time.monotonic()
    with step_bar("restore") as progress:
        run(r.restore, to, to_time, progress, backup_after=False)
    out.print(f"cluster restored to {target} in {time.monotonic() - started:.0f} s")
    if not no_backup:
        # new standbys restore the latest backup: it must be on the restored timeline
        started = time.monotonic()
        with step_bar("backup") as progress:
            done = run(r.backup, "full", progress)
        took = time.monotonic() - started
        out.print(f"full backup of {len(done)} groups on the restored timelines in {took:.0f} s")


__all__ = ["app"]
