"""What a benchmark's processes cost: CPU-seconds and memory of a child command, of this
process and of every member of a local cluster, read from /proc.

CPU of a member is its Patroni's, its postmaster's and the postmaster's live children's
user + system time, each with the time of the children it has reaped: a COPY backend that
exits after its load is counted through the postmaster's `cutime`, so the difference of two
readings is what the member spent in between. Memory is PSS (shared buffers counted once,
not once per backend that touched them); a child command's peak is its own max RSS.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ..cluster.local import processes
from ..errors import CommandFailed

_TICK = os.sysconf("SC_CLK_TCK")
GNU_TIME = "/usr/bin/time"  # Debian's package time (scripts/bootstrap.sh --dev)


def _stat_cpu(pid: int) -> float:
    """utime + stime + cutime + cstime of pid in seconds (0 when it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return 0.0
    return sum(int(v) for v in fields[11:15]) / _TICK


def _pss_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def self_rss_mb() -> float:
    """This process's resident set now, in MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


class ClusterUsage:
    """CPU and memory of every member of a LocalCluster (members listed at each reading, so a
    worker group added during the run is counted from then on)."""

    def __init__(self, cluster) -> None:
        self.cluster = cluster

    def _members(self) -> list[tuple[str, list[int]]]:
        """Each member's processes, from one pass over /proc (not one per member)."""
        ppids = processes.parents()
        out = []
        for m in self.cluster.members():
            pm = processes.postmaster_pid(m)
            own = [p for p in (processes.member_pid(m), pm) if p]
            out.append((m.name, own + (processes.children(pm, ppids) if pm else [])))
        return out

    def cpu_seconds(self) -> float:
        return sum(_stat_cpu(p) for _, pids in self._members() for p in pids)

    def pss_mb(self) -> dict[str, float]:
        return {name: sum(_pss_kib(p) for p in pids) / 1024 for name, pids in self._members()}


@dataclass
class MemoryTrace:
    """Samples of each node's PSS and of the loader's RSS over a run, in MB."""

    times: list[float] = field(default_factory=list)
    series: dict[str, list[float | None]] = field(default_factory=dict)

    def add(self, t: float, values: dict[str, float]) -> None:
        for name in values.keys() - self.series.keys():  # a member that joined: None before
            self.series[name] = [None] * len(self.times)
        self.times.append(t)
        for name, column in self.series.items():
            column.append(values.get(name))

    def peaks(self) -> dict[str, float]:
        return {
            name: round(max((v for v in column if v is not None), default=0.0), 1)
            for name, column in self.series.items()
        }


class MemorySampler:
    """Samples `probe()` every `interval` seconds in a daemon thread until stopped."""

    def __init__(self, probe: Callable[[], dict[str, float]], interval: float = 2.0) -> None:
        self.probe = probe
        self.interval = interval
        self.trace = MemoryTrace()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="memory-sampler", daemon=True)
        self._t0 = time.monotonic()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.trace.add(time.monotonic() - self._t0, self.probe())
            self._stop.wait(self.interval)

    def __enter__(self) -> MemoryTrace:
        self._thread.start()
        return self.trace

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


@dataclass
class Measured:
    """One timed run: wall seconds, client CPU-seconds, cluster CPU-seconds, client peak RSS."""

    seconds: float
    client_cpu_s: float
    cluster_cpu_s: float
    peak_rss_mb: float
    output: str = ""


def run_children(
    commands: Sequence[Sequence[str]], cluster: ClusterUsage | None, *, env=None
) -> Measured:
    """Run the commands at once and wait for all; CPU and peak RSS of each as GNU time reads
    them, summed: concurrent children hold their memory at the same time.

    Not this process's own wait4: a child forked from a big Python process carries that
    process's resident pages into its high-water mark before it execs; GNU time is small.
    """
    cpu0 = cluster.cpu_seconds() if cluster else 0.0
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="citus-pipeline-bench-") as tmp:
        # output to files, not pipes: a child blocked on a full pipe would never finish
        outs = [Path(tmp) / f"{i}.out" for i in range(len(commands))]
        procs = []
        for argv, out in zip(commands, outs, strict=True):
            timed = [GNU_TIME, "-q", "-f", "%U %S %M", "-o", f"{out}.usage", *argv]
            with open(out, "w") as f:
                procs.append(subprocess.Popen(timed, stdout=f, stderr=subprocess.STDOUT, env=env))
        codes = [p.wait() for p in procs]
        seconds = time.monotonic() - t0
        cluster_cpu = (cluster.cpu_seconds() - cpu0) if cluster else 0.0
        texts = [out.read_text(errors="replace") for out in outs]
        client_cpu = rss = 0.0
        for out in outs:
            user, system, max_kib = Path(f"{out}.usage").read_text().split()[-3:]
            client_cpu += float(user) + float(system)
            rss += int(max_kib) / 1024
    for argv, rc, text in zip(commands, codes, texts, strict=True):
        if rc != 0:
            tail = " | ".join(text.strip().splitlines()[-5:])
            raise CommandFailed(f"{Path(argv[0]).name} exited {rc}: {tail}")
    return Measured(seconds, client_cpu, cluster_cpu, rss, "\n".join(texts))


__all__ = [
    "ClusterUsage",
    "Measured",
    "MemorySampler",
    "MemoryTrace",
    "run_children",
    "self_rss_mb",
]
