"""`citus-pipeline bench backup`: archiving, backups and restore of the whole cluster, measured.

On the dedicated bench cluster (its own state directory and repository):
1. the loader writes ``--rows`` into uk_price while every group archives its WAL: WAL written
   and archived per second, and the archive lag (WAL written but not yet in the repository)
   sampled every second;
2. a full pgBackRest backup of every group (from its standby), against ``pg_basebackup`` of the
   same groups from the same standbys in the same run (the reference way: plain format,
   WAL streamed, no compression, one process);
3. a monthly A/C/D file applied, then an incremental backup;
4. a restore point, and the restore of every group to it (whole cluster, standbys rebuilt).
Figures and ratios are printed, written to bench-results/ with a plot; never asserted.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path

import psycopg
from rich.table import Table

from .. import settings
from ..cluster.local import LocalCluster
from ..cluster.local.recovery import LocalRecovery
from ..cluster.pgbackrest import parse_lsn
from ..cluster.restore_points import switch_and_wait
from ..data import apply_monthly, load_price_paid
from ..data.generate import generate_monthly
from .load import data_file
from .rebalance import bench_cluster, bench_spec, console

BACKUP_STATE = settings.REPO_ROOT / ".citus-pipeline" / "bench-backup"
RESULTS = settings.REPO_ROOT / "bench-results"
MB = 1024 * 1024

# every primary's WAL position and archiver through the coordinator, one row per group
WAL_SQL = """
SELECT n.groupid, r.result FROM pg_catalog.run_command_on_all_nodes($$
    SELECT concat_ws(' ', pg_current_wal_lsn(), archived_count,
                     coalesce(last_archived_wal, '-'), pg_walfile_name(pg_current_wal_lsn()))
    FROM pg_catalog.pg_stat_archiver $$) r
JOIN pg_catalog.pg_dist_node n ON n.nodeid = r.nodeid
WHERE n.noderole = 'primary' AND r.success
"""


class ArchiveSampler(threading.Thread):
    """Every second: WAL written and archived per group, and the archive lag in segments."""

    def __init__(self, dsn: str) -> None:
        super().__init__(daemon=True, name="archive-sampler")
        self.dsn = dsn
        self.samples: list[tuple[float, dict[int, tuple[int, int, int]]]] = []
        self._halt = threading.Event()

    def run(self) -> None:
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            while not self._halt.wait(1.0):
                now = {}
                for g, result in conn.execute(WAL_SQL).fetchall():
                    lsn, archived, last, current = result.split()
                    lag = 0
                    if len(last) >= 24:
                        lag = max(0, int(current[8:], 16) - int(last[8:24], 16) - 1)
                    now[g] = (parse_lsn(lsn), int(archived), lag)
                self.samples.append((time.monotonic(), now))

    def stop(self) -> dict[str, float]:
        self._halt.set()
        self.join(10)
        (t0, first), (t1, last) = self.samples[0], self.samples[-1]
        span = max(t1 - t0, 1e-9)
        written = sum(last[g][0] - first[g][0] for g in first) / MB
        archived = sum(last[g][1] - first[g][1] for g in first) * 16  # 16 MB segments
        peak = max(sum(s[g][2] for g in s) for _, s in self.samples) * 16
        return {
            "wal_written_mb_per_s": written / span,
            "wal_archived_mb_per_s": archived / span,
            "archive_lag_peak_mb": float(peak),
        }


def archive_catch_up(dsn: str, timeout: float = 300) -> float:
    """Seconds until every group's WAL written so far is in the repository."""
    t0 = time.monotonic()
    with psycopg.connect(dsn, autocommit=True) as conn:
        switch_and_wait(conn, timeout)
    return time.monotonic() - t0


def copy_seconds(cluster, group: int) -> float:
    """How long the last backup of ``group`` copied files: from pgBackRest's log, between the
    backup's start (after the checkpoint and the standby's replay) and its stop call (before
    waiting for its WAL to be archived and the retention's expire)."""
    log = cluster.backups.log_dir / f"{cluster.backups.stanza(group)}-backup.log"
    start = stop = None
    for line in log.read_text().splitlines():
        if "backup start archive =" in line:
            start, stop = line[:23], None
        elif "execute non-exclusive backup stop" in line:
            stop = line[:23]
    fmt = "%Y-%m-%d %H:%M:%S.%f"
    return (datetime.strptime(stop, fmt) - datetime.strptime(start, fmt)).total_seconds()


def basebackup(cluster, standby_names: list[str], work: Path) -> list[dict]:
    """pg_basebackup of each named standby (as the service user, WAL streamed, plain)."""
    creds = cluster.credentials()
    user = cluster.spec.credentials.replication_user
    passfile = work / "pgpass"
    passfile.write_text(f"*:*:*:{user}:{creds['replication']}\n")
    owner = cluster._run_as
    out = []
    for name in standby_names:
        m = cluster.member_by_name(name)
        dest = work / name
        if owner:
            os.chown(work, owner.pw_uid, owner.pw_gid)
            os.chown(passfile, owner.pw_uid, owner.pw_gid)
        passfile.chmod(0o600)
        cmd = [
            str(cluster.pg_bin_dir() / "pg_basebackup"),
            f"--host={m.address}",
            f"--port={m.pg_port}",
            f"--username={user}",
            f"--pgdata={dest}",
            "--wal-method=stream",
            "--checkpoint=fast",
            "--no-sync",
        ]
        kw = {"user": owner.pw_uid, "group": owner.pw_gid} if owner else {}
        t0 = time.monotonic()
        subprocess.run(cmd, check=True, env={"PGPASSFILE": str(passfile)}, **kw)
        secs = time.monotonic() - t0
        size = sum(f.stat().st_size for f in dest.rglob("*") if f.is_file())
        out.append({"group": m.group, "member": name, "seconds": secs, "mb": size / MB})
        shutil.rmtree(dest)
    return out


def run_bench(
    rows: int = 2_000_000,
    seed: int = 1,
    monthly_rows: int = 20_000,
    keep: bool = False,
    spec: str | None = None,
) -> None:
    """Archiving under the loader, full/incr backup vs pg_basebackup, restore to a point."""
    path = data_file(rows, seed)
    if BACKUP_STATE.exists():  # from nothing: no earlier backups or restore points
        LocalCluster(bench_spec(spec), BACKUP_STATE).down(purge=True)
    cluster = bench_cluster(BACKUP_STATE, spec)
    rec = LocalRecovery(cluster)
    dsn = cluster.coordinator_dsn()
    fig: dict = {"rows": rows, "machine": f"{os.cpu_count()} cores"}
    try:
        sampler = ArchiveSampler(dsn)
        sampler.start()
        t0 = time.monotonic()
        load_price_paid(path, dsn, target="uk_price", jobs=2)
        fig["load_seconds"] = time.monotonic() - t0
        fig.update(sampler.stop())
        fig["archive_catch_up_seconds"] = archive_catch_up(dsn)

        topo = cluster.status(with_shards=False)
        standbys = [
            next(m.name for m in topo.members_of(g) if m.state == "streaming")
            for g in cluster.groups()
        ]
        t0 = time.monotonic()
        full = rec.backup("full")
        fig["full_seconds"] = time.monotonic() - t0
        fig["full_groups"] = [
            {
                "group": b.group,
                "seconds": b.seconds,
                "copy_seconds": copy_seconds(cluster, b.group),
                "mb": b.size / MB,
                "repo_mb": b.repo_size / MB,
            }
            for b in full
        ]
        work = Path(tempfile.mkdtemp(prefix="bench-basebackup-"))
        work.chmod(0o700)
        try:
            base = basebackup(cluster, standbys, work)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        fig["basebackup_groups"] = base
        fig["basebackup_seconds"] = sum(b["seconds"] for b in base)

        month = path.with_name(f"bench-month-{rows}-{seed}.csv")
        generate_monthly(month, path, monthly_rows, seed=seed + 1)
        apply_monthly(month, dsn)
        t0 = time.monotonic()
        incr = rec.backup("incr")
        fig["incr_seconds"] = time.monotonic() - t0
        fig["incr_repo_mb"] = sum(b.repo_delta for b in incr) / MB

        with psycopg.connect(dsn, autocommit=True) as conn:
            expected = conn.execute("SELECT count(*) FROM uk_price").fetchone()[0]
        name = f"bench-{int(time.time())}"
        rec.restore_point(name)
        t0 = time.monotonic()
        rec.restore(to=name, backup_after=False)
        fig["restore_seconds"] = time.monotonic() - t0
        with psycopg.connect(cluster.coordinator_dsn(), autocommit=True) as conn:
            got = conn.execute("SELECT count(*) FROM uk_price").fetchone()[0]
        fig["restored_rows_equal"] = got == expected
    finally:
        if not keep:
            cluster.down(purge=True)
    report(fig)


def report(fig: dict) -> None:
    full_mb = sum(g["mb"] for g in fig["full_groups"])
    repo_mb = sum(g["repo_mb"] for g in fig["full_groups"])
    base_mb = sum(g["mb"] for g in fig["basebackup_groups"])
    t = Table(title=f"backup bench: {fig['rows']:,} rows, {fig['machine']}")
    for col in ("measure", "value", "note"):
        t.add_column(col)
    t.add_row("load (archiving on)", f"{fig['load_seconds']:.1f} s", "")
    t.add_row("WAL written", f"{fig['wal_written_mb_per_s']:.1f} MB/s", "all groups, during load")
    t.add_row("WAL archived", f"{fig['wal_archived_mb_per_s']:.1f} MB/s", "pgBackRest async, lz4")
    t.add_row(
        "archive lag, peak", f"{fig['archive_lag_peak_mb']:.0f} MB", "written, not yet archived"
    )
    t.add_row("archive caught up after load", f"{fig['archive_catch_up_seconds']:.1f} s", "")
    full_rate = full_mb / fig["full_seconds"]
    base_rate = base_mb / fig["basebackup_seconds"]
    t.add_row(
        "full backup (pgBackRest)",
        f"{fig['full_seconds']:.1f} s, {full_rate:.1f} MB/s",
        f"{full_mb:.0f} MB of data, {repo_mb:.0f} MB in the repository",
    )
    t.add_row(
        "pg_basebackup (reference)",
        f"{fig['basebackup_seconds']:.1f} s, {base_rate:.1f} MB/s",
        f"{base_mb:.0f} MB copied, uncompressed",
    )
    t.add_row("ratio full / pg_basebackup", f"{full_rate / base_rate:.2f}x", "MB/s, same standbys")
    copy = sum(g["copy_seconds"] for g in fig["full_groups"])
    t.add_row(
        "pgBackRest: copying files only",
        f"{copy:.1f} s, {full_mb / copy:.1f} MB/s",
        f"the rest ({fig['full_seconds'] - copy:.1f} s): checkpoint, replay, WAL wait, expire",
    )
    t.add_row("ratio copying / pg_basebackup", f"{full_mb / copy / base_rate:.2f}x", "MB/s")
    t.add_row(
        "incremental backup",
        f"{fig['incr_seconds']:.1f} s, {fig['incr_repo_mb']:.1f} MB stored",
        "after a monthly file",
    )
    t.add_row(
        "restore every group to a point",
        f"{fig['restore_seconds']:.1f} s",
        "rows equal: " + str(fig["restored_rows_equal"]),
    )
    console.print(t)
    RESULTS.mkdir(exist_ok=True)
    stem = RESULTS / f"backup-{fig['rows'] // 1_000_000}M"
    stem.with_suffix(".json").write_text(json.dumps(fig, indent=2))
    write_plot(fig, stem.with_suffix(".png"))
    console.print(f"figures: {stem.with_suffix('.json')}, plot: {stem.with_suffix('.png')}")


def write_plot(fig: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = [g["group"] for g in fig["full_groups"]]
    ours = [g["seconds"] for g in fig["full_groups"]]
    ref = [next(b["seconds"] for b in fig["basebackup_groups"] if b["group"] == g) for g in groups]
    f, (a1, a2) = plt.subplots(1, 2, figsize=(10, 4.2))
    x = range(len(groups))
    a1.bar([i - 0.2 for i in x], ours, width=0.4, label="pgBackRest full (lz4, 2 processes)")
    a1.bar([i + 0.2 for i in x], ref, width=0.4, label="pg_basebackup (plain)")
    a1.set_xticks(list(x), [f"group {g}" for g in groups])
    a1.set_ylabel("seconds")
    a1.set_title("Backup of each group from its standby")
    a1.legend(loc="upper center", bbox_to_anchor=(0.5, -0.12), ncol=1, frameon=False)
    steps = ["full", "incr", "restore"]
    a2.bar(steps, [fig["full_seconds"], fig["incr_seconds"], fig["restore_seconds"]])
    a2.set_ylabel("seconds, whole cluster")
    a2.set_title(f"{fig['rows']:,} rows")
    f.tight_layout()
    f.savefig(path, dpi=110)
    plt.close(f)


__all__ = ["report", "run_bench", "write_plot"]
