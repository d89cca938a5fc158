"""The local cluster's supervisor: what a kubelet's liveness probe does for a pod.

A member that stops answering (a paused VM, processes stopped by a signal, storage that
hangs them) keeps its sockets open and its kernel acknowledges what the coordinator sends:
statements on it wait, holding the shard locks Patroni needs to put the promoted standby
into pg_dist_node, so its group's writes stall until it answers again. Killing it closes
those sockets. On Kubernetes the kubelet does that; locally this process does, one per
cluster, started by `up` and stopped by `down`.

Every :data:`LIVENESS` period it asks each member's Patroni ``/liveness`` (from inside the
member's network namespace where it has one, as a kubelet probes from the pod's node, so a
partition is not taken for a hang). A member that accepts the connection and then does not
answer in time, or answers that its loop is stuck (503), ``failure_threshold`` times in a
row is killed (SIGKILL of Patroni, the postmaster and its backends) and started again.
Patroni does the rest: the old leader comes back as a replica, or as leader while its lock
still stands. A member that refuses connections is starting, stopping or gone: exited
members stay down as before (`cluster start-member`), and members stopped on purpose are
left alone. Interventions take the state directory's lock without waiting, so `up`, `down`,
`add-worker`, `remove-worker` and `restore` never have it acting under them.
"""

from __future__ import annotations

import json
import ssl
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import httpx

from ..spec import LIVENESS, LivenessProbe
from .layout import Layout
from .processes import Daemon

Answer = Literal["ok", "refused", "hung", "stuck"]
FAILED: dict[str, str] = {
    "hung": "no answer to /liveness",
    "stuck": "/liveness says its loop is stuck",
}


def probe(url: str, timeout: float, verify: ssl.SSLContext | bool = True) -> Answer:
    """One ``/liveness`` call: ``ok``, ``refused`` (nothing listens), ``hung`` (no answer in
    time) or ``stuck`` (Patroni answers that its loop has not run for too long)."""
    try:
        r = httpx.get(f"{url}/liveness", timeout=timeout, verify=verify)
    except httpx.ConnectError:
        return "refused"
    except httpx.HTTPError:
        return "hung"
    return "ok" if r.status_code == 200 else "stuck"


@dataclass
class _FailedRun:
    """A process's current run of failed probes: how many, since when, the last answer."""

    count: int
    since: float
    last: Answer


@dataclass
class HangCounter:
    """Consecutive failed probes per member process, and since when. A Patroni younger than
    the probe's initial delay may be only starting: not counted."""

    probe: LivenessProbe = LIVENESS
    _runs: dict[int, _FailedRun] = field(default_factory=dict)

    def observe(self, pid: int, age_s: float, answer: Answer, now: float) -> bool:
        """Record ``answer`` of Patroni ``pid`` (``age_s`` old), probed until ``now``; True
        when it is to be killed."""
        if answer == "ok":
            self._runs.pop(pid, None)
            return False
        if answer == "refused" or age_s < self.probe.initial_delay_s:
            return False
        run = self._runs.setdefault(pid, _FailedRun(0, now - self.probe.timeout_s, answer))
        run.count, run.last = run.count + 1, answer
        return run.count >= self.probe.failure_threshold

    def hung_for(self, pid: int, now: float) -> float:
        """Seconds since ``pid``'s first failed probe of its current run of them."""
        run = self._runs.get(pid)
        return now - run.since if run else 0.0

    def last_failure(self, pid: int) -> Answer | None:
        run = self._runs.get(pid)
        return run.last if run else None

    def forget_except(self, pids: set[int]) -> None:
        """Drop what is known about processes no longer probed."""
        for pid in set(self._runs) - pids:
            del self._runs[pid]


class Supervisor:
    """The supervisor process of one local cluster: its files under ``supervisor/`` in the
    state directory (the full spec it runs with, pid, log, and the interventions as JSON
    lines), starting and stopping it."""

    def __init__(self, layout: Layout) -> None:
        self.layout = layout
        self.dir = layout.supervisor_dir
        # its command line names the state directory it supervises
        self.process = Daemon(
            "supervisor", layout.supervisor_pidfile, str(layout.state_dir), self.log
        )

    @property
    def log(self) -> Path:
        return self.dir / "supervisor.log"

    @property
    def events_file(self) -> Path:
        return self.dir / "interventions.jsonl"

    @property
    def spec_file(self) -> Path:
        return self.dir / "spec.json"

    def pid(self) -> int | None:
        return self.process.pid()

    def start(self) -> bool:
        """Start the supervisor unless it runs (or the spec turns it off); True if started."""
        if not self.layout.spec.local.supervisor or self.pid():
            return False
        self.dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        # the whole spec, not only cluster.json's part of it: a member starts again exactly
        # as `up` started it
        self.spec_file.write_text(json.dumps(self.layout.spec.model_dump(mode="json")))
        # -c, not -m: the package imports the module before runpy would run it as __main__
        entry = (
            "import sys; from citus_pipeline.cluster.local.supervise import main; sys.exit(main())"
        )
        argv = [sys.executable, "-c", entry, str(self.layout.state_dir)]
        self.process.spawn(argv, cwd=self.dir)
        return True

    def stop(self, timeout: float = 10) -> None:
        self.process.stop(timeout)

    def interventions(self) -> list[dict]:
        """Every member killed and started again, oldest first: ``at`` (Unix time),
        ``member``, ``why`` (no answer, or a stuck loop), ``hung_s`` (since the first failed
        probe) and ``pids``."""
        try:
            lines = self.events_file.read_text().splitlines()
        except OSError:
            return []
        return [json.loads(line) for line in lines if line.strip()]

    def record(self, event: dict) -> None:
        with open(self.events_file, "a") as f:
            f.write(json.dumps(event) + "\n")


__all__ = ["FAILED", "Answer", "HangCounter", "Supervisor", "probe"]
