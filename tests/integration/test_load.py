"""The loader against real PostgreSQL + Citus: exact counts, rejects, reruns, kill -9, URL."""

from __future__ import annotations

import csv
import os
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from pathlib import Path

import psycopg
import pytest
from polling import wait_for

from citus_pipeline.data import drop_all, load_price_paid, publish, publish_uk_price, rollup
from citus_pipeline.data import schema as sch
from citus_pipeline.data.generate import generate_complete
from citus_pipeline.data.load import LayoutError
from citus_pipeline.data.queries import UK_PRICE_QUERIES

pytestmark = pytest.mark.citus
SAMPLE = Path(__file__).parents[1] / "data" / "pp-sample-1995.csv"


@pytest.fixture
def schema(citus_dsn):
    name = "t_load_" + uuid.uuid4().hex[:8]
    yield name
    drop_all(citus_dsn, schema=name)


def one(dsn, query, *args):
    with psycopg.connect(dsn) as c:
        return c.execute(query, args).fetchall()


def checksum(dsn, schema, table="uk_price"):
    with psycopg.connect(dsn) as conn:
        return sch.checksum(conn, schema, table)


def indexes_per_shard(dsn, schema) -> set[int]:
    """How many indexes each placement of uk_price has (2: the primary key, property type)."""
    return {
        int(n)
        for (n,) in one(
            dsn,
            "SELECT result FROM run_command_on_placements(%s, "
            "$$SELECT count(*) FROM pg_index WHERE indrelid = '%%s'::regclass$$)",
            f"{schema}.uk_price",
        )
    }


def index_oid(dsn, schema, name: str) -> int | None:
    """The oid of one of uk_price's indexes on the coordinator, None when absent."""
    (oid,) = one(dsn, "SELECT to_regclass(%s)::oid", f"{schema}.{name}")[0]
    return oid


def property_type_index(dsn, schema) -> int | None:
    return index_oid(dsn, schema, sch.PROPERTY_TYPE_INDEX)


def rollup_off(dsn, schema) -> int:
    """Rollup keys not in step with uk_price (0 when every write path kept it exact)."""
    with psycopg.connect(dsn) as conn:
        return rollup.mismatches(conn, schema)


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
        got = dict(one(citus_dsn, f"SELECT {ptype}, count(*) FROM {schema}.{table} GROUP BY 1"))
        assert got == by_type
        got = dict(
            one(
                citus_dsn,
                f"SELECT extract(year FROM {date})::int, count(*) FROM {schema}.{table} GROUP BY 1",
            )
        )
        assert got == by_year
        assert one(citus_dsn, f"SELECT sum({price}) FROM {schema}.{table}")[0][0] == total
    assert one(citus_dsn, f"SELECT count(*) FROM {schema}.uk_price_rejects")[0][0] == 0
    # the real first record, typed
    rec = one(
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


def test_publish_adds_each_staged_row_once_and_keeps_the_rollup_exact(citus_dsn, schema, tmp_path):
    p = tmp_path / "a.csv"
    generate_complete(p, 20_000, seed=5)
    load_price_paid(p, citus_dsn, schema=schema, target="uk_price_raw", jobs=2)
    first = publish_uk_price(citus_dsn, schema=schema)
    assert (first.rows_published, first.rows_in_uk_price) == (20_000, 20_000)
    assert rollup_off(citus_dsn, schema) == 0
    assert indexes_per_shard(citus_dsn, schema) == {2}  # built after the rows went in
    # a deferred build that never happened (a kill, a failover during it): the next publish
    # builds the index before it writes
    with psycopg.connect(citus_dsn, autocommit=True) as conn:
        conn.execute(f"DROP INDEX {schema}.uk_price_property_type")
    again = publish_uk_price(citus_dsn, schema=schema)
    assert indexes_per_shard(citus_dsn, schema) == {2}
    assert (again.rows_published, again.rows_in_uk_price) == (0, 20_000)
    assert rollup_off(citus_dsn, schema) == 0


def test_publish_into_an_empty_table_that_a_writer_fills_meanwhile_adds_the_rest(
    citus_dsn, schema, tmp_path
):
    """The first publish goes without ON CONFLICT; a row committed by another writer after
    it found uk_price empty fails that statement, and the rerun with ON CONFLICT adds the
    rest: nothing doubled, nothing lost."""
    p = tmp_path / "a.csv"
    generate_complete(p, 20_000, seed=6)
    load_price_paid(p, citus_dsn, schema=schema, target="uk_price_raw", jobs=2)
    writer = psycopg.connect(citus_dsn)
    try:
        # one staged row, typed, inserted by another session and not yet committed
        writer.execute(
            sch.q(publish.PUBLISH_INTO_EMPTY, schema).as_string(writer)
            + " ORDER BY transaction_unique_identifier LIMIT 1"
        )
        result: list = []
        t = threading.Thread(
            target=lambda: result.append(publish_uk_price(citus_dsn, schema=schema))
        )
        t.start()
        # the publish found no committed row and now waits to drop the index behind the writer
        deadline = time.monotonic() + 30
        while not one(
            citus_dsn,
            "SELECT count(*) FROM pg_stat_activity "
            "WHERE wait_event_type = 'Lock' AND query LIKE 'DROP INDEX%%'",
        )[0][0]:
            assert time.monotonic() < deadline and t.is_alive(), "publish never waited"
            time.sleep(0.1)
        writer.commit()
        t.join(120)
    finally:
        writer.close()
    assert (result[0].rows_published, result[0].rows_in_uk_price) == (19_999, 20_000)
    missing = (
        f"SELECT count(*) FROM {schema}.uk_price_raw r LEFT JOIN {schema}.uk_price u "
        "ON u.transaction_id = r.transaction_unique_identifier WHERE u.transaction_id IS NULL"
    )
    assert one(citus_dsn, missing)[0][0] == 0
    assert rollup_off(citus_dsn, schema) == 0
    assert indexes_per_shard(citus_dsn, schema) == {2}


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
        for ln, reason, raw in one(
            citus_dsn, f"SELECT line_number, reason, raw_record FROM {schema}.uk_price_rejects"
        )
    }
    assert {ln: reason for ln, (reason, _) in got.items()} == {
        b.line: b.reason for b in g.bad_records
    }
    lines = p.read_bytes().split(b"\r\n")
    assert all(raw == lines[ln - 1].decode() for ln, (_, raw) in got.items())
    assert one(citus_dsn, f"SELECT count(*) FROM {schema}.uk_price")[0][0] == 20_000
    # Windows-1252 names loaded as the characters they are
    names = {
        x
        for (x,) in one(
            citus_dsn, f"SELECT DISTINCT paon FROM {schema}.uk_price WHERE paon ~ '[^ -~]'"
        )
    }
    assert names and names <= {"CAFÉ", "NOËL COURT", "BRONTË HOUSE", "CHÂTEAU", "MÜNSTER LODGE"}


def test_loading_twice_adds_nothing(citus_dsn, schema, tmp_path):
    p = tmp_path / "a.csv"
    generate_complete(p, 30_000, seed=8)
    first = load_price_paid(
        p, citus_dsn, schema=schema, target="uk_price", jobs=2, chunk_bytes=512 << 10
    )
    before = checksum(citus_dsn, schema)
    again = load_price_paid(
        p, citus_dsn, schema=schema, target="uk_price", jobs=2, chunk_bytes=512 << 10
    )
    assert first.rows_loaded == 30_000 and again.rows_loaded == 0
    # the first load into the empty table built the property-type index after its rows, on
    # every shard; the second, into a table with rows, kept it as it was
    assert indexes_per_shard(citus_dsn, schema) == {2}
    built = property_type_index(citus_dsn, schema)
    assert again.rows_duplicate == 30_000 and again.chunks_skipped == again.chunks
    # the same records under another name and another chunking: duplicates, not errors
    copy = tmp_path / "copy.csv"
    copy.write_bytes(p.read_bytes() + b"")
    other = load_price_paid(
        copy, citus_dsn, schema=schema, target="uk_price", jobs=2, chunk_bytes=300 << 10
    )
    assert other.rows_loaded == 0 and other.rows_duplicate == 30_000
    assert property_type_index(citus_dsn, schema) == built
    assert checksum(citus_dsn, schema) == before == (30_000, before[1])
    assert rollup_off(citus_dsn, schema) == 0


def test_a_first_load_that_fails_builds_its_deferred_index_before_raising(
    citus_dsn, schema, tmp_path
):
    p = tmp_path / "a.csv"
    generate_complete(p, 30_000, seed=9)
    sch.ensure_schema(citus_dsn, schema=schema)
    # a rule the loader does not know: the chunks with a dear sale fail in the database
    with psycopg.connect(citus_dsn, autocommit=True) as conn:
        conn.execute(f"ALTER TABLE {schema}.uk_price ADD CONSTRAINT cheap CHECK (price < 400000)")
    with pytest.raises(psycopg.Error, match='violates check constraint "cheap'):
        load_price_paid(
            p, citus_dsn, schema=schema, target="uk_price", jobs=2, chunk_bytes=256 << 10
        )
    assert indexes_per_shard(citus_dsn, schema) == {2}


def test_a_first_load_stores_each_id_once_though_its_key_was_deferred(citus_dsn, schema, tmp_path):
    """The primary key is built after a first load: ids the file holds twice (the same
    records again further down, in other chunks and in the same chunk) are stored once."""
    p = tmp_path / "a.csv"
    generate_complete(p, 20_000, seed=13)
    lines = p.read_bytes().splitlines(keepends=True)
    twice = tmp_path / "twice.csv"
    twice.write_bytes(b"".join(lines[:10_000] + lines[:50] + lines[10_000:] + lines[:2_950]))
    r = load_price_paid(
        twice, citus_dsn, schema=schema, target="uk_price", jobs=2, chunk_bytes=256 << 10
    )
    assert (r.rows_read, r.rows_loaded, r.rows_duplicate, r.rows_rejected) == (
        23_000,
        20_000,
        3_000,
        0,
    )
    assert indexes_per_shard(citus_dsn, schema) == {2}
    assert index_oid(citus_dsn, schema, sch.PRIMARY_KEY) is not None
    assert rollup_off(citus_dsn, schema) == 0
    clean = schema + "_clean"
    try:
        load_price_paid(p, citus_dsn, schema=clean, target="uk_price", jobs=2)
        assert checksum(citus_dsn, schema) == checksum(citus_dsn, clean)
    finally:
        drop_all(citus_dsn, schema=clean)


def test_resume_with_another_chunk_size_loses_nothing(citus_dsn, schema, tmp_path):
    """A load that committed only its first small chunk, resumed with bigger chunks: the
    first big chunk starts at an offset the ledger has, but covers more rows than that entry."""
    p = tmp_path / "a.csv"
    generate_complete(p, 20_000, seed=21, bad=5)
    load_price_paid(p, citus_dsn, schema=schema, target="uk_price", jobs=2, chunk_bytes=128 << 10)
    full = checksum(citus_dsn, schema)
    rejects = one(
        citus_dsn,
        f"SELECT array_agg(line_number ORDER BY line_number) FROM {schema}.uk_price_rejects",
    )
    # what a kill -9 after the first chunk leaves: that chunk's rows, rejects and ledger entry
    (first_lines,) = one(
        citus_dsn, f"SELECT rows_read FROM {schema}.uk_price_load_ledger WHERE chunk_offset = 0"
    )[0]
    with open(p, newline="") as f:
        kept = [
            row[0][1:-1]
            for _, row in zip(range(first_lines), csv.reader(f))
            if re.fullmatch(r"\{[0-9A-Fa-f-]{36}\}", row[0])
        ]
    with psycopg.connect(citus_dsn, autocommit=True) as conn:
        conn.execute(
            f"DELETE FROM {schema}.uk_price WHERE NOT (transaction_id::text = ANY(%s))",
            ([k.lower() for k in kept],),
        )
        conn.execute(
            f"DELETE FROM {schema}.uk_price_rejects WHERE line_number > %s", (first_lines,)
        )
        conn.execute(f"DELETE FROM {schema}.uk_price_load_ledger WHERE chunk_offset > 0")
        rollup.rebuild(conn, schema)  # as the killed load's transactions would have left it
    (partial,) = one(citus_dsn, f"SELECT count(*) FROM {schema}.uk_price")[0]
    assert 0 < partial < 20_000
    r = load_price_paid(p, citus_dsn, schema=schema, target="uk_price", jobs=2, chunk_bytes=1 << 20)
    assert checksum(citus_dsn, schema) == full
    assert (
        one(
            citus_dsn,
            f"SELECT array_agg(line_number ORDER BY line_number) FROM {schema}.uk_price_rejects",
        )
        == rejects
    )
    assert (r.rows_read, r.rows_loaded, r.rows_duplicate) == (20_005, 20_000 - partial, partial)
    # the ON CONFLICT path counted only the rows it really inserted
    assert rollup_off(citus_dsn, schema) == 0


def test_kill_9_midway_then_rerun_equals_clean_load(citus_dsn, schema, tmp_path):
    p = tmp_path / "big.csv"
    generate_complete(p, 120_000, seed=12, bad=20)
    clean = schema + "_clean"
    try:
        load_price_paid(p, citus_dsn, schema=clean, target="uk_price", jobs=2, chunk_bytes=1 << 20)
        cmd = [
            sys.executable,
            "-m",
            "citus_pipeline.cli",
            "data",
            "load",
            str(p),
            "--dsn",
            citus_dsn,
            "--schema",
            schema,
            "--jobs",
            "2",
            "--chunk-mb",
            "1",
        ]
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 120
        committed = 0
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                committed = one(citus_dsn, f"SELECT count(*) FROM {schema}.uk_price_load_ledger")[
                    0
                ][0]
            except psycopg.errors.UndefinedTable:
                committed = 0
            if committed >= 3:
                break
            time.sleep(0.05)
        assert proc.poll() is None, "the loader finished before it could be killed"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        partial = one(citus_dsn, f"SELECT count(*) FROM {schema}.uk_price")[0][0]
        assert 0 < partial < 120_000
        # killed during a first load: its deferred indexes were not built yet...
        assert property_type_index(citus_dsn, schema) is None
        assert index_oid(citus_dsn, schema, sch.PRIMARY_KEY) is None
        r = load_price_paid(
            p, citus_dsn, schema=schema, target="uk_price", jobs=2, chunk_bytes=1 << 20
        )
        assert r.chunks_skipped >= 3 and r.rows_loaded == 120_000 - partial
        assert checksum(citus_dsn, schema) == checksum(citus_dsn, clean)
        assert rollup_off(citus_dsn, schema) == 0
        assert indexes_per_shard(citus_dsn, schema) == {2}  # ...the rerun's schema step did
        assert checksum(citus_dsn, schema, "uk_price_rejects")[0] == 20
        assert one(
            citus_dsn,
            f"SELECT array_agg(line_number ORDER BY line_number) FROM {schema}.uk_price_rejects",
        ) == one(
            citus_dsn,
            f"SELECT array_agg(line_number ORDER BY line_number) FROM {clean}.uk_price_rejects",
        )
    finally:
        drop_all(citus_dsn, schema=clean)


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
    assert one(citus_dsn, f"SELECT DISTINCT source FROM {schema}.uk_price_load_ledger") == [(url,)]


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
    with pytest.raises(LayoutError, match="header"):
        load_price_paid(hdr, citus_dsn, schema=schema, target="uk_price")
    bad = tmp_path / "resaved.csv"
    bad.write_text("\n".join(",".join(f'"{x}"' for x in resave(r)) for r in rows) + "\n")
    with pytest.raises(LayoutError, match="field count 19"):
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
        for (x,) in one(
            citus_dsn, f"SELECT reason FROM {schema}.uk_price_rejects ORDER BY line_number"
        )
    ]
    assert reasons[:5] == [f"bad date '{d[2]}' (expected YYYY-MM-DD 00:00)" for d in dates]
    assert reasons[5] == "field count 19, expected 16"


def kill_running_leader(cluster, group: int) -> None:
    """SIGKILL the group leader's postmaster once it has one: right after an earlier kill,
    Patroni still names the old leader until it has restarted its PostgreSQL."""

    def leader_with_postmaster():
        leader = cluster.status(with_shards=False).leader(group)
        return (
            leader
            if leader and cluster.postmaster_pid(cluster.member_by_name(leader.name))
            else None
        )

    leader = wait_for(leader_with_postmaster, lambda m: m is not None, 120, every=0.2)
    cluster.kill_postmaster(leader.name)


@pytest.mark.destructive
@pytest.mark.cluster
def test_kill_worker_leader_midload_then_rerun_equals_clean(fresh_cluster, tmp_path):
    cluster = fresh_cluster()
    dsn = cluster.coordinator_dsn()
    p = tmp_path / "big.csv"
    generate_complete(p, 150_000, seed=21)
    result: dict = {}
    # The load pauses after its second committed chunk until the leader is killed: the kill
    # lands mid-load whatever the machine's speed (150,000 rows take about a second).
    paused, killed = threading.Event(), threading.Event()
    chunks_done = []

    def pause_after_two(event) -> None:
        chunks_done.append(event)
        if len(chunks_done) == 2:
            paused.set()
            killed.wait(120)

    def run():
        try:
            result["report"] = load_price_paid(
                p,
                dsn,
                schema="killed",
                target="uk_price",
                jobs=2,
                chunk_bytes=1 << 20,
                progress=pause_after_two,
            )
        except Exception as err:  # noqa: BLE001 - asserted below
            result["error"] = err

    t = threading.Thread(target=run)
    t.start()
    assert paused.wait(120), "the load never committed two chunks"
    kill_running_leader(cluster, 1)
    killed.set()
    t.join(600)
    # Every chunk after the kill writes to the dead group: the load waits for Patroni and
    # retries them (a fault costs seconds), and completes.
    assert "error" not in result, result.get("error")
    assert result["report"].retries >= 1
    assert result["report"].rows_loaded + result["report"].rows_duplicate == 150_000
    # A re-run completes the table exactly, even one that starts while a worker group's
    # leader is down (its schema DDL must wait, not fail).
    kill_running_leader(cluster, 1)
    load_price_paid(p, dsn, schema="killed", target="uk_price", jobs=2, chunk_bytes=1 << 20)
    load_price_paid(p, dsn, schema="clean", target="uk_price", jobs=2, chunk_bytes=1 << 20)
    assert checksum(dsn, "killed") == checksum(dsn, "clean")
    assert checksum(dsn, "killed")[0] == 150_000
