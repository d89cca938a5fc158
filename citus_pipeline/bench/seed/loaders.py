"""The loaders section of `bench seed`: the five ways of ``bench.loaders`` on the same file,
into a distributed table, one run each, next to this project's loader."""

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
    peers = [r for r in results if r.name not in ("this_loader", "reference") and r.rows]
    ours = next((r for r in results if r.name == "this_loader"), None)
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


__all__ = ["loaders"]
