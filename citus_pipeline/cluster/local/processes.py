"""The processes of a local cluster: starting them detached, finding them by pidfile,
signalling them, waiting for them to go.

Every long-lived process the local backend starts (etcd, each member's Patroni, the
exporters, Prometheus, the supervisor) is a :class:`Daemon`: started the one same way, found
by its pidfile, stopped with a signal and, if it lingers, SIGKILL. A pid is trusted only while
/proc says the process runs and its command line names that process's own file, so a pid
recycled by another program is never signalled.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import signal
import socket
import subprocess
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from ...errors import ClusterError, WaitTimeout
from ...waiting import until
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
    left = dict(pids)

    def running() -> list[str]:
        # once gone, a pid is not asked again: another process may be given it meanwhile
        for name in [n for n, p in left.items() if not pid_alive(p)]:
            del left[name]
        return list(left)

    try:
        return until(running, timeout, 0.1, "processes to exit", done=lambda names: not names)
    except WaitTimeout:
        return list(left)


def _send(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def _exec_done(proc: subprocess.Popen, argv: list[str]) -> bool:
    """Whether ``proc`` runs ``argv`` itself yet (or is gone), past nsenter's exec."""
    if proc.poll() is not None:
        return True
    try:
        return Path(f"/proc/{proc.pid}/cmdline").read_bytes().startswith("\0".join(argv).encode())
    except OSError:
        return True


@dataclass(frozen=True)
class Daemon:
    """One long-lived process of a local cluster, known by its pidfile.

    ``needle`` is a path of the process's own (its config file, data or state directory) that
    its command line names: a pid is trusted only while that holds. ``log`` takes its stdout
    and stderr. ``name`` says which process in messages.
    """

    name: str
    pidfile: Path
    needle: str
    log: Path | None = None

    def pid(self) -> int | None:
        """The running process's pid, None when none runs."""
        pid = read_pid(self.pidfile)
        return pid if pid and pid_alive(pid, self.needle) else None

    def spawn(
        self,
        argv: list[str],
        *,
        cwd: Path,
        env: dict[str, str] | None = None,
        owner: pwd.struct_passwd | None = None,
        netns: str | None = None,
        umask: int = -1,
    ) -> subprocess.Popen:
        """Start ``argv`` detached and record its pid; returns the process as started.

        It runs in a session of its own (a terminal's Ctrl-C or a test runner's exit does
        not reach it), its output appended to :attr:`log`, as ``owner`` where given (we are
        root: PostgreSQL refuses to run as root), with ``env`` alone where given (else ours)
        and inside the network namespace ``netns`` (a /run/netns path) where given. Entering
        a namespace needs root, so there ``nsenter`` starts as root, enters the network
        namespace only (the process sees the host's mounts), drops to ``owner`` and execs
        ``argv``, which keeps nsenter's pid.
        """
        cmd, kwargs = argv, {}
        if netns:
            prefix = ["nsenter", f"--net={netns}"]
            if owner:  # --setgid drops the supplementary groups too
                prefix += [f"--setgid={owner.pw_gid}", f"--setuid={owner.pw_uid}"]
            cmd = [*prefix, "--", *argv]
        elif owner:
            kwargs = {"user": owner.pw_uid, "group": owner.pw_gid, "extra_groups": []}
        with open(self.log or os.devnull, "ab") as log:  # the child keeps its own copy
            proc = subprocess.Popen(
                cmd,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                cwd=cwd,
                env=env,
                umask=umask,
                **kwargs,
            )
        if netns:
            # the pid checks match the process by its command line, which is nsenter's (or
            # empty) until the exec: the pidfile is written once the check can find it. An
            # exec slower than this is no failure: the same pid is found once it happened.
            with contextlib.suppress(WaitTimeout):
                until(lambda: _exec_done(proc, argv), 5, 0.01, f"{self.name} to exec")
        self.pidfile.write_text(str(proc.pid))
        return proc

    def await_ready(
        self,
        proc: subprocess.Popen,
        ready: Callable[[], bool],
        timeout: float,
        what: str,
        ignore: tuple[type[BaseException], ...] = (),
    ) -> None:
        """Until ``ready()`` holds for ``proc`` (as :meth:`spawn` returned it); a ClusterError
        pointing at the log when it exits first or is not ready in ``timeout`` s."""

        def check() -> bool:
            if proc.poll() is not None:
                raise ClusterError(f"{self.name} exited with code {proc.returncode}", self.log)
            return ready()

        try:
            until(check, timeout, 0.2, what, ignore=ignore)
        except WaitTimeout as err:
            err.log = self.log  # its log says why, more than the last probe does
            raise

    def send_signal(self, sig: int) -> int | None:
        """Send ``sig`` to the process; returns its pid, or None when none was running."""
        pid = self.pid()
        if pid:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                return None
        return pid

    def stop(self, timeout: float, sig: int = signal.SIGTERM) -> None:
        stop_all([self], timeout, sig)


def stop_all(daemons: Iterable[Daemon], timeout: float, sig: int = signal.SIGTERM) -> None:
    """``sig`` to every running one at once (they stop side by side, not one after another),
    then SIGKILL to those still running after ``timeout`` s."""
    signalled = {d: pid for d in daemons if (pid := d.send_signal(sig))}
    lingering = wait_gone({str(pid): pid for pid in signalled.values()}, timeout)
    for d, pid in signalled.items():
        # the same process, still running: its pid is not yet anyone else's
        if str(pid) in lingering and pid_alive(pid, d.needle):
            _send(pid, signal.SIGKILL)


def patroni(m: Member) -> Daemon:
    """Member m's Patroni."""
    return Daemon(m.name, m.pidfile, str(m.config), m.log)


def postmaster(m: Member) -> Daemon:
    """Member m's postmaster: Patroni starts it, PostgreSQL writes its pidfile."""
    return Daemon(f"postmaster of {m.name}", m.postmaster_pidfile, str(m.data_dir))


def member_pid(m: Member) -> int | None:
    """The member's running Patroni, if any."""
    return patroni(m).pid()


def postmaster_pid(m: Member) -> int | None:
    """The member's running postmaster, if any (it may outlive its Patroni)."""
    return postmaster(m).pid()


def signal_member(m: Member, sig: int) -> int | None:
    """Send ``sig`` to the member's Patroni; returns its pid, or None when none was running."""
    return patroni(m).send_signal(sig)


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
    stop_all([patroni(m) for m in members], timeout)
    # postmasters left behind (a killed or paused Patroni leaves PostgreSQL running)
    stop_postmasters(members)


def stop_postmasters(members: list[Member], timeout: float = 15) -> None:
    """Fast shutdown (SIGINT) of every listed postmaster at once; SIGKILL what lingers."""
    stop_all([postmaster(m) for m in members], timeout, signal.SIGINT)


__all__ = [
    "Daemon",
    "children",
    "kill_member",
    "member_pid",
    "member_processes",
    "parents",
    "patroni",
    "pid_alive",
    "port_free",
    "postmaster",
    "postmaster_pid",
    "process_age",
    "read_pid",
    "signal_member",
    "stop_all",
    "stop_members",
    "stop_postmasters",
    "tail",
    "wait_gone",
]
