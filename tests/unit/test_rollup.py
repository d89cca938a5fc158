"""The rollup's per-chunk counts, computed from parsed rows without a database."""

from __future__ import annotations

from citus_pipeline.data import rollup
from citus_pipeline.data.parse import parse_chunk

ROWS = b"""\
"{00000000-0000-4000-8000-000000000001}","100","2024-05-01 00:00","LS1 1AA","S","N","F","1","","HIGH STREET","","LEEDS","LEEDS","WEST YORKSHIRE","A","A"
"{00000000-0000-4000-8000-000000000002}","300","2024-06-01 00:00","LS1 1AA","S","N","F","2","","HIGH STREET","","LEEDS","LEEDS","WEST YORKSHIRE","A","A"
"{00000000-0000-4000-8000-000000000003}","50","1999-01-01 00:00","N1 1AA","F","N","L","3","","","","LONDON","","GREATER LONDON","A","A"
"""


def test_delta_sums_sales_and_prices_per_key_with_empty_parts_as_null():
    parsed = parse_chunk(ROWS, 1)
    assert parsed.good.num_rows == 3 and not parsed.rejects
    d = rollup.Delta()
    d.add_parsed(parsed.good)
    d.add_parsed(parsed.good.slice(0, 1))  # a second piece of the same chunk adds up
    d.add((1999, "F", None, "LONDON"), -1, -50)  # a negative delta cancels a key to zero
    assert d.totals() == {
        (2024, "S", "LEEDS", "LEEDS"): [3, 500],
        (1999, "F", None, "LONDON"): [0, 0],
    }


def test_rollup_answers_the_same_four_questions_as_the_scan():
    from citus_pipeline.data.queries import UK_PRICE_QUERIES

    assert set(rollup.QUERIES) == set(UK_PRICE_QUERIES)
