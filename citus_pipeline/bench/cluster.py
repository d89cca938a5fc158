"""`citus-pipeline bench cluster`: time `up` from nothing and `down`, and the idle memory.

Memory is reported two ways: the sum of RSS over every process of the cluster (etcd, Patroni,
every postmaster and its children), which counts PostgreSQL's shared buffers once per process
that touched them, and the sum of PSS (proportional set size), which counts shared pages once.
"""

from __future__ import annotations

import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from ..cluster.local import LocalCluster
from ..cluster.local.faults import cluster_pids
from ..cluster.spec import load_spec, spec_from_mapping

console = Console(width=None if Console().is_terminal else 120)


def memory_kib(pids: list[int]) -> tuple[int, int]:
    rss = pss = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Rss:"):
                    rss += int(line.split()[1])
                elif line.startswith("Pss:"):
                    pss += int(line.split()[1])
        except OSError:
            continue
    return rss, pss


def run_bench(repeat: int = 3, idle: float = 15, base_address: str = "127.0.200.0") -> None:
    """Time `cluster up` of the default topology from nothing and `cluster down`; idle memory."""
    data = load_spec().model_dump(mode="json", exclude={"kubernetes"})
    data["local"]["base_address"] = base_address
    spec = spec_from_mapping(data, "<bench spec>")
    ups, downs, rsss, psss, counts = [], [], [], [], []
    for i in range(repeat):
        state = Path(tempfile.mkdtemp(prefix="citus-pipeline-bench-"))
        state.chmod(0o755)
        c = LocalCluster(spec, state)
        t0 = time.monotonic()
        c.up()
        ups.append(time.monotonic() - t0)
        time.sleep(idle)
        pids = cluster_pids(c)
        rss, pss = memory_kib(pids)
        rsss.append(rss / 1024)
        psss.append(pss / 1024)
        counts.append(len(pids))
        t0 = time.monotonic()
        c.down(purge=False)
        downs.append(time.monotonic() - t0)
        left = subprocess.run(
            ["pgrep", "-f", str(state)], capture_output=True, text=True, check=False
        ).stdout.split()
        c.down(purge=True)
        console.print(
            f"cycle {i + 1}: up {ups[-1]:.1f} s, down {downs[-1]:.1f} s, {counts[-1]} processes, "
            f"RSS {rsss[-1]:.0f} MiB, PSS {psss[-1]:.0f} MiB, left after down: {len(left)}"
        )
    t = Table(
        title=f"cluster bench: {spec.coordinator.members} + {spec.workers.groups}x{spec.workers.members} members, median of {repeat}"
    )
    for col in ("measure", "value", "target"):
        t.add_column(col)
    t.add_row("up from nothing", f"{statistics.median(ups):.1f} s", "<= 60 s")
    t.add_row("down", f"{statistics.median(downs):.1f} s", "<= 15 s")
    t.add_row("idle RSS (sum over processes)", f"{statistics.median(rsss):.0f} MiB", "")
    t.add_row("idle PSS (shared pages once)", f"{statistics.median(psss):.0f} MiB", "<= 2048 MiB")
    t.add_row("processes", str(statistics.median(counts)), "")
    console.print(t)


__all__ = ["memory_kib", "run_bench"]
