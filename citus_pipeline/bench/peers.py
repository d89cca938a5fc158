"""`bench seed --section peers`: the timing and ad-hoc queries on the analytic engines a user
would pick instead, loaded from the same file, next to the cluster.

chDB (ClickHouse in-process) loads the file into a MergeTree table, DuckDB into its own
database file; each in a child process of its own (its peak RSS and CPU are its own, and the
engine's threads do not share this process). Each query runs once to warm up, then `runs`
times; the median is kept. Both engines use every core, as the cluster does.

Run as ``python -m citus_pipeline.bench.peers ENGINE FILE WORKDIR RUNS``: prints one JSON
object (load seconds, storage MB, each query's timings and answer rows).
"""

from __future__ import annotations

import csv
import io
import json
import statistics
import sys
import time
from pathlib import Path

from ..data.format import COLUMNS
from ..data.queries import (
    PROPERTY_TYPE_NAME_ROWS,
    PROPERTY_TYPE_NAMES,
    REFERENCE_QUERY,
    TABLE_QUERIES,
    answer_rows,
)

ENGINES = ("chdb", "duckdb")

# The file's 16 columns (data.format) read as text; each engine types them while loading,
# as the loader does.

# The same questions as data.queries.TABLE_QUERIES, in each engine's dialect and column names.
# ClickHouse rounds a float's .5 to even: the average goes through a Decimal, which it rounds
# half away from zero as PostgreSQL and DuckDB do, so every engine's answer is the same.
_CHDB_PER_YEAR = (
    "SELECT toYear(date_of_transfer) AS year, count() AS sales, round(toDecimal64(avg(price), 4)) AS avg_price "
    "FROM bench.uk_price WHERE {where} GROUP BY year ORDER BY year"
)
CHDB_QUERIES = {
    REFERENCE_QUERY: "SELECT count() FROM bench.uk_price WHERE property_type = 'S'",
    "avg_price_per_year": (
        "SELECT toYear(date_of_transfer) AS year, round(toDecimal64(avg(price), 4)) FROM bench.uk_price "
        "GROUP BY year ORDER BY year"
    ),
    "avg_price_per_year_london": (
        "SELECT toYear(date_of_transfer) AS year, round(toDecimal64(avg(price), 4)) FROM bench.uk_price "
        "WHERE town_city = 'LONDON' GROUP BY year ORDER BY year"
    ),
    "top_100_districts_since_2020": (
        "SELECT district, round(toDecimal64(avg(price), 4)) AS avg_price, count() FROM bench.uk_price "
        "WHERE date_of_transfer >= '2020-01-01' GROUP BY district "
        "ORDER BY avg_price DESC LIMIT 100"
    ),
    "postcode_district_se12_per_year": _CHDB_PER_YEAR.format(where="postcode LIKE 'SE12 %'"),
    "flats_per_year_2010_2014": _CHDB_PER_YEAR.format(
        where="property_type = 'F' AND date_of_transfer BETWEEN '2010-01-01' AND '2014-12-31'"
    ),
    "west_yorkshire_new_builds_per_year": _CHDB_PER_YEAR.format(
        where="county = 'WEST YORKSHIRE' AND old_new = 'Y'"
    ),
    "sales_by_type_name_since_2020": (
        "SELECT t.name, count() AS sales, round(toDecimal64(avg(u.price), 4)) AS avg_price "
        "FROM bench.uk_price u JOIN bench.uk_property_type t ON t.code = u.property_type "
        "WHERE u.date_of_transfer >= '2020-01-01' GROUP BY t.name ORDER BY t.name"
    ),
}
# DuckDB speaks PostgreSQL's dialect for these: the cluster's queries as they are.
DUCKDB_QUERIES = dict(TABLE_QUERIES)
_NAME_VALUES = ", ".join(f"('{code}', '{name}')" for code, name in PROPERTY_TYPE_NAME_ROWS)

CHDB_TABLE = """
CREATE TABLE bench.uk_price (
    transaction_id UUID,
    price UInt32,
    date_of_transfer Date,
    property_type LowCardinality(String),
    old_new LowCardinality(String),
    duration LowCardinality(String),
    ppd_category_type LowCardinality(String),
    postcode LowCardinality(String),
    paon String,
    saon String,
    street LowCardinality(String),
    locality LowCardinality(String),
    town_city LowCardinality(String),
    district LowCardinality(String),
    county LowCardinality(String)
) ENGINE = MergeTree ORDER BY (district, date_of_transfer)
"""
CHDB_INSERT = """
INSERT INTO bench.uk_price
SELECT toUUID(trim(BOTH '{{}}' FROM transaction_id)), toUInt32(price),
       toDate(substring(date_of_transfer, 1, 10)),
       property_type, old_new, duration, ppd_category_type, postcode, paon, saon, street,
       locality, town_city, district, county
FROM file('{path}', 'CSV', '{structure}')
"""
DUCKDB_LOAD = """
CREATE TABLE uk_price AS
SELECT CAST(trim(transaction_id, '{{}}') AS UUID) AS transaction_id,
       CAST(price AS INTEGER) AS price,
       CAST(substr(date_of_transfer, 1, 10) AS DATE) AS date_of_transfer, property_type, old_new, duration,
       ppd_category_type, nullif(postcode, '') AS postcode, nullif(paon, '') AS paon,
       nullif(saon, '') AS saon, nullif(street, '') AS street, nullif(locality, '') AS locality,
       nullif(town_city, '') AS town_city, nullif(district, '') AS district,
       nullif(county, '') AS county
FROM read_csv('{path}', header = false, quote = '"', escape = '"', all_varchar = true,
              names = [{names}])
"""


def _timed(run, runs: int) -> list[float]:
    run()  # warm: what a user sees from the second call on
    out = []
    for _ in range(runs):
        t0 = time.perf_counter()
        run()
        out.append(time.perf_counter() - t0)
    return out


def _dir_mb(path: Path) -> float:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 1e6


def run_chdb(path: Path, work: Path, runs: int) -> dict:
    from chdb import session

    store = work / "chdb"
    s = session.Session(str(store))
    s.query("DROP DATABASE IF EXISTS bench")
    s.query("CREATE DATABASE bench")
    s.query(CHDB_TABLE)
    s.query(
        f"CREATE TABLE bench.{PROPERTY_TYPE_NAMES} (code String, name String) "
        "ENGINE = MergeTree ORDER BY code"
    )
    s.query(f"INSERT INTO bench.{PROPERTY_TYPE_NAMES} VALUES {_NAME_VALUES}")
    structure = ", ".join(f"{c} String" for c in COLUMNS)
    t0 = time.perf_counter()
    s.query(CHDB_INSERT.format(path=path, structure=structure))
    s.query("OPTIMIZE TABLE bench.uk_price FINAL")  # merged parts: a settled table
    load_s = time.perf_counter() - t0
    rows = int(str(s.query("SELECT count() FROM bench.uk_price", "CSV")).strip())
    timings = {n: _timed(lambda q=q: s.query(q, "CSV"), runs) for n, q in CHDB_QUERIES.items()}
    answers = {
        n: answer_rows(csv.reader(io.StringIO(str(s.query(q, "CSV")))))
        for n, q in CHDB_QUERIES.items()
    }
    mb = _dir_mb(store)
    s.close()
    return {
        "load_s": load_s,
        "rows": rows,
        "storage_mb": mb,
        "timings": timings,
        "answers": answers,
    }


def run_duckdb(path: Path, work: Path, runs: int) -> dict:
    import duckdb

    db = work / "duckdb" / "uk_price.duckdb"
    db.parent.mkdir(parents=True, exist_ok=True)
    db.unlink(missing_ok=True)
    con = duckdb.connect(str(db))
    names = ", ".join(f"'{c}'" for c in COLUMNS)
    t0 = time.perf_counter()
    con.execute(DUCKDB_LOAD.format(path=path, names=names))
    con.execute("CHECKPOINT")
    con.execute(f"CREATE TABLE {PROPERTY_TYPE_NAMES} (code VARCHAR, name VARCHAR)")
    con.execute(f"INSERT INTO {PROPERTY_TYPE_NAMES} VALUES {_NAME_VALUES}")
    load_s = time.perf_counter() - t0
    (rows,) = con.execute("SELECT count(*) FROM uk_price").fetchone()
    timings = {
        n: _timed(lambda q=q: con.execute(q).fetchall(), runs) for n, q in DUCKDB_QUERIES.items()
    }
    answers = {n: answer_rows(con.execute(q).fetchall()) for n, q in DUCKDB_QUERIES.items()}
    con.close()
    return {
        "load_s": load_s,
        "rows": rows,
        "storage_mb": _dir_mb(db.parent),
        "timings": timings,
        "answers": answers,
    }


def main(argv: list[str]) -> None:
    engine, path, work, runs = argv[0], Path(argv[1]), Path(argv[2]), int(argv[3])
    work.mkdir(parents=True, exist_ok=True)
    run = {"chdb": run_chdb, "duckdb": run_duckdb}[engine]
    out = run(path, work, runs)
    out["medians"] = {n: statistics.median(t) for n, t in out["timings"].items()}
    print(json.dumps(out))


if __name__ == "__main__":
    main(sys.argv[1:])
