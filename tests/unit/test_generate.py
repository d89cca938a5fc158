"""The generator: exact layout, deterministic, realistic shares, bad records where it says."""

from __future__ import annotations

import csv
import hashlib
import json
from collections import Counter

from citus_pipeline.data import format as fmt
from citus_pipeline.data.generate import generate_complete, generate_monthly
from citus_pipeline.data.parse import to_utf8


def records(path):
    data, _ = to_utf8(path.read_bytes())
    return list(csv.reader(data.decode().splitlines()))


def test_layout_and_determinism(tmp_path):
    a, b, c = tmp_path / "a.csv", tmp_path / "b.csv", tmp_path / "c.csv"
    generate_complete(a, 20_000, seed=5)
    generate_complete(b, 20_000, seed=5)
    generate_complete(c, 20_000, seed=6)
    digest = lambda p: hashlib.sha256(p.read_bytes()).hexdigest()
    assert digest(a) == digest(b) != digest(c)
    raw = a.read_bytes()
    assert raw.count(b"\n") == 20_000 and b"\r" not in raw
    recs = records(a)
    assert all(fmt.validate_fields(r) is None for r in recs)
    assert all(line.startswith(b'"{') and line.endswith(b'"') for line in raw.splitlines())
    shares = Counter(r[4] for r in recs)
    assert set(shares) == set("DSTFO")
    assert 0.2 < shares["T"] / len(recs) < 0.4 and shares["O"] < shares["F"]

    # prices grow over the years and detached houses cost more than terraced ones
    def median(xs):
        xs = sorted(xs)
        return xs[len(xs) // 2]

    assert median([int(r[1]) for r in recs if r[2] < "1998"]) < median(
        [int(r[1]) for r in recs if r[2] > "2020"]
    )
    assert median([int(r[1]) for r in recs if r[4] == "D"]) > median(
        [int(r[1]) for r in recs if r[4] == "T"]
    )
    assert len({r[0] for r in recs}) == len(recs)


def test_edge_cases_and_crlf(tmp_path):
    p = tmp_path / "e.csv"
    generate_complete(p, 20_000, seed=1, edge_cases=True, crlf=True)
    raw = p.read_bytes()
    assert raw.count(b"\r\n") == 20_000
    lines = raw.split(b"\r\n")[:-1]
    bad_utf8 = [ln for ln in lines if not _is_utf8(ln)]
    assert bad_utf8, "some records carry Windows-1252 bytes"
    recs = records(p)
    assert all(fmt.validate_fields(r) is None for r in recs)
    assert any("," in r[7] for r in recs) and any('"' in r[9] for r in recs)
    assert any("'" in r[9] for r in recs) and any(r[3] == "" for r in recs)
    assert any("É" in r[7] or "Ë" in r[7] for r in recs)


def _is_utf8(b: bytes) -> bool:
    try:
        b.decode("utf-8")
        return True
    except UnicodeDecodeError:
        return False


def test_bad_records_are_listed(tmp_path):
    p = tmp_path / "bad.csv"
    r = generate_complete(p, 5_000, seed=3, bad=40)
    assert len(r.bad_records) == 40
    listed = json.loads((tmp_path / "bad.csv.bad.json").read_text())
    assert [b["line"] for b in listed] == [b.line for b in r.bad_records]
    lines = p.read_bytes().decode().splitlines()
    assert len(lines) == 5_040
    for b in r.bad_records:
        line = lines[b.line - 1]
        if b.kind == "quoting":
            assert line.count('"') % 2 == 1
        else:
            assert fmt.validate_fields(next(csv.reader([line]))) == b.reason


def test_monthly_refers_to_the_base(tmp_path):
    base, m, nxt = tmp_path / "base.csv", tmp_path / "m.csv", tmp_path / "next.csv"
    generate_complete(base, 3_000, seed=1)
    r = generate_monthly(m, base, 400, seed=2, unknown=4, expected_out=nxt)
    base_ids = {x[0] for x in records(base)}
    recs = records(m)
    by = Counter(x[15] for x in recs)
    assert by == {"A": 340 + 0, "C": 40 + 2, "D": 20 + 2}
    assert all(x[0] in base_ids for x in recs if x[15] in "CD" and x[0] not in r.unknown_ids)
    assert all(x[0] not in base_ids for x in recs if x[15] == "A")
    assert len(r.unknown_ids) == 4 and not set(r.unknown_ids) & base_ids
    assert len(records(nxt)) == 3_000 - 20 + 340
