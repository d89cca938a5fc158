"""What one `bench seed` run holds: the cluster, the generated file, the console (whose output
the .txt file keeps) and every figure collected for the JSON object; the sections
(``stages``, ``peers``, ``rebalance``, ``loaders``) and the plot are modules of their own.
"""

from __future__ import annotations

import os
import platform
import time
from pathlib import Path

import psycopg
from rich.console import Console

from ... import settings
from ...data.queries import REFERENCE_QUERY, time_query
from ..load import data_file
from ..loaders import settle
from ..rebalance import bench_cluster, bench_spec

SECTIONS = ("stages", "peers", "rebalance", "loaders")
RESULTS = settings.REPO_ROOT / "bench-results"
# The rebalance section's writers: ids apart from every other bench writer's.
WRITER_FIRST_IDS = {"parallel": 1 << 41, "one per node": (1 << 41) + (1 << 32)}


def seed_spec():
    """The bench spec without WAL archiving: at 28 M rows the archive alone grows by tens of
    GB per load, which fills this machine's disk (`bench backup` measures archiving)."""
    from ...cluster.spec import spec_from_mapping

    data = bench_spec().model_dump(mode="json")
    data["backup"]["archiving"] = False
    return spec_from_mapping(data, "<bench seed spec>")


class Seed:
    """One run of the bench: the cluster, the file, the console that is also the .txt file,
    and every figure collected for the JSON object."""

    def __init__(
        self, rows: int, seed: int, runs: int, state_dir: Path, console: Console, spec=None
    ):
        self.spec = spec or seed_spec()
        self.rows = rows
        self.runs = runs
        self.state_dir = state_dir
        self.console = console
        self.path = data_file(rows, seed)
        self.cluster = None
        self.out: dict = {
            "rows": rows,
            "file": str(self.path),
            "file_mb": round(self.path.stat().st_size / 1e6, 1),
            "machine": f"{os.cpu_count()} cores, {platform.platform()}",
            "stages": [],
            "loaders": [],
            "queries": [],
            "rebalance": None,
            "memory_peak_mb": {},
        }
        self.trace = None

    # ---- the cluster ---------------------------------------------------------------
    def dsn(self) -> str:
        return self.cluster.coordinator_dsn()

    def up(self):
        if self.cluster is None or not self.cluster.is_running():
            self.cluster = bench_cluster(self.state_dir, spec=self.spec)
        return self.cluster

    def sql(self, statement, params=None) -> list[tuple]:
        with psycopg.connect(self.dsn(), autocommit=True) as conn:
            cur = conn.execute(statement, params)
            return cur.fetchall() if cur.description else []

    def ensure_data(self) -> None:
        """uk_price and uk_price_raw (both distributed) hold the file's rows; loaded in one
        pass by the loader when they do not (a section run alone)."""
        from ...data import load_price_paid
        from ...data.schema import drop_all

        self.up()
        have = self.sql(
            "SELECT to_regclass('uk_price') IS NOT NULL AND to_regclass('uk_price_raw') IS NOT NULL"
        )[0][0]
        if have:
            typed = self.sql(
                "SELECT count(*) FROM uk_price WHERE postcode IS DISTINCT FROM 'ZZ99 9ZZ'"
            )[0][0]
            raw = self.sql("SELECT count(*) FROM uk_price_raw")[0][0]
            if typed == raw == self.rows:
                return
        self.console.print(f"loading {self.rows:,} rows into uk_price and uk_price_raw …")
        drop_all(self.dsn())
        t0 = time.monotonic()
        load_price_paid(str(self.path), self.dsn(), target="both")
        self.sql("VACUUM ANALYZE uk_price")
        self.sql("VACUUM ANALYZE uk_price_raw")
        self.console.print(f"loaded in {time.monotonic() - t0:.0f} s")

    def settled_timing(self, sql, runs: int | None = None) -> tuple[float, float]:
        """(first call now, median after the cluster settled and one warm-up call)."""
        with psycopg.connect(self.dsn(), autocommit=True) as conn:
            first = time_query(conn, REFERENCE_QUERY, sql, 1).seconds[0]
        settle(self.dsn())
        with psycopg.connect(self.dsn(), autocommit=True) as conn:
            time_query(conn, REFERENCE_QUERY, sql, 1)
            median = time_query(conn, REFERENCE_QUERY, sql, runs or self.runs).median
        return first, median


__all__ = ["RESULTS", "SECTIONS", "WRITER_FIRST_IDS", "Seed", "seed_spec"]
