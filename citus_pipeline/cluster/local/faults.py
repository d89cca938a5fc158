"""Faults a local cluster can be given on purpose, for the fault drills and `bench faults`.

A frozen member is what a paused VM or a long stall leaves: every process of it stopped
(SIGSTOP) while the kernel keeps its sockets open, so nothing asked of it fails, it only
never answers. Patroni detaches the postmaster, so a member's processes are its Patroni, the
postmaster found by its pid file, and the postmaster's children.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ...errors import ClusterError
from .layout import Member
from .processes import member_pid, postmaster_pid


def children(pid: int) -> list[int]:
    """The processes whose parent is ``pid`` (from /proc, so it works for any user's)."""
    found = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            ppid = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        if ppid == pid:
            found.append(int(d.name))
    return found


def member_processes(m: Member) -> list[int]:
    """The member's Patroni, its postmaster and the postmaster's children."""
    patroni, postmaster = member_pid(m), postmaster_pid(m)
    if not (patroni and postmaster):
        raise ClusterError(
            f"member {m.name} is not running (Patroni {patroni}, postmaster {postmaster})"
        )
    return [patroni, postmaster, *children(postmaster)]


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


__all__ = ["children", "frozen", "member_processes"]
