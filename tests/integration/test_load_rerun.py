"""Loading again against real Citus: a rerun adds nothing, a failed or killed first load and
a resume with another chunk size end equal to a clean load, keys deferred or not."""

from __future__ import annotations

import contextlib
import csv
import os
import re
import signal
import subprocess
import sys

import psycopg
import pytest
from uk_price_reads import (
    checksum,
    fetch_all,
    index_oid,
    indexes_per_shard,
    property_type_index,
    rollup_off,
)

from citus_pipeline.data import drop_all, load_price_paid, rollup
from citus_pipeline.data import schema as sch
from citus_pipeline.data.generate import generate_complete
from citus_pipeline.errors import WaitTimeout
from citus_pipeline.waiting import until

pytestmark = pytest.mark.citus


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
    rejects = fetch_all(
        citus_dsn,
        f"SELECT array_agg(line_number ORDER BY line_number) FROM {schema}.uk_price_rejects",
    )
    # what a kill -9 after the first chunk leaves: that chunk's rows, rejects and ledger entry
    (first_lines,) = fetch_all(
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
    (partial,) = fetch_all(citus_dsn, f"SELECT count(*) FROM {schema}.uk_price")[0]
    assert 0 < partial < 20_000
    r = load_price_paid(p, citus_dsn, schema=schema, target="uk_price", jobs=2, chunk_bytes=1 << 20)
    assert checksum(citus_dsn, schema) == full
    assert (
        fetch_all(
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

        def committed() -> int:
            try:
                return fetch_all(citus_dsn, f"SELECT count(*) FROM {schema}.uk_price_load_ledger")[
                    0
                ][0]
            except psycopg.errors.UndefinedTable:  # the loader has not made its ledger yet
                return 0

        # three chunks in, or the loader finished (the assertion below tells which); a loader
        # slower than that is killed wherever it got to
        with contextlib.suppress(WaitTimeout):
            until(
                committed,
                120,
                0.05,
                "the loader to commit three chunks",
                done=lambda n: n >= 3 or proc.poll() is not None,
            )
        assert proc.poll() is None, "the loader finished before it could be killed"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        partial = fetch_all(citus_dsn, f"SELECT count(*) FROM {schema}.uk_price")[0][0]
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
        assert fetch_all(
            citus_dsn,
            f"SELECT array_agg(line_number ORDER BY line_number) FROM {schema}.uk_price_rejects",
        ) == fetch_all(
            citus_dsn,
            f"SELECT array_agg(line_number ORDER BY line_number) FROM {clean}.uk_price_rejects",
        )
    finally:
        drop_all(citus_dsn, schema=clean)
