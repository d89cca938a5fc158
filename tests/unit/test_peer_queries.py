"""The questions `bench seed` asks every engine: the same answers from chDB's and DuckDB's
dialects on the real sample, and the comparison that says so refuses a different answer."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest

from citus_pipeline.bench import peers
from citus_pipeline.data.generate import generate_complete
from citus_pipeline.data.queries import (
    ADHOC_QUERIES,
    TABLE_QUERIES,
    UK_PRICE_QUERIES,
    answer_rows,
)
from citus_pipeline.data.rollup import QUERIES as ROLLUP_QUERIES

pytest.importorskip("duckdb")
pytest.importorskip("chdb")
SAMPLE = Path(__file__).parents[1] / "data" / "pp-sample-1995.csv"


def test_every_engine_asks_every_question_and_only_the_four_come_from_the_rollup():
    assert set(peers.CHDB_QUERIES) == set(peers.DUCKDB_QUERIES) == set(TABLE_QUERIES)
    assert len(TABLE_QUERIES) >= 8 and len(ADHOC_QUERIES) >= 4
    assert set(ROLLUP_QUERIES) == set(UK_PRICE_QUERIES)
    assert not set(ADHOC_QUERIES) & set(ROLLUP_QUERIES)


@pytest.fixture(scope="module")
def generated(tmp_path_factory) -> Path:
    """20,000 generated records over 1995-2024: every question has rows to answer."""
    path = tmp_path_factory.mktemp("peers") / "generated.csv"
    generate_complete(path, 20_000, seed=3)
    return path


@pytest.mark.parametrize("which", ["sample", "generated"])
def test_chdb_and_duckdb_answer_alike(which, generated, tmp_path):
    path, rows = (SAMPLE, 10_298) if which == "sample" else (generated, 20_000)
    duck = peers.run_duckdb(path, tmp_path, runs=1)
    ch = peers.run_chdb(path, tmp_path, runs=1)
    assert duck["rows"] == ch["rows"] == rows
    for name in TABLE_QUERIES:
        assert ch["answers"][name] == duck["answers"][name], name
        if which == "generated":
            assert duck["answers"][name], f"{name} answers nothing"
    ref = "reference_semi_detached_count"
    assert duck["answers"][ref] == ch["answers"][ref] and duck["answers"][ref][0][0] > 0


def test_answers_compare_as_numbers_whatever_type_each_engine_gives():
    a = answer_rows([("LONDON", 2, "150001")])
    assert a == [["LONDON", 2.0, 150001.0]]
    assert a == answer_rows([("LONDON", 2, Decimal(150001))])
    assert a != answer_rows([("LONDON", 3, 150001)])
    assert a != answer_rows([("LONDON", 2, 150000)])
    assert a != answer_rows([("LEEDS", 2, 150001)])
    assert a != a + a
