"""The four timing queries (the reference experiment's query and three analytic ones), the
ad-hoc questions no rollup answers, and how they are timed.

Used by the query-timing asset check, `citus-pipeline pipeline run`'s summary and
`citus-pipeline bench queries`, so every figure is measured the same way: each query run
``runs`` times, the median and the 95th percentile kept.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, field

import psycopg
import psycopg.sql

REFERENCE_QUERY = "reference_semi_detached_count"

# Queries on `uk_price` (the typed, distributed table). Names are the metadata keys.
UK_PRICE_QUERIES: dict[str, str] = {
    REFERENCE_QUERY: "SELECT count(*) FROM uk_price WHERE property_type = 'S'",
    "avg_price_per_year": (
        "SELECT extract(year FROM date_of_transfer)::int AS year, round(avg(price)) "
        "FROM uk_price GROUP BY 1 ORDER BY 1"
    ),
    "avg_price_per_year_london": (
        "SELECT extract(year FROM date_of_transfer)::int AS year, round(avg(price)) "
        "FROM uk_price WHERE town_city = 'LONDON' GROUP BY 1 ORDER BY 1"
    ),
    "top_100_districts_since_2020": (
        "SELECT district, round(avg(price)) AS avg_price, count(*) "
        "FROM uk_price WHERE date_of_transfer >= DATE '2020-01-01' "
        "GROUP BY district ORDER BY avg_price DESC LIMIT 100"
    ),
}

# Questions no key of uk_price_rollup answers (a postcode district, a property type over a
# date range, a county's new builds, a join to a small reference table): what a user asks
# next, answered from the table's rows only. `bench seed` asks them of chDB and DuckDB too.
PROPERTY_TYPE_NAMES = "uk_property_type"  # (code, name): the join's small reference table
PROPERTY_TYPE_NAME_ROWS = (
    ("D", "Detached"),
    ("S", "Semi-detached"),
    ("T", "Terraced"),
    ("F", "Flat/maisonette"),
    ("O", "Other"),
)
_PER_YEAR = (
    "SELECT extract(year FROM date_of_transfer)::int AS year, count(*) AS sales, "
    "round(avg(price)) AS avg_price FROM uk_price WHERE {where} GROUP BY 1 ORDER BY 1"
)
ADHOC_QUERIES: dict[str, str] = {
    "postcode_district_se12_per_year": _PER_YEAR.format(where="postcode LIKE 'SE12 %'"),
    "flats_per_year_2010_2014": _PER_YEAR.format(
        where="property_type = 'F' AND date_of_transfer BETWEEN DATE '2010-01-01' "
        "AND DATE '2014-12-31'"
    ),
    "west_yorkshire_new_builds_per_year": _PER_YEAR.format(
        where="county = 'WEST YORKSHIRE' AND old_new = 'Y'"
    ),
    "sales_by_type_name_since_2020": (
        "SELECT t.name, count(*) AS sales, round(avg(u.price)) AS avg_price "
        f"FROM uk_price u JOIN {PROPERTY_TYPE_NAMES} t ON t.code = u.property_type "
        "WHERE u.date_of_transfer >= DATE '2020-01-01' GROUP BY t.name ORDER BY t.name"
    ),
}
# Every question asked of uk_price's rows: the four timing queries and the ad-hoc ones.
TABLE_QUERIES: dict[str, str] = {**UK_PRICE_QUERIES, **ADHOC_QUERIES}


# The same questions on the reference deployment's schema (`uk_price_raw` and its
# distributed copy in the query benchmark): text price, timestamp date, "Town/City".
REFERENCE_SCHEMA_QUERIES: dict[str, str] = {
    REFERENCE_QUERY: "SELECT count(*) FROM {table} WHERE property_type = 'S'",
    "avg_price_per_year": (
        "SELECT extract(year FROM date_of_transfer)::int AS year, round(avg(price::bigint)) "
        "FROM {table} GROUP BY 1 ORDER BY 1"
    ),
    "avg_price_per_year_london": (
        "SELECT extract(year FROM date_of_transfer)::int AS year, round(avg(price::bigint)) "
        "FROM {table} WHERE \"Town/City\" = 'LONDON' GROUP BY 1 ORDER BY 1"
    ),
    "top_100_districts_since_2020": (
        "SELECT district, round(avg(price::bigint)) AS avg_price, count(*) "
        "FROM {table} WHERE date_of_transfer >= TIMESTAMP '2020-01-01' "
        "GROUP BY district ORDER BY avg_price DESC LIMIT 100"
    ),
}


def reference_schema_queries(table: str) -> dict[str, psycopg.sql.Composed]:
    """The reference-schema queries on ``table`` ("schema.name" or "name"), quoted safely."""
    ident = psycopg.sql.Identifier(*table.split("."))
    return {
        k: psycopg.sql.SQL(v.replace("{table}", "{t}")).format(t=ident)
        for k, v in REFERENCE_SCHEMA_QUERIES.items()
    }


def answer_rows(rows) -> list[list]:
    """A query's rows in a form every engine's answer compares in: numbers as floats (a rounded
    average is numeric here, a double in DuckDB, text in a CSV), the rest as text: equal
    answers compare equal with ==."""

    def cell(v):
        if v is None or isinstance(v, bool):
            return v
        try:
            return float(v)
        except (TypeError, ValueError):
            return str(v)

    return [[cell(v) for v in row] for row in rows]


@dataclass
class QueryTiming:
    name: str
    seconds: list[float] = field(default_factory=list)
    rows: int = 0

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)

    @property
    def p95(self) -> float:
        return percentile(self.seconds, 95)


def percentile(values: list[float], pct: float) -> float:
    """Linear-interpolated percentile (numpy's default), without numpy."""
    s = sorted(values)
    if not s:
        raise ValueError("no values")
    k = (len(s) - 1) * pct / 100
    lo = int(k)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def time_query(conn: psycopg.Connection, name: str, sql, runs: int = 5) -> QueryTiming:
    result = QueryTiming(name)
    for _ in range(runs):
        t0 = time.perf_counter()
        rows = conn.execute(sql).fetchall()
        result.seconds.append(time.perf_counter() - t0)
        result.rows = len(rows)
    return result


def time_queries(
    conn: psycopg.Connection, queries: dict | None = None, runs: int = 5
) -> dict[str, QueryTiming]:
    return {n: time_query(conn, n, q, runs) for n, q in (queries or UK_PRICE_QUERIES).items()}


__all__ = [
    "ADHOC_QUERIES",
    "PROPERTY_TYPE_NAMES",
    "PROPERTY_TYPE_NAME_ROWS",
    "REFERENCE_QUERY",
    "REFERENCE_SCHEMA_QUERIES",
    "TABLE_QUERIES",
    "UK_PRICE_QUERIES",
    "QueryTiming",
    "answer_rows",
    "percentile",
    "reference_schema_queries",
    "time_queries",
    "time_query",
]
