"""The record rules: each fault gets its reason; the layout sniffer refuses wrong files."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from citus_pipeline.data import format as fmt

SAMPLE = Path(__file__).parents[1] / "data" / "pp-sample-1995.csv"
GOOD = [
    "{5BBE9CB3-6332-4EB0-9CD3-8737CEA4A65A}",
    "42000",
    "1995-12-21 00:00",
    "NE4 9DN",
    "S",
    "N",
    "F",
    "8",
    "",
    "MATFEN PLACE",
    "FENHAM",
    "NEWCASTLE UPON TYNE",
    "NEWCASTLE UPON TYNE",
    "TYNE AND WEAR",
    "A",
    "A",
]


def with_(i: int, v: str) -> list[str]:
    r = list(GOOD)
    r[i] = v
    return r


def test_good_record_passes():
    assert fmt.validate_fields(GOOD) is None


@pytest.mark.parametrize(
    "fields, reason",
    [
        (GOOD + ["x", "y", "z"], "field count 19, expected 16"),
        (GOOD[:15], "field count 15, expected 16"),
        (
            with_(0, "5BBE9CB3-6332-4EB0-9CD3-8737CEA4A65A"),
            "bad GUID '5BBE9CB3-6332-4EB0-9CD3-8737CEA4A65A'",
        ),
        (with_(1, "abc"), "price not an integer: 'abc'"),
        (with_(1, "0"), "price out of range: '0'"),
        (with_(1, "-5"), "price out of range: '-5'"),
        (with_(1, "99999999999"), "price out of range: '99999999999'"),
        (with_(2, "21-12-1995 00:00"), "bad date '21-12-1995 00:00' (expected YYYY-MM-DD 00:00)"),
        (with_(2, "1995-02-30 00:00"), "bad date '1995-02-30 00:00' (expected YYYY-MM-DD 00:00)"),
        (with_(2, "1990-01-01 00:00"), "date out of range: '1990-01-01 00:00'"),
        (with_(4, "X"), "unknown property_type 'X'"),
        (with_(5, "y"), "unknown old_new 'y'"),
        (with_(6, "Q"), "unknown duration 'Q'"),
        (with_(14, "C"), "unknown ppd_category_type 'C'"),
        (with_(15, "Z"), "unknown record_status 'Z'"),
        (with_(15, "D"), "record_status 'D' in a complete file (use apply-monthly)"),
        (with_(8, "x" * 51), "saon too long (51 chars, max 50)"),
    ],
)
def test_each_fault_has_its_reason(fields, reason):
    assert fmt.validate_fields(fields) == reason


def test_monthly_statuses_pass_outside_complete_files():
    for st in "ACD":
        assert fmt.validate_fields(with_(15, st), complete=False) is None


def test_every_real_sample_record_is_good():
    with open(SAMPLE, encoding="utf-8", newline="") as f:
        rows = list(csv.reader(f))
    assert len(rows) == 10_298
    assert [r for r in rows if fmt.validate_fields(r) is not None] == []


def test_quote_record_round_trips():
    rec = with_(7, 'THE "OLD" FORGE, 3')
    assert next(csv.reader([fmt.quote_record(rec)])) == rec


def test_sniff_refuses_header_and_spreadsheet_resave():
    header = ["Transaction unique identifier", "Price", "Date of Transfer", "Postcode"]
    assert "header" in fmt.sniff_file_shape([header, GOOD]).message
    resaved = [GOOD[:2] + ["21/12/1995"] + GOOD[3:] + ["", "", ""] for _ in range(10)]
    msg = fmt.sniff_file_shape(resaved).message
    assert "none of the first 10 records" in msg and "field count 19" in msg


def test_sniff_lets_a_good_file_with_a_bad_record_through():
    assert fmt.sniff_file_shape([with_(1, "abc")] + [GOOD] * 9) is None
