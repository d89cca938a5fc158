"""The peers section of `bench seed`: the four timing queries and the ad-hoc ones on chDB and
DuckDB (each loading the same file into its own storage, in a child process) next to
`uk_price`'s rows, its rollup (the four it answers) and the reference schema's table on the
cluster; every engine's answers compared with the cluster table's."""

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
    PROPERTY_TYPE_NAME_ROWS,
    PROPERTY_TYPE_NAMES,
    REFERENCE_QUERY,
    TABLE_QUERIES,
    answer_rows,
    reference_schema_queries,
    time_query,
)
from ..loaders import settle
from ..peers import ENGINES
from ..usage import run_children
from .context import Seed


def _cluster_engines(run: Seed) -> dict[str, tuple[dict, bool]]:
    """Each cluster engine's questions and whether it answers from the rollup."""
    workers = len(run.cluster.worker_groups())
    return {
        f"citus uk_price ({workers} workers)": (TABLE_QUERIES, False),
        "citus uk_price_rollup (coordinator)": (rollup.QUERIES, True),
        f"reference schema uk_price_raw ({workers} workers)": (
            reference_schema_queries("uk_price_raw"),
            False,
        ),
    }


def _property_type_names(conn: psycopg.Connection) -> None:
    """The join's small table, a Citus reference table (a copy on every node)."""
    conn.execute(f"DROP TABLE IF EXISTS {PROPERTY_TYPE_NAMES}")
    conn.execute(f'CREATE TABLE {PROPERTY_TYPE_NAMES} (code "char" PRIMARY KEY, name text)')
    conn.execute("SELECT create_reference_table(%s)", (PROPERTY_TYPE_NAMES,))
    with conn.cursor() as cur:
        cur.executemany(
            f"INSERT INTO {PROPERTY_TYPE_NAMES} VALUES (%s, %s)", PROPERTY_TYPE_NAME_ROWS
        )


def _cluster_medians(run: Seed, engines) -> tuple[dict[str, dict[str, float]], dict]:
    """Median seconds per engine on the cluster and query, and each engine's answer rows."""
    medians: dict[str, dict[str, float]] = {}
    answers: dict[str, dict[str, list]] = {}
    with psycopg.connect(run.dsn(), autocommit=True) as conn:
        _property_type_names(conn)
        for engine, (queries, _) in engines.items():
            medians[engine] = {}
            answers[engine] = {}
            for name, sql in queries.items():
                time_query(conn, name, sql, 1)  # warm
                medians[engine][name] = time_query(conn, name, sql, run.runs).median
                answers[engine][name] = answer_rows(conn.execute(sql).fetchall())
    return medians, answers


def _compare(run: Seed, answers: dict[str, dict[str, list]]) -> dict[str, bool]:
    """Per query: every engine that asked it answers as the cluster's table does."""
    table = next(iter(answers))
    agree = {}
    for name, truth in answers[table].items():
        differ = [e for e, by in answers.items() if name in by and by[name] != truth]
        agree[name] = not differ
        if differ:
            run.console.print(f"[red]{name}: {', '.join(differ)} answer otherwise than {table}")
    return agree


def peers(run: Seed) -> None:
    run.ensure_data()
    settle(run.dsn())
    engines = _cluster_engines(run)
    medians, answers = _cluster_medians(run, engines)
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
            answers[engine] = res["answers"]
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
    run.out["reference_answers"] = {e: int(by[REFERENCE_QUERY][0][0]) for e, by in answers.items()}
    run.out["answers_agree"] = _compare(run, answers)
    for engine, by_query in medians.items():
        rollup_flag = engines[engine][1] if engine in engines else None
        for name, median in by_query.items():
            entry = {"engine": engine, "query": name, "median_s": median}
            if rollup_flag is not None:
                entry["rollup"] = rollup_flag
            run.out["queries"].append(entry)
    t = Table(title=f"Timing and ad-hoc queries, {run.rows:,} rows, median of {run.runs} (warm)")
    t.add_column("query")
    for engine in medians:
        t.add_column(f"{engine} s", justify="right")
    citus = next(iter(medians))
    t.add_column("citus / chdb", justify="right")
    t.add_column("citus / duckdb", justify="right")
    for name in TABLE_QUERIES:
        row = [f"{medians[e][name]:.4f}" if name in medians[e] else "" for e in medians]
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
