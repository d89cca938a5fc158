"""`citus-pipeline bench load`: the reference load against this loader, same file, one run.

(a) reference, end to end: psql `\\COPY` of the file into `uk_price_raw` (the reference
    schema) as a plain coordinator table, then `create_distributed_table` and
    `truncate_local_data_after_distributing_table`;
(b) this loader: the same file -> validated, typed, distributed `uk_price` (schema creation
    included), once per `--jobs` value, each in a fresh schema and a child process whose
    peak RSS is reported.
The ratio is speed: rows/s of (b) over rows/s of (a). `--big-rows` adds one run of (a) and
one of (b) on a larger file: how the rate changes as the file (and the table) grows.
Timings are printed, never asserted.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import psycopg
from psycopg import sql
from rich.console import Console
from rich.table import Table

from .. import settings
from .loaders import reference, settle

console = Console(width=200)
REF_SCHEMA = "bench_load_ref"
OURS_SCHEMA = "bench_load_ours"

_CHILD = r"""
import json, resource, sys, time
from citus_pipeline.data.load import load_price_paid
path, dsn, schema, jobs, shards = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
t = time.monotonic()
r = load_price_paid(path, dsn, jobs=jobs, schema=schema, target="uk_price", shard_count=shards)
secs = time.monotonic() - t
print(json.dumps({"seconds": secs, "rows": r.rows_loaded, "rejected": r.rows_rejected,
                  "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def data_file(rows: int, seed: int, work_dir: Path | None = None) -> Path:
    """The generated file for (rows, seed), made once and reused (in $CITUS_PIPELINE_BENCH_DIR)."""
    from ..data.generate import generate_complete

    work_dir = work_dir or Path(settings.BENCH_DIR.get())
    work_dir.mkdir(parents=True, exist_ok=True)
    path = work_dir / f"pp-bench-{rows}-{seed}.csv"
    if not path.exists():
        tmp = path.with_suffix(".partial")
        generate_complete(tmp, rows, seed)
        tmp.rename(path)
    return path


def run_reference(path: Path, dsn: str, shard_count: int) -> dict:
    """(a): psql \\COPY into the plain reference table, then distribute it."""
    r = reference(dsn, path, None, shard_count, schema=REF_SCHEMA)
    return {**r.phases, "seconds": r.seconds, "rows": r.rows}


def run_loader(
    path: Path, dsn: str, jobs: int, shard_count: int, schema: str = OURS_SCHEMA
) -> dict:
    """(b) in a child process: file -> validated distributed uk_price; seconds and peak RSS.

    `seconds` times the `load_price_paid` call (what a Dagster asset pays); `process_s` the
    whole child, interpreter start and imports included (what `citus-pipeline data load` pays).
    """
    from ..data.schema import drop_all

    drop_all(dsn, schema=schema)
    settle(dsn)
    t0 = time.monotonic()
    out = subprocess.run(
        [sys.executable, "-c", _CHILD, str(path), dsn, schema, str(jobs), str(shard_count)],
        check=True,
        capture_output=True,
        text=True,
    )
    result = json.loads(out.stdout.strip().splitlines()[-1])
    result["process_s"] = time.monotonic() - t0
    return result


def _drop(dsn: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        for s in (REF_SCHEMA, OURS_SCHEMA):
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(s)))


def run_bench(
    rows: int = 2_000_000,
    seed: int = 2024,
    jobs: list[int] | None = None,
    big_rows: int = 0,
    dsn: str | None = None,
    shard_count: int = 32,
    keep: bool = False,
) -> None:
    """Reference psql \\COPY + distribute vs this loader (file -> validated distributed uk_price)."""
    jobs = jobs or [1, 2, 4]  # a list default would be shared between calls
    dsn = dsn or settings.DSN.get()
    started = None  # the dedicated bench cluster, when no DSN was given: stopped at the end
    if not dsn:
        from .rebalance import bench_cluster

        started = bench_cluster()
        dsn = started.coordinator_dsn()
    path = data_file(rows, seed)
    console.print(f"file: {path} ({rows:,} rows, {path.stat().st_size / 1e6:.0f} MB)")
    # the reference runs first and again last; its faster run is the yardstick
    ref = run_reference(path, dsn, shard_count)
    _drop(dsn)  # its 2 M rows would keep autovacuum busy during the next method
    table = Table(title=f"bench load: {rows:,} rows, {os.cpu_count()} cores")
    for col in (
        "method",
        "rows",
        "seconds",
        "rows/s",
        "ratio b/a",
        "process s",
        "ratio (process)",
        "peak RSS MB",
    ):
        table.add_column(col, justify="right" if col != "method" else "left")
    ours = [(j, run_loader(path, dsn, j, shard_count)) for j in jobs]
    ref = min(ref, run_reference(path, dsn, shard_count), key=lambda r: r["seconds"])

    def add_reference(label: str, a: dict) -> float:
        rate = a["rows"] / a["seconds"]
        table.add_row(
            f"(a) reference{label}: psql \\COPY {a['copy_s']:.1f} s + distribute {a['distribute_s']:.1f} s",
            f"{a['rows']:,}",
            f"{a['seconds']:.2f}",
            f"{rate:,.0f}",
            "1.00",
            "-",
            "-",
            "-",
        )
        return rate

    def add_loader(label: str, b: dict, ref_rate: float) -> float:
        rate = b["rows"] / b["seconds"]
        table.add_row(
            f"(b) this loader, {label}",
            f"{b['rows']:,}",
            f"{b['seconds']:.2f}",
            f"{rate:,.0f}",
            f"{rate / ref_rate:.2f}",
            f"{b['process_s']:.2f}",
            f"{b['rows'] / b['process_s'] / ref_rate:.2f}",
            f"{b['rss_mb']:.0f}",
        )
        return rate / ref_rate

    ref_rate = add_reference(" (faster of 2 runs)", ref)
    default_jobs = os.cpu_count() or 1
    ratios = {j: add_loader(f"--jobs {j}", r, ref_rate) for j, r in ours}
    best, at_default = max(ratios.values()), ratios.get(default_jobs)
    if big_rows:
        # the bigger file against the reference on that file too (one run each): the database's
        # work per row grows with the table for both ways, the loader's does not
        big = data_file(big_rows, seed)
        big_ref_rate = add_reference(
            f", {big_rows:,}-row file (one run)", run_reference(big, dsn, shard_count)
        )
        _drop(dsn)
        j = default_jobs if default_jobs in jobs else max(jobs)
        add_loader(
            f"{big_rows:,}-row file, --jobs {j}", run_loader(big, dsn, j, shard_count), big_ref_rate
        )
    console.print(table)
    console.print(f"best ratio b/a (speed): {best:.2f}  (target ≥ 1.0, stretch ≥ 1.5)")
    if at_default is not None:
        console.print(
            f"ratio at the default --jobs {default_jobs} (one stream per core): {at_default:.2f}"
        )
    if not keep:
        _drop(dsn)
        if started is not None:
            started.down()


__all__ = ["data_file", "run_bench", "run_loader", "run_reference"]
