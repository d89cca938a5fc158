"""The peers section of `bench seed`: the four timing queries on chDB and DuckDB (each loading
the same file into its own storage, in a child process) next to `uk_price`, its rollup and
the reference schema's table on the cluster."""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
from pathlib import Path

import psycopg
from rich.table import Table

from ...data import rollup
from ...data.queries import (
    REFERENCE_QUERY,
    UK_PRICE_QUERIES,
    reference_schema_queries,
    time_query,
)
from ..loaders import settle
from ..peers import ENGINES
from ..usage import run_children
from .context import Seed


def _cluster_medians(run: Seed) -> tuple[dict[str, dict[str, float]], dict]:
    """Median seconds per engine on the cluster and query, and each one's reference answer."""
    workers = len(run.cluster.worker_groups())
    engines = {
        f"citus uk_price ({workers} workers)": UK_PRICE_QUERIES,
        "citus uk_price_rollup (coordinator)": rollup.QUERIES,
        f"reference schema uk_price_raw ({workers} workers)": reference_schema_queries(
            "uk_price_raw"
        ),
    }
    medians: dict[str, dict[str, float]] = {}
    answers = {}
    with psycopg.connect(run.dsn(), autocommit=True) as conn:
        for engine, queries in engines.items():
            medians[engine] = {}
            for name, sql in queries.items():
                time_query(conn, name, sql, 1)  # warm
                medians[engine][name] = time_query(conn, name, sql, run.runs).median
            answers[engine] = conn.execute(queries[REFERENCE_QUERY]).fetchone()[0]
    return medians, answers


def peers(run: Seed) -> None:
    run.ensure_data()
    settle(run.dsn())
    medians, answers = _cluster_medians(run)
    loads = {}
    work = Path(tempfile.mkdtemp(prefix="citus-pipeline-peers-", dir=run.path.parent))
    try:
        for engine in ENGINES:
            m = run_children(
                [
                    [
                        sys.executable,
                        "-m",
                        "citus_pipeline.bench.peers",
                        engine,
                        str(run.path),
                        str(work),
                        str(run.runs),
                    ]
                ],
                None,
            )
            res = json.loads(m.output.strip().splitlines()[-1])
            medians[engine] = res["medians"]
            answers[engine] = res["answer"]
            loads[engine] = {
                "load_s": round(res["load_s"], 1),
                "rows": res["rows"],
                "storage_mb": round(res["storage_mb"], 1),
                "peak_rss_mb": round(m.peak_rss_mb),
                "cpu_s": round(m.client_cpu_s, 1),
            }
    finally:
        shutil.rmtree(work, ignore_errors=True)
    run.out["peer_loads"] = loads
    run.out["reference_answers"] = answers
    if len(set(answers.values())) != 1:
        run.console.print(f"[red]the engines answer the reference query differently: {answers}")
    for engine, by_query in medians.items():
        for name, median in by_query.items():
            run.out["queries"].append({"engine": engine, "query": name, "median_s": median})
    t = Table(title=f"Timing queries, {run.rows:,} rows, median of {run.runs} (warm)")
    t.add_column("query")
    for engine in medians:
        t.add_column(f"{engine} s", justify="right")
    citus = next(iter(medians))
    t.add_column("citus / chdb", justify="right")
    t.add_column("citus / duckdb", justify="right")
    for name in UK_PRICE_QUERIES:
        row = [f"{medians[e][name]:.4f}" for e in medians]
        c = medians[citus][name]
        row += [f"{c / medians[e][name]:.1f}x" for e in ENGINES]
        t.add_row(name, *row)
    run.console.print(t)
    for engine, ld in loads.items():
        run.console.print(
            f"{engine}: loaded {ld['rows']:,} rows in {ld['load_s']} s, "
            f"{ld['storage_mb']} MB on disk, peak RSS {ld['peak_rss_mb']} MB"
        )


__all__ = ["peers"]
