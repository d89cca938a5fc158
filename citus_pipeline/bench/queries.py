"""`citus-pipeline bench queries`: the four timing queries, reference schema vs `uk_price`.

Same N rows (default 2 M), one run, on the dedicated 2-worker bench cluster:
(a) the reference deployment's table (`uk_price_raw`'s columns: text price, timestamp date,
    varchar codes) distributed by its transaction id as in the reference experiment;
(b) `uk_price` as the data path builds it.
Each query runs 5 times; medians printed with the ratio (a)/(b). Figures, never asserts.
"""

from __future__ import annotations

import time
from pathlib import Path

import psycopg
from rich.table import Table

from ..data.queries import (
    REFERENCE_QUERY,
    UK_PRICE_QUERIES,
    reference_schema_queries,
    time_queries,
)
from .rebalance import bench_cluster, console, load_sample

REFERENCE_TABLE = "uk_price_paid"  # the reference experiment's name for its distributed table
MAKE_REFERENCE = [
    "DROP TABLE IF EXISTS uk_price_paid",
    "CREATE TABLE uk_price_paid (LIKE uk_price_raw INCLUDING ALL)",
    "SELECT create_distributed_table('uk_price_paid', 'transaction_unique_identifier', shard_count => %s)",
    "INSERT INTO uk_price_paid SELECT * FROM uk_price_raw",
    "VACUUM ANALYZE uk_price_paid",
    "VACUUM ANALYZE uk_price",
]


def build_reference_table(conn: psycopg.Connection, shard_count: int) -> int:
    for stmt in MAKE_REFERENCE:
        conn.execute(stmt, (shard_count,) if "%s" in stmt else None)
    return conn.execute("SELECT count(*) FROM uk_price_paid").fetchone()[0]


def table_mb(conn: psycopg.Connection, table: str) -> float:
    return conn.execute("SELECT citus_total_relation_size(%s) / 1e6", (table,)).fetchone()[0]


def run_bench(rows: int, seed: int, runs: int, keep: bool, state_dir: Path, spec: str | None):
    cluster = bench_cluster(state_dir, spec)
    dsn = cluster.coordinator_dsn()
    try:
        n = load_sample(dsn, rows, seed)
        with psycopg.connect(dsn, autocommit=True) as conn:
            shard_count = conn.execute(
                "SELECT count(*) FROM pg_dist_shard WHERE logicalrelid = 'uk_price'::regclass"
            ).fetchone()[0]
            workers = conn.execute(
                "SELECT count(DISTINCT groupid) FROM pg_dist_placement p JOIN pg_dist_shard s USING (shardid) "
                "WHERE s.logicalrelid = 'uk_price'::regclass"
            ).fetchone()[0]
            t0 = time.perf_counter()
            ref_rows = build_reference_table(conn, shard_count)
            console.print(
                f"reference table distributed: {ref_rows:,} rows in {time.perf_counter() - t0:.1f}s"
            )
            sizes = {"a": table_mb(conn, REFERENCE_TABLE), "b": table_mb(conn, "uk_price")}
            a = time_queries(conn, reference_schema_queries(REFERENCE_TABLE), runs=runs)
            b = time_queries(conn, UK_PRICE_QUERIES, runs=runs)
        t = Table(
            title=f"Timing queries, {n:,} rows over {workers} workers, {shard_count} shards, median of {runs}"
        )
        for col in ("query", "(a) reference schema s", "(b) uk_price s", "(a)/(b)"):
            t.add_column(col, justify="left" if col == "query" else "right")
        for name in UK_PRICE_QUERIES:
            ra, rb = a[name].median, b[name].median
            t.add_row(name, f"{ra:.4f}", f"{rb:.4f}", f"{ra / rb:.1f}x" if rb else "–")
        console.print(t)
        console.print(
            f"table size: (a) {sizes['a']:.0f} MB, (b) {sizes['b']:.0f} MB (with indexes)"
        )
        console.print(
            f"target: (b) ≥ 5x faster on {REFERENCE_QUERY} and never slower on the others; "
            "reference deployment: 1.53 s over 2 workers on 28.3 M rows"
        )
        return a, b
    finally:
        if not keep:
            cluster.down(purge=True)


__all__ = ["build_reference_table", "run_bench"]
