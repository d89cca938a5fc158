"""The loader against real PostgreSQL + Citus: exact counts, rejects, a URL source, files of
another shape.

Reruns and kill -9 are in test_load_rerun.py, publishing in test_load_publish.py, a worker
leader killed mid-load in test_load_failover.py.
"""

from __future__ import annotations

import csv
import threading
from collections import Counter
from pathlib import Path

import psycopg
import pytest
from uk_price_reads import fetch_all, rollup_off

from citus_pipeline.data import load_price_paid, publish_uk_price, rollup
from citus_pipeline.data.generate import generate_complete
from citus_pipeline.data.queries import UK_PRICE_QUERIES
from citus_pipeline.errors import FileShapeError

pytestmark = pytest.mark.citus
SAMPLE = Path(__file__).parents[1] / "data" / "pp-sample-1995.csv"


def test_real_sample_loads_exactly(citus_dsn, schema):
    r = load_price_paid(
        SAMPLE, citus_dsn, schema=schema, target="both", jobs=2, chunk_bytes=300_000
    )
    assert (r.rows_read, r.rows_loaded, r.rows_rejected, r.rows_duplicate) == (10_298, 10_298, 0, 0)
    with open(SAMPLE, encoding="utf-8", newline="") as f:
        rows = list(csv.reader(f))
    by_type = Counter(x[4] for x in rows)
    by_year = Counter(int(x[2][:4]) for x in rows)
    total = sum(int(x[1]) for x in rows)
    for table, ptype, date, price in (
        ("uk_price", "property_type::text", "date_of_transfer", "price"),
        ("uk_price_raw", "property_type", "date_of_transfer", "price::bigint"),
    ):
        got = dict(
            fetch_all(citus_dsn, f"SELECT {ptype}, count(*) FROM {schema}.{table} GROUP BY 1")
        )
        assert got == by_type
        got = dict(
            fetch_all(
                citus_dsn,
                f"SELECT extract(year FROM {date})::int, count(*) FROM {schema}.{table} GROUP BY 1",
            )
        )
        assert got == by_year
        assert fetch_all(citus_dsn, f"SELECT sum({price}) FROM {schema}.{table}")[0][0] == total
    assert fetch_all(citus_dsn, f"SELECT count(*) FROM {schema}.uk_price_rejects")[0][0] == 0
    # the real first record, typed
    rec = fetch_all(
        citus_dsn,
        f"SELECT price, date_of_transfer::text, postcode, property_type::text, saon, town_city "
        f"FROM {schema}.uk_price WHERE transaction_id = '5bbe9cb3-6332-4eb0-9cd3-8737cea4a65a'",
    )
    assert rec == [(42000, "1995-12-21", "NE4 9DN", "S", None, "NEWCASTLE UPON TYNE")]
    assert rollup_off(citus_dsn, schema) == 0
    # publish from the staged copy adds nothing; the typed table is what the file says
    assert publish_uk_price(citus_dsn, schema=schema).rows_published == 0
    assert rollup_off(citus_dsn, schema) == 0
    # the analytic questions answered from the rollup: what a scan of uk_price answers
    with psycopg.connect(citus_dsn) as conn:
        conn.execute(f"SET search_path = {schema}")
        for name, question in UK_PRICE_QUERIES.items():
            assert (
                conn.execute(rollup.QUERIES[name]).fetchall() == conn.execute(question).fetchall()
            ), name


def test_injected_bad_records_rejected_exactly(citus_dsn, schema, tmp_path):
    p = tmp_path / "bad.csv"
    g = generate_complete(p, 20_000, seed=4, bad=50, edge_cases=True, crlf=True)
    r = load_price_paid(
        p, citus_dsn, schema=schema, target="uk_price", jobs=2, chunk_bytes=256 << 10
    )
    assert (r.rows_read, r.rows_loaded, r.rows_rejected) == (20_050, 20_000, 50)
    assert r.transcoded_lines > 0
    got = {
        ln: (reason, raw)
        for ln, reason, raw in fetch_all(
            citus_dsn, f"SELECT line_number, reason, raw_record FROM {schema}.uk_price_rejects"
        )
    }
    assert {ln: reason for ln, (reason, _) in got.items()} == {
        b.line: b.reason for b in g.bad_records
    }
    lines = p.read_bytes().split(b"\r\n")
    assert all(raw == lines[ln - 1].decode() for ln, (_, raw) in got.items())
    assert fetch_all(citus_dsn, f"SELECT count(*) FROM {schema}.uk_price")[0][0] == 20_000
    # Windows-1252 names loaded as the characters they are
    names = {
        x
        for (x,) in fetch_all(
            citus_dsn, f"SELECT DISTINCT paon FROM {schema}.uk_price WHERE paon ~ '[^ -~]'"
        )
    }
    assert names and names <= {"CAFÉ", "NOËL COURT", "BRONTË HOUSE", "CHÂTEAU", "MÜNSTER LODGE"}


def test_url_source_with_dropped_connection(citus_dsn, schema, tmp_path, monkeypatch):
    import http.server

    body = SAMPLE.read_bytes()
    state = {"drops": 1}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            rng = self.headers.get("Range")
            start = int(rng.split("=")[1].split("-")[0]) if rng else 0
            part = body[start:]
            self.send_response(206 if rng else 200)
            if rng:
                self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
            self.send_header("Content-Length", str(len(part)))
            self.end_headers()
            if state["drops"]:
                state["drops"] -= 1
                self.wfile.write(part[: len(part) // 2])
                self.wfile.flush()
                self.connection.shutdown(2)
                return
            self.wfile.write(part)

        def log_message(self, *a):
            pass

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    monkeypatch.setenv("CITUS_PIPELINE_CACHE", str(tmp_path))
    from citus_pipeline.data import sources

    monkeypatch.setattr(sources, "DEFAULT_CACHE_DIR", tmp_path)
    try:
        url = f"http://127.0.0.1:{srv.server_address[1]}/pp-sample-1995.csv"
        r = load_price_paid(url, citus_dsn, schema=schema, target="uk_price", jobs=2)
    finally:
        srv.shutdown()
    assert (r.rows_loaded, r.rows_rejected) == (10_298, 0)
    assert state["drops"] == 0
    assert fetch_all(citus_dsn, f"SELECT DISTINCT source FROM {schema}.uk_price_load_ledger") == [
        (url,)
    ]


def test_wrong_layout_refused_or_rejected_never_loaded_wrong(citus_dsn, schema, tmp_path):
    rows = list(csv.reader(SAMPLE.read_text().splitlines()))[:50]

    def resave(r):  # a spreadsheet re-save: DD-MM-YYYY dates, 3 extra empty columns
        d = r[2]
        return r[:2] + [f"{d[8:10]}-{d[5:7]}-{d[0:4]} 00:00"] + r[3:] + ["", "", ""]

    header = ["Transaction unique identifier", "Price", "Date of Transfer"] + [
        f"c{i}" for i in range(13)
    ]
    hdr = tmp_path / "header.csv"
    hdr.write_text("\n".join(",".join(f'"{x}"' for x in r) for r in [header] + rows) + "\n")
    with pytest.raises(FileShapeError, match="header"):
        load_price_paid(hdr, citus_dsn, schema=schema, target="uk_price")
    bad = tmp_path / "resaved.csv"
    bad.write_text("\n".join(",".join(f'"{x}"' for x in resave(r)) for r in rows) + "\n")
    with pytest.raises(FileShapeError, match="field count 19"):
        load_price_paid(bad, citus_dsn, schema=schema, target="uk_price")
    # wrong-layout records inside an otherwise good file: rejected one by one
    mixed = tmp_path / "mixed.csv"
    dates = [r[:2] + [f"{r[2][8:10]}-{r[2][5:7]}-{r[2][0:4]} 00:00"] + r[3:] for r in rows[:5]]
    mixed.write_text(
        "\n".join(",".join(f'"{x}"' for x in r) for r in rows[5:] + dates + [resave(rows[0])])
        + "\n"
    )
    r = load_price_paid(mixed, citus_dsn, schema=schema, target="uk_price")
    assert (r.rows_loaded, r.rows_rejected) == (45, 6)
    reasons = [
        x
        for (x,) in fetch_all(
            citus_dsn, f"SELECT reason FROM {schema}.uk_price_rejects ORDER BY line_number"
        )
    ]
    assert reasons[:5] == [f"bad date '{d[2]}' (expected YYYY-MM-DD 00:00)" for d in dates]
    assert reasons[5] == "field count 19, expected 16"
