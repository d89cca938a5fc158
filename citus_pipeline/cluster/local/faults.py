"""Faults a local cluster can be given on purpose, for the fault drills and `bench faults`.

A full disk is a member's directory on a filesystem of its own (a tmpfs sized to the
directory plus some room), filled with a ballast file that can be removed again: the member
runs on it like on any disk, and root can take the room away and give it back at will. The
whole member directory moves, not only its data: pgBackRest's spool hands WAL to pg_wal by
rename, which fails across filesystems (a constraint for any deployment that gives pg_wal a
volume of its own).

A frozen member is what a paused VM or a long stall leaves: every process of it stopped
(SIGSTOP) while the kernel keeps its sockets open, so nothing asked of it fails, it only
never answers. Patroni detaches the postmaster, so a member's processes are its Patroni, the
postmaster found by its pid file, and the postmaster's children; the cluster's processes
are those of every member and etcd (what the benchmarks measure and the tests look at).
"""

from __future__ import annotations

import errno
import os
import shutil
import signal
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ...errors import ClusterError
from . import processes
from .layout import Member
from .processes import member_pid, postmaster_pid


def member_processes(m: Member) -> list[int]:
    """The member's Patroni, its postmaster and the postmaster's children; an error when
    Patroni or the postmaster does not run (a drill needs both)."""
    patroni, postmaster = member_pid(m), postmaster_pid(m)
    if not (patroni and postmaster):
        raise ClusterError(
            f"member {m.name} is not running (Patroni {patroni}, postmaster {postmaster})"
        )
    return processes.member_processes(m)


def cluster_pids(cluster) -> list[int]:
    """Every process of a LocalCluster: etcd, the pooler, Patroni, postmasters and their
    children."""
    roots = [p for p in [cluster.etcd.pid(), *cluster.pooler.pids()] if p]
    for m in cluster.members():
        roots += [p for p in (member_pid(m), postmaster_pid(m)) if p]
    ppids = processes.parents()  # one pass over /proc for every root
    pids = set(roots)
    for root in roots:
        pids.update(processes.children(root, ppids))
    return sorted(pids)


@contextmanager
def frozen(pids: list[int]) -> Iterator[None]:
    """SIGSTOP every pid for the block, SIGCONT on the way out (whatever happened inside).

    A backend that exits between being listed and being stopped is skipped: there is
    nothing left of it to freeze."""
    stopped = []
    try:
        for pid in pids:
            try:
                os.kill(pid, signal.SIGSTOP)
            except ProcessLookupError:
                continue
            stopped.append(pid)
        yield
    finally:
        for pid in stopped:
            try:
                os.kill(pid, signal.SIGCONT)
            except ProcessLookupError:
                pass


def _run(*argv: str) -> None:
    done = subprocess.run(argv, check=False, capture_output=True, text=True)
    if done.returncode:
        raise ClusterError(f"{' '.join(argv)} failed: {done.stderr.strip() or done.returncode}")


def _disk_copy(m: Member) -> Path:
    return m.dir.with_name(f".{m.dir.name}.disk")


def own_filesystem(m: Member, room_mb: int) -> None:
    """Move the stopped member's directory onto a tmpfs of its size plus ``room_mb``.

    Needs root (mount). The directory on disk is kept aside until :func:`back_on_disk`."""
    if os.geteuid() != 0:
        raise ClusterError("a member's own filesystem needs root (mount)")
    home, aside = m.dir, _disk_copy(m)
    if os.path.ismount(home):
        raise ClusterError(f"{home} is already a mount point")
    st = home.stat()
    used = sum(f.stat().st_size for f in home.rglob("*") if f.is_file() and not f.is_symlink())
    size_mb = used // (1 << 20) + room_mb
    home.rename(aside)
    home.mkdir(mode=0o700)
    opts = f"size={size_mb}m,mode=0700,uid={st.st_uid},gid={st.st_gid}"
    _run("mount", "-t", "tmpfs", "-o", opts, f"citus-pipeline-{m.name}", str(home))
    _run("cp", "-a", f"{aside}/.", f"{home}/")


def back_on_disk(m: Member) -> None:
    """Copy the stopped member's directory from its tmpfs back to disk and unmount it."""
    home, aside = m.dir, _disk_copy(m)
    if not os.path.ismount(home):
        return
    shutil.rmtree(aside, ignore_errors=True)
    aside.mkdir(mode=0o700)
    st = home.stat()
    os.chown(aside, st.st_uid, st.st_gid)
    _run("cp", "-a", f"{home}/.", f"{aside}/")
    _run("umount", str(home))
    home.rmdir()
    aside.rename(home)


def fill(directory: Path) -> Path:
    """Take every free byte of ``directory``'s filesystem with a ballast file; returns it.

    The member writes WAL meanwhile, so the room shrinks while the ballast grows: the bulk
    of it in one call, then MiB and page steps until nothing more fits."""
    ballast = directory / "citus-pipeline-ballast"
    fs = os.statvfs(directory)
    size = max(0, fs.f_bavail * fs.f_frsize - (8 << 20))
    with open(ballast, "wb") as f:
        for step in (size, 1 << 20, 1 << 12):
            while step:
                try:
                    os.posix_fallocate(f.fileno(), f.seek(0, os.SEEK_END), step)
                except OSError as err:
                    if err.errno != errno.ENOSPC:
                        raise
                    break
                if step == size:
                    break  # the bulk goes once
    return ballast


__all__ = [
    "back_on_disk",
    "cluster_pids",
    "fill",
    "frozen",
    "member_processes",
    "own_filesystem",
]
