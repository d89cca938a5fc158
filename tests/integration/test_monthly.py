"""Monthly A/C/D against real Citus: equals the next complete file, idempotent, unknown ids logged."""

from __future__ import annotations

import uuid

import pytest
from uk_price_reads import checksum, fetch_all, rollup_off

from citus_pipeline.data import apply_monthly, drop_all, load_price_paid
from citus_pipeline.data.generate import generate_complete, generate_monthly

pytestmark = pytest.mark.citus


@pytest.fixture
def schemas(citus_dsn):
    names = ["t_mon_" + uuid.uuid4().hex[:8] for _ in range(2)]
    yield names
    for n in names:
        drop_all(citus_dsn, schema=n)


def test_monthly_equals_next_complete_file_and_is_idempotent(citus_dsn, schemas, tmp_path):
    applied, expected = schemas
    base, month, nxt = tmp_path / "base.csv", tmp_path / "m.csv", tmp_path / "next.csv"
    generate_complete(base, 8_000, seed=31)
    g = generate_monthly(month, base, 1_000, seed=32, unknown=6, expected_out=nxt)
    load_price_paid(base, citus_dsn, schema=applied, target="both", jobs=2)
    r = apply_monthly(month, citus_dsn, schema=applied)
    assert (r.adds, r.changes, r.deletes) == (850, 100, 50)
    assert (r.unknown_changes, r.unknown_deletes) == (3, 3)
    assert sorted(r.unknown_ids) == sorted(g.unknown_ids)
    logged = fetch_all(
        citus_dsn,
        f"SELECT outcome, count(*) FROM {applied}.uk_price_monthly_log GROUP BY 1 ORDER BY 1",
    )
    assert logged == [("changed", 100), ("deleted", 50), ("inserted", 850), ("unknown id", 6)]
    load_price_paid(nxt, citus_dsn, schema=expected, target="both", jobs=2)
    for table in ("uk_price", "uk_price_raw", "uk_price_rollup"):
        assert checksum(citus_dsn, applied, table) == checksum(citus_dsn, expected, table)
    assert rollup_off(citus_dsn, applied) == 0
    before = checksum(citus_dsn, applied)
    again = apply_monthly(month, citus_dsn, schema=applied)
    assert again.files_already_applied == 1 and again.applied == 0
    assert checksum(citus_dsn, applied) == before
    assert (
        fetch_all(citus_dsn, f"SELECT count(*) FROM {applied}.uk_price_monthly_log")[0][0] == 1_006
    )


def test_acd_on_hand_made_rows(citus_dsn, schemas, tmp_path):
    s = schemas[0]

    def rec(i, price, status, town="LEEDS"):
        return (
            f'"{{00000000-0000-4000-8000-{i:012d}}}","{price}","2024-05-0{i % 9 + 1} 00:00","LS1 1AA","F","N","L",'
            f'"{i}","FLAT 1","HIGH STREET","","{town}","LEEDS","WEST YORKSHIRE","A","{status}"'
        )

    base = tmp_path / "base.csv"
    base.write_text("\n".join(rec(i, 100_000 + i, "A") for i in range(1, 6)) + "\n")
    load_price_paid(base, citus_dsn, schema=s, target="uk_price")
    m = tmp_path / "m.csv"
    m.write_text(
        "\n".join(
            [
                rec(6, 250_000, "A"),  # new
                rec(2, 111_111, "C", "BRADFORD"),  # change
                rec(3, 0, "D").replace('"0"', '"1"'),  # delete
                rec(9, 5, "C"),  # unknown id
                rec(1, 7, "A"),  # A for an existing id: left unchanged
                '"{bad}","1","2024-01-01 00:00"',  # rejected
            ]
        )
        + "\n"
    )
    r = apply_monthly(m, citus_dsn, schema=s)
    assert (r.adds, r.changes, r.deletes, r.unknown_changes, r.adds_existing, r.rows_rejected) == (
        1,
        1,
        1,
        1,
        1,
        1,
    )
    rows = dict(
        fetch_all(citus_dsn, f"SELECT transaction_id::text, (price, town_city) FROM {s}.uk_price")
    )
    key = lambda i: f"00000000-0000-4000-8000-{i:012d}"
    assert set(rows) == {key(i) for i in (1, 2, 4, 5, 6)}
    assert rows[key(2)] == ("111111", "BRADFORD") and rows[key(1)] == ("100001", "LEEDS")
    # the rollup followed: D out, C moved to its new town, the existing A's row counted once
    assert rollup_off(citus_dsn, s) == 0
    assert fetch_all(
        citus_dsn,
        f"SELECT town_city, sales, price_sum FROM {s}.uk_price_rollup ORDER BY town_city",
    ) == [("BRADFORD", 1, 111_111), ("LEEDS", 4, 100_001 + 100_004 + 100_005 + 250_000)]
    assert fetch_all(citus_dsn, f"SELECT line_number, reason FROM {s}.uk_price_rejects") == [
        (6, "field count 3, expected 16")
    ]
