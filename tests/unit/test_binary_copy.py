"""Binary COPY rows, decoded back field by field and compared with the parsed text."""

from __future__ import annotations

import datetime as dt
import struct
import uuid
from pathlib import Path

import pytest

from citus_pipeline.data import binary_copy, schema
from citus_pipeline.data.parse import parse_chunk

SAMPLE = Path(__file__).parents[1] / "data" / "pp-sample-1995.csv"
PG_EPOCH = dt.datetime(2000, 1, 1)


def decode(buf: memoryview, fields: int) -> list[list[bytes | None]]:
    """PostgreSQL's binary COPY rows (no signature or trailer) back into fields."""
    rows, o = [], 0
    while o < len(buf):
        (count,) = struct.unpack_from(">h", buf, o)
        assert count == fields
        o += 2
        row = []
        for _ in range(count):
            (n,) = struct.unpack_from(">i", buf, o)
            o += 4
            row.append(None if n == -1 else bytes(buf[o : o + n]))
            o += max(n, 0)
        rows.append(row)
    assert o == len(buf)
    return rows


@pytest.fixture(scope="module")
def parsed():
    p = parse_chunk(SAMPLE.read_bytes(), 1)
    assert not p.rejects
    return p.good


def test_typed_rows_carry_every_value_of_every_row(parsed):
    rows = decode(binary_copy.typed_rows(parsed), len(schema.TYPED_COLUMNS))
    assert len(rows) == parsed.num_rows == 10_298
    src = parsed.to_pylist()
    for r, s in zip(rows, src, strict=True):
        assert uuid.UUID(bytes=r[0]) == uuid.UUID(s["transaction_id"])
        assert struct.unpack(">i", r[1])[0] == int(s["price"])
        days = struct.unpack(">i", r[2])[0]
        assert (PG_EPOCH + dt.timedelta(days=days)).strftime("%Y-%m-%d 00:00") == s[
            "date_of_transfer"
        ]
        for k, c in enumerate(schema.TYPED_COLUMNS[3:], start=3):
            want = s[c].encode() if s[c] else None  # empty address parts are NULL
            assert r[k] == want, (c, r[k], want)


def test_raw_rows_keep_the_text_as_written(parsed):
    rows = decode(binary_copy.raw_rows(parsed), 16)
    src = parsed.to_pylist()
    for r, s in zip(rows, src, strict=True):
        values = list(s.values())
        assert uuid.UUID(bytes=r[0]) == uuid.UUID(values[0])
        assert r[1].decode() == values[1]
        us = struct.unpack(">q", r[2])[0]
        assert (PG_EPOCH + dt.timedelta(microseconds=us)).strftime("%Y-%m-%d %H:%M") == values[2]
        assert [v.decode() for v in r[3:]] == values[3:]  # empty stays an empty string


def test_a_slice_and_an_empty_table_encode_alone(parsed):
    part = parsed.slice(17, 5)
    rows = decode(binary_copy.typed_rows(part), len(schema.TYPED_COLUMNS))
    assert [uuid.UUID(bytes=r[0]) for r in rows] == [
        uuid.UUID(x) for x in part["transaction_id"].to_pylist()
    ]
    assert len(binary_copy.typed_rows(parsed.slice(0, 0))) == 0


def test_lead_fields_come_first_and_the_row_stays_whole(parsed):
    """The monthly stage's rows: source, line and status in front of uk_price's columns."""
    import numpy as np

    from citus_pipeline.data.monthly import _stage_rows

    part = parsed.slice(3, 40)
    lines = np.arange(100, 140, dtype=np.int64)
    copy = _stage_rows("fp-1", part, lines)
    assert copy.startswith(binary_copy.SIGNATURE) and copy.endswith(binary_copy.TRAILER)
    body = memoryview(copy)[len(binary_copy.SIGNATURE) : -len(binary_copy.TRAILER)]
    rows = decode(body, 3 + len(schema.TYPED_COLUMNS))
    plain = decode(binary_copy.typed_rows(part), len(schema.TYPED_COLUMNS))
    for r, p, line, s in zip(rows, plain, lines, part.to_pylist(), strict=True):
        assert r[0] == b"fp-1"
        assert struct.unpack(">q", r[1])[0] == line
        assert r[2] == s["record_status"].encode()
        assert r[3:] == p
