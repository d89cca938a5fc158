"""The rebalance section of `bench seed`: the third worker group drained, then filled again by
the background rebalance with a single-row writer running (moves, MB, MB/s, failed writes,
rows lost), once with the spec's parallel moves and once with one move per node at a time."""

from __future__ import annotations

import psycopg

from ..loaders import settle
from ..rebalance import drain_back, print_runs, run_asset_way, set_on_all_nodes
from .context import WRITER_FIRST_IDS, Seed

EXECUTORS = "citus.max_background_task_executors_per_node"


def rebalance(run: Seed) -> None:
    run.ensure_data()
    groups = run.cluster.worker_groups()
    if len(groups) < 3:
        groups.append(run.cluster.add_worker())
        run.console.print(f"added worker group {groups[-1]}")
    newest = max(groups)
    runs = []
    with psycopg.connect(run.dsn(), autocommit=True) as conn:
        for label, executors in (("parallel", None), ("one per node", "1")):
            drain_back(conn, run.dsn(), newest)
            set_on_all_nodes(conn, run.dsn(), EXECUTORS, executors)
            settle(run.dsn())
            try:
                runs.append(
                    run_asset_way(conn, run.dsn(), WRITER_FIRST_IDS[label], f"moves {label}")
                )
            finally:
                set_on_all_nodes(conn, run.dsn(), EXECUTORS, None)
    print_runs(runs, run.rows, compare=False)
    best = runs[0]
    mb = best.bytes_moved / 1e6
    run.out["rebalance"] = {
        "moves": best.moves,
        "mb": round(mb, 1),
        "seconds": round(best.seconds, 1),
        "mb_per_s": round(mb / best.seconds, 1) if best.seconds else 0.0,
        "failed_writes": best.writer.failed,
        "acked_writes": len(best.writer.acked),
        "rows_lost": best.rows_lost,
        "one_move_per_node": {
            "seconds": round(runs[1].seconds, 1),
            "mb_per_s": round(runs[1].bytes_moved / 1e6 / runs[1].seconds, 1)
            if runs[1].seconds
            else 0.0,
            "failed_writes": runs[1].writer.failed,
            "rows_lost": runs[1].rows_lost,
        },
    }
    ref_mb_s = 1660 / (4 * 60 + 43)
    run.console.print(
        f"rebalance: {mb / best.seconds:.1f} MB/s = {mb / best.seconds / ref_mb_s:.1f}x the "
        f"reference deployment's {ref_mb_s:.1f} MB/s (target ≥ 5x, ≥ 30 MB/s, 0 failed writes)"
    )


__all__ = ["rebalance"]
