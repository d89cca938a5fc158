"""The processes of a local cluster: finding them by pidfile, signalling, waiting for them to go.

A pid is trusted only while /proc says the process runs and, where a needle is given, its
command line names that member's own file, so a pid recycled by another program is never
signalled.
"""

from __future__ import annotations

import os
import signal
import socket
import time
from pathlib import Path

from .layout import Member


def pid_alive(pid: int, needle: str | None = None) -> bool:
    # A process started by this one (`up` inside a long-lived program: the Dagster asset,
    # the tests, a benchmark) stays a zombie until reaped, and a zombie answers kill(0).
    try:
        if os.waitpid(pid, os.WNOHANG)[0] == pid:
            return False
    except ChildProcessError:
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    try:
        if Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
            return False
    except (OSError, IndexError):
        return False
    if needle is None:
        return True
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return False
    return needle in cmdline


def process_age(pid: int) -> float | None:
    """Seconds since ``pid`` started (from /proc), None if it is gone."""
    try:
        ticks = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])
        uptime = float(Path("/proc/uptime").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    return uptime - ticks / os.sysconf("SC_CLK_TCK")


def read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def port_free(address: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((address, port))
        except OSError:
            return False
    return True


def tail(path: Path, lines: int = 5) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def wait_gone(pids: dict[str, int], timeout: float) -> list[str]:
    """Wait until every named pid has exited; returns the names still running at the timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pids = {k: p for k, p in pids.items() if pid_alive(p)}
        if not pids:
            return []
        time.sleep(0.1)
    return list(pids)


def _send(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def member_pid(m: Member) -> int | None:
    """The member's running Patroni, if any."""
    pid = read_pid(m.pidfile)
    return pid if pid and pid_alive(pid, str(m.config)) else None


def postmaster_pid(m: Member) -> int | None:
    """The member's running postmaster, if any (it may outlive its Patroni)."""
    pid = read_pid(m.data_dir / "postmaster.pid")
    return pid if pid and pid_alive(pid, str(m.data_dir)) else None


def signal_member(m: Member, sig: int) -> int | None:
    """Send ``sig`` to the member's Patroni; returns its pid, or None when none was running."""
    pid = member_pid(m)
    if pid:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return None
    return pid


def parents() -> dict[int, int]:
    """pid -> parent pid of every process now, from one pass over /proc (any user's)."""
    out = {}
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            out[int(d.name)] = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
    return out


def children(pid: int, ppids: dict[int, int] | None = None) -> list[int]:
    """The processes whose parent is ``pid`` (from ``ppids``, else from /proc now)."""
    ppids = parents() if ppids is None else ppids
    return [p for p, pp in ppids.items() if pp == pid]


def member_processes(m: Member) -> list[int]:
    """Every running process of m: its Patroni, its postmaster (found by its pid file:
    Patroni detaches it) and the postmaster's children. Empty when nothing of m runs."""
    pm = postmaster_pid(m)
    return [p for p in (member_pid(m), pm) if p] + (children(pm) if pm else [])


def kill_member(m: Member, timeout: float = 10) -> list[int]:
    """SIGKILL every process of m at once: Patroni, the postmaster and its backends, stopped
    (SIGSTOP) or not. The backends go with the rest: one left behind would keep the shared
    memory the next postmaster needs. Returns the pids killed, once they are gone."""
    pids = member_processes(m)
    for pid in pids:
        _send(pid, signal.SIGKILL)
    wait_gone({str(p): p for p in pids}, timeout)
    return pids


def stop_members(members: list[Member], timeout: float = 20) -> None:
    """SIGTERM every listed Patroni, SIGKILL what lingers, then stop the postmasters left."""
    pids = {m.name: p for m in members if (p := signal_member(m, signal.SIGTERM))}
    by_name = {m.name: m for m in members}
    for name in wait_gone(pids, timeout):
        signal_member(by_name[name], signal.SIGKILL)
    # postmasters left behind (a killed or paused Patroni leaves PostgreSQL running)
    stop_postmasters(members)


def stop_postmasters(members: list[Member], timeout: float = 15) -> None:
    """Fast shutdown (SIGINT) of every listed postmaster at once; SIGKILL what lingers."""
    pids = {m.name: p for m in members if (p := postmaster_pid(m))}
    for pid in pids.values():
        _send(pid, signal.SIGINT)
    for name in wait_gone(pids, timeout):
        _send(pids[name], signal.SIGKILL)


__all__ = [
    "children",
    "kill_member",
    "member_pid",
    "member_processes",
    "parents",
    "pid_alive",
    "port_free",
    "postmaster_pid",
    "process_age",
    "read_pid",
    "signal_member",
    "stop_members",
    "stop_postmasters",
    "tail",
    "wait_gone",
]
