"""`bench seed` on a small file and a real cluster: every loader loads every row, every engine
answers the same, the rebalance under a writer loses nothing, and the figures land on disk.

Timings are printed by the bench, never asserted here.
"""

from __future__ import annotations

import io
import json
import shutil

import pytest

from citus_pipeline.bench.loaders import LOADERS
from citus_pipeline.bench.seed import run_seed
from citus_pipeline.data.queries import TABLE_QUERIES, UK_PRICE_QUERIES

pytestmark = [pytest.mark.citus, pytest.mark.cluster]
ROWS = 20_000


def test_seed_sections_load_every_row_agree_and_lose_nothing(fresh_cluster, tmp_path, monkeypatch):
    monkeypatch.setenv("CITUS_PIPELINE_BENCH_DIR", str(tmp_path / "files"))
    cluster = fresh_cluster(start=False)
    loaders = LOADERS if shutil.which("pgloader") else tuple(x for x in LOADERS if x != "pgloader")
    terminal = io.StringIO()
    out = run_seed(
        rows=ROWS,
        seed=7,
        sections=("peers", "rebalance", "loaders"),
        loaders=loaders,
        runs=2,
        out_dir=tmp_path / "results",
        state_dir=cluster.state_dir,
        spec=cluster.spec,
        terminal=terminal,
    )

    # every way of a first load: every row of the file, each in a distributed table
    assert [x["name"] for x in out["loaders"]] == list(loaders)
    first = [name for name in loaders if not name.endswith("non_empty")]
    assert {x["name"]: x["rows"] for x in out["loaders"] if x["name"] in first} == {
        name: ROWS for name in first
    }
    assert all(x["rows_per_s"] > 0 and x["peak_rss_mb"] > 0 for x in out["loaders"])

    # the second half of the file into a table that holds the first, by \\copy and this loader
    half = {x["name"]: x for x in out["loaders"] if "non-empty" in x["label"]}
    assert set(half) == {"copy_non_empty", "this_loader_non_empty"}
    assert all(0 < x["rows"] < ROWS and x["rows_per_s"] > 0 for x in half.values())
    assert half["copy_non_empty"]["rows"] == half["this_loader_non_empty"]["rows"]
    assert out["loader_ratio_non_empty"] > 0

    # five engines (three on the cluster): every question on the table's rows, chDB and
    # DuckDB, the four the rollup answers on it; every engine answers as the table does
    engines = {x["engine"] for x in out["queries"]}
    assert {"chdb", "duckdb"} <= engines and len(engines) == 5
    asked = {(x["engine"], x["query"]) for x in out["queries"]}
    table = {x["engine"] for x in out["queries"] if x.get("rollup") is False}
    rollup = {x["engine"] for x in out["queries"] if x.get("rollup") is True}
    assert len(rollup) == 1 and len(table) == 2
    for engine in ("chdb", "duckdb", *table):
        wanted = TABLE_QUERIES if engine in ("chdb", "duckdb") or "raw" not in engine else ()
        assert {(engine, q) for q in wanted} <= asked
    assert {(e, q) for e in rollup for q in UK_PRICE_QUERIES} == {
        (e, q) for e, q in asked if e in rollup
    }
    assert out["answers_agree"] == {q: True for q in TABLE_QUERIES}
    assert len(set(out["reference_answers"].values())) == 1
    assert {x["rows"] for x in out["peer_loads"].values()} == {ROWS}

    # the rebalance with the writer running: moves made, nothing failed, nothing lost
    r = out["rebalance"]
    assert r["moves"] > 0 and r["mb"] > 0 and r["acked_writes"] > 0
    assert (r["failed_writes"], r["rows_lost"]) == (0, 0)
    assert (r["one_move_per_node"]["failed_writes"], r["one_move_per_node"]["rows_lost"]) == (0, 0)

    # the raw output: the same figures on disk, the log and the plot
    saved = json.loads((tmp_path / "results" / f"seed-{ROWS}.json").read_text())
    assert saved["loaders"] == out["loaders"] and saved["rebalance"] == out["rebalance"]
    text = (tmp_path / "results" / f"seed-{ROWS}.txt").read_text()
    assert "Loaders" in text and "Timing and ad-hoc queries" in text and "rebalance" in text
    assert (tmp_path / "results" / f"seed-{ROWS}.png").stat().st_size > 10_000
