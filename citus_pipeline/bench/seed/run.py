"""One `bench seed` run: the chosen sections in order, everything printed also kept for the
.txt file, every figure saved after each section (a long run that fails keeps what it
measured), the issue's targets next to what was measured at the end."""

from __future__ import annotations

import contextlib
import io
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

from rich.console import Console

from ...data.queries import REFERENCE_QUERY, TABLE_QUERIES
from ..loaders import LOADERS
from ..rebalance import BENCH_STATE
from .context import RESULTS, SECTIONS, Seed
from .loaders import loaders as loaders_section
from .peers import peers
from .plot import write_plot
from .rebalance import rebalance
from .stages import stages

# the sections but the loaders, which take their own arguments
SECTION_RUNS: dict[str, Callable[[Seed], None]] = {
    "stages": stages,
    "peers": peers,
    "rebalance": rebalance,
}


def run_seed(
    *,
    rows: int,
    seed: int,
    sections: tuple[str, ...] = SECTIONS,
    loaders: tuple[str, ...] = LOADERS,
    runs: int = 5,
    streams: int = 4,
    out_dir: Path = RESULTS,
    keep: bool = False,
    state_dir: Path = BENCH_STATE,
    spec=None,
    terminal=None,
) -> dict:
    """The chosen sections in order; every figure as one dict (also in `<out_dir>/seed-<rows>.*`).

    ``spec``: the cluster to run on (default: the bench spec's own addresses and ports).
    """
    # Everything any part prints (the main job's own console, the rebalance log) goes to the
    # terminal (stderr with --json, so stdout is the JSON alone) and into the .txt file.
    tee = _Tee(terminal or sys.stdout)
    console = Console(width=200)
    stem = out_dir / f"seed-{rows}"

    def save() -> None:  # after every section: a long run that fails keeps what it measured
        out_dir.mkdir(parents=True, exist_ok=True)
        if run.trace is not None:
            run.out["memory_trace"] = {"seconds": run.trace.times, "mb": run.trace.series}
        Path(f"{stem}.json").write_text(json.dumps(run.out, indent=1) + "\n")
        write_plot(run.out, run.trace, Path(f"{stem}.png"))
        Path(f"{stem}.txt").write_text(tee.getvalue())

    with contextlib.redirect_stdout(tee):
        run = Seed(rows, seed, runs, state_dir, console, spec)
        try:
            _run_sections(run, sections, loaders, streams, keep, save)
        finally:
            save()
    Console(file=terminal).print(f"raw output: {stem}.txt, {stem}.json, {stem}.png")
    return {k: v for k, v in run.out.items() if k != "memory_trace"}


class _Tee(io.StringIO):
    """A stdout that also keeps what was written (never a terminal: plain text in the file)."""

    def __init__(self, stream) -> None:
        super().__init__()
        self.stream = stream

    def write(self, text: str) -> int:
        self.stream.write(text)
        return super().write(text)

    def flush(self) -> None:
        self.stream.flush()


def _run_sections(run: Seed, chosen, loader, streams: int, keep: bool, save) -> None:
    console = run.console
    console.print(f"file: {run.path} ({run.rows:,} rows, {run.out['file_mb']} MB)")
    t0 = time.monotonic()
    try:
        for name in SECTIONS:
            if name not in chosen:
                continue
            console.rule(name)
            s0 = time.monotonic()
            if name == "loaders":
                loaders_section(run, streams, loader)
            else:
                SECTION_RUNS[name](run)
            run.out.setdefault("section_seconds", {})[name] = round(time.monotonic() - s0, 1)
            save()
    finally:
        if run.cluster is not None and not keep:
            run.cluster.down(purge=True)
    run.out["bench_seconds"] = round(time.monotonic() - t0, 1)
    _summary_targets(run.out, console)


def _summary_targets(out: dict, console: Console) -> None:
    """The issue's targets next to what this run measured (sections that ran)."""
    q = {(x["engine"], x["query"]): x["median_s"] for x in out["queries"]}
    table = next((x["engine"] for x in out["queries"] if x.get("rollup") is False), None)
    if table and ("chdb", REFERENCE_QUERY) in q:
        for name in TABLE_QUERIES:
            c = q[(table, name)]
            console.print(
                f"{name} from the table's rows: {c:.4f} s = "
                f"{c / q[('chdb', name)]:.1f}x chDB (target ≤ 3x), "
                f"{c / q[('duckdb', name)]:.1f}x DuckDB (target ≤ 1x)"
            )
    if out.get("whole_experiment_s") and out.get("copy_baseline_s"):
        whole, copy = out["whole_experiment_s"], out["copy_baseline_s"]
        console.print(
            f"whole experiment {whole:.0f} s = {whole / copy:.2f}x the plain \\copy of the file "
            f"into a distributed table ({copy:.0f} s; target ≤ 2x, and ≤ 360 s)"
        )
    for key, target in (("loader_ratio_vs_fastest_peer", 1.2), ("loader_ratio_non_empty", 1.0)):
        if key in out:
            console.print(f"{key}: {out[key]:.2f}x (target ≥ {target}x)")


__all__ = ["run_seed"]
