"""The four timing queries (the reference experiment's query and three analytic ones).

Used by the query-timing asset check, the main job's summary and `citus-pipeline bench
queries`, so every figure is measured the same way: each query run ``runs`` times, the
median and the 95th percentile kept.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, field

import psycopg

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


def queries_for_table(table: str, queries: dict[str, str] | None = None) -> dict[str, str]:
    """The same queries against another table with the same column names (e.g. the plain
    `uk_price_raw`). ``table`` is one of our own identifiers, never user input."""
    src = queries or UK_PRICE_QUERIES
    return {k: v.replace("FROM uk_price ", f"FROM {table} ") for k, v in src.items()}


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


def time_query(conn: psycopg.Connection, name: str, sql: str, runs: int = 5) -> QueryTiming:
    result = QueryTiming(name)
    for _ in range(runs):
        t0 = time.perf_counter()
        rows = conn.execute(sql).fetchall()
        result.seconds.append(time.perf_counter() - t0)
        result.rows = len(rows)
    return result


def time_queries(
    conn: psycopg.Connection, queries: dict[str, str] | None = None, runs: int = 5
) -> dict[str, QueryTiming]:
    return {n: time_query(conn, n, q, runs) for n, q in (queries or UK_PRICE_QUERIES).items()}


__all__ = [
    "REFERENCE_QUERY",
    "UK_PRICE_QUERIES",
    "QueryTiming",
    "percentile",
    "queries_for_table",
    "time_queries",
    "time_query",
]
