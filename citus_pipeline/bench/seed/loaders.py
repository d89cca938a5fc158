"""The loaders section of `bench seed`: the ways of ``bench.loaders`` on the same file, into
a distributed table, one run each, next to this project's loader; then the second half of the
file into a table holding the first, by `\\copy` and by this loader."""

from __future__ import annotations

from rich.table import Table

from ...data.schema import drop_all
from ..loaders import run_loaders
from ..usage import ClusterUsage
from .context import Seed


def loaders(run: Seed, streams: int, only: tuple[str, ...]) -> None:
    run.up()
    # The main job's tables are measured by now: at 28 M rows they and their standbys'
    # copies leave no disk on this machine for (a)'s plain table on the coordinator.
    drop_all(run.dsn())
    shard_count = run.sql("SHOW citus.shard_count")[0][0]
    usage = ClusterUsage(run.cluster)
    results = run_loaders(
        run.dsn(),
        run.path,
        usage,
        int(shard_count),
        streams=streams,
        only=only,
        log=run.console.print,
    )
    run.out["loaders"] = [r.as_json() for r in results]
    by_name = {r.name: r for r in results}
    first_loads = ("copy_distributed", "parallel_copy", "pgloader")
    peers = [by_name[n] for n in first_loads if n in by_name and by_name[n].rows]
    ours = by_name.get("this_loader")
    t = Table(title=f"Loaders, {run.rows:,} rows into a distributed table, one run each")
    for col in ("way", "rows", "s", "rows/s", "CPU-s / M rows", "peak RSS MB", "note"):
        t.add_column(col, justify="left" if col in ("way", "note") else "right")
    for r in results:
        t.add_row(
            r.label,
            f"{r.rows:,}",
            f"{r.seconds:.1f}",
            f"{r.rows_per_s:,.0f}",
            f"{r.cpu_s_per_m_rows:.1f}",
            f"{r.peak_rss_mb:.0f}",
            r.note,
        )
    run.console.print(t)
    if ours and peers:
        fastest = max(peers, key=lambda r: r.rows_per_s)
        ratio = ours.rows_per_s / fastest.rows_per_s
        run.out["loader_ratio_vs_fastest_peer"] = round(ratio, 2)
        run.console.print(
            f"this loader / fastest peer ({fastest.label}): {ratio:.2f}x (target ≥ 1.2x)"
        )
    ours, copy = by_name.get("this_loader_non_empty"), by_name.get("copy_non_empty")
    if ours and copy and copy.rows_per_s:
        ratio = ours.rows_per_s / copy.rows_per_s
        run.out["loader_ratio_non_empty"] = round(ratio, 2)
        run.console.print(
            f"into a non-empty table, this loader / \\copy: {ratio:.2f}x (target ≥ 1.0x)"
        )


__all__ = ["loaders"]
