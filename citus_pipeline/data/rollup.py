"""`uk_price_rollup`: sales (rows) and price sums of uk_price per (year, property type, district,
town), kept exact by every write path of the project, in the same transaction as the write.

The four analytic questions (the reference query, average price per year, per year in
London, the most expensive districts since 2020) are sums over it: a few thousand rows on the
coordinator instead of a scan of every row on the workers. The write paths keep it in step:

- the loader adds each chunk's counts (computed from the parsed rows, or from the rows the
  ON CONFLICT path really inserted) in the chunk's transaction;
- publish recomputes it from uk_price in the publish transaction;
- the monthly apply subtracts the rows its C/D/A records touch before the change and adds
  them back after it, in the file's transaction.

Anything else that writes uk_price (a probe, a hand-made UPDATE) leaves it behind until
:func:`rebuild` runs; the `rollup_in_step` check compares it with uk_price.
"""

from __future__ import annotations

from collections import defaultdict

import psycopg
import pyarrow as pa
import pyarrow.compute as pc

from . import schema as sch

ROLLUP = sch.ROLLUP
KEYS = ("year", "property_type", "district", "town_city")
# Deltas arrive as (key..., sales, price_sum); rows that reach 0 are removed.
UPSERT = """
INSERT INTO {schema}.uk_price_rollup AS r (year, property_type, district, town_city, sales, price_sum)
SELECT * FROM unnest(%s::smallint[], %s::"char"[], %s::text[], %s::text[], %s::bigint[], %s::bigint[])
ON CONFLICT (year, property_type, district, town_city)
DO UPDATE SET sales = r.sales + excluded.sales, price_sum = r.price_sum + excluded.price_sum
"""
DROP_EMPTY = "DELETE FROM {schema}.uk_price_rollup WHERE sales = 0"
# The same keys as a GROUP BY over uk_price rows `u` (used by rebuild and the monthly apply).
_GROUP = "extract(year FROM u.date_of_transfer)::smallint, u.property_type, u.district, u.town_city"
REBUILD = (
    "DELETE FROM {schema}.uk_price_rollup; "
    "INSERT INTO {schema}.uk_price_rollup (year, property_type, district, town_city, sales, price_sum) "
    f"SELECT {_GROUP}, count(*), sum(u.price) FROM {{schema}}.uk_price u GROUP BY 1, 2, 3, 4"
)
# The monthly apply: every staged id's current row out (before), the C and A rows in (after).
_MONTHLY_DELTA = (
    "INSERT INTO {{schema}}.uk_price_rollup AS r "
    "(year, property_type, district, town_city, sales, price_sum) "
    f"SELECT {_GROUP}, {{sign}}count(*), {{sign}}sum(u.price) "
    "FROM {{schema}}.uk_price u JOIN {{schema}}.uk_price_monthly_stage s "
    "ON u.transaction_id = s.transaction_id "
    "WHERE s.source_fingerprint = %s AND s.record_status IN ({statuses}) GROUP BY 1, 2, 3, 4 "
    "ON CONFLICT (year, property_type, district, town_city) "
    "DO UPDATE SET sales = r.sales + excluded.sales, price_sum = r.price_sum + excluded.price_sum"
)
MONTHLY_BEFORE = _MONTHLY_DELTA.format(sign="-", statuses="'A', 'C', 'D'")
MONTHLY_AFTER = _MONTHLY_DELTA.format(sign="", statuses="'A', 'C'")
# Keys where the rollup and a GROUP BY over uk_price differ, both ways (0 when in step).
MISMATCHES = (
    f"WITH truth AS (SELECT {_GROUP}, count(*) AS sales, sum(u.price) AS price_sum "
    "FROM {schema}.uk_price u GROUP BY 1, 2, 3, 4), "
    "kept AS (SELECT year, property_type, district, town_city, sales, price_sum "
    "FROM {schema}.uk_price_rollup) "
    "SELECT (SELECT count(*) FROM (TABLE truth EXCEPT ALL TABLE kept) a) "
    "+ (SELECT count(*) FROM (TABLE kept EXCEPT ALL TABLE truth) b)"
)

# The four questions of data.queries.UK_PRICE_QUERIES, answered from the rollup: the same
# rows, the same rounding (avg(price) = price sum / rows, both exact).
QUERIES: dict[str, str] = {
    "reference_semi_detached_count": (
        "SELECT sum(sales)::bigint FROM uk_price_rollup WHERE property_type = 'S'"
    ),
    "avg_price_per_year": (
        "SELECT year::int, round(sum(price_sum)::numeric / sum(sales)) "
        "FROM uk_price_rollup GROUP BY 1 ORDER BY 1"
    ),
    "avg_price_per_year_london": (
        "SELECT year::int, round(sum(price_sum)::numeric / sum(sales)) "
        "FROM uk_price_rollup WHERE town_city = 'LONDON' GROUP BY 1 ORDER BY 1"
    ),
    "top_100_districts_since_2020": (
        "SELECT district, round(sum(price_sum)::numeric / sum(sales)) AS avg_price, "
        "sum(sales)::bigint FROM uk_price_rollup WHERE year >= 2020 "
        "GROUP BY district ORDER BY avg_price DESC LIMIT 100"
    ),
}


class Delta:
    """Counts to add to the rollup, keyed like it; summed over the pieces of one chunk.

    Pieces are aggregated by Arrow and kept as small tables until `write`: a 24 MiB chunk
    has tens of thousands of keys, and a Python dict per key made the rollup cost the
    loader more than parsing did."""

    def __init__(self) -> None:
        self._tables: list[pa.Table] = []
        self._rows: dict[tuple, list[int]] = defaultdict(lambda: [0, 0])

    def add_parsed(self, t: pa.Table) -> None:
        """Add the good rows of a parsed piece (the file's 16 text columns)."""
        if t.num_rows == 0:
            return
        table = pa.table(
            {
                "year": pc.cast(pc.utf8_slice_codeunits(t["date_of_transfer"], 0, 4), pa.int16()),
                "property_type": t["property_type"],
                # empty address parts are NULL in uk_price (binary_copy.typed_rows)
                "district": _empty_as_null(t["district"]),
                "town_city": _empty_as_null(t["town_city"]),
                "price": pc.cast(t["price"], pa.int64()),
            }
        )
        agg = table.group_by(list(KEYS)).aggregate([("price", "count"), ("price", "sum")])
        self._tables.append(_keyed(agg, "price_count", "price_sum"))

    def add(self, key: tuple, sales: int, price_sum: int) -> None:
        c = self._rows[key]
        c[0] += sales
        c[1] += price_sum

    def summed(self) -> pa.Table | None:
        """One row per key (sales, price_sum), sorted by key; None when nothing was added."""
        parts = list(self._tables)
        if self._rows:
            keys = list(self._rows)
            columns = list(zip(*keys, strict=True))
            parts.append(
                pa.table(
                    {
                        "year": pa.array(columns[0], pa.int16()),
                        "property_type": pa.array(columns[1], pa.string()),
                        "district": pa.array(columns[2], pa.string()),
                        "town_city": pa.array(columns[3], pa.string()),
                        "sales": pa.array([self._rows[k][0] for k in keys], pa.int64()),
                        "price_sum": pa.array([self._rows[k][1] for k in keys], pa.int64()),
                    }
                )
            )
        if not parts:
            return None
        t = pa.concat_tables(parts)
        if len(parts) > 1:
            agg = t.group_by(list(KEYS)).aggregate([("sales", "sum"), ("price_sum", "sum")])
            t = _keyed(agg, "sales_sum", "price_sum_sum")
        return t.sort_by([(k, "ascending") for k in KEYS])

    def totals(self) -> dict[tuple, list[int]]:
        """The summed counts as {key: [sales, price_sum]}."""
        t = self.summed()
        if t is None:
            return {}
        return {tuple(r[k] for k in KEYS): [r["sales"], r["price_sum"]] for r in t.to_pylist()}

    def write(self, cur: psycopg.Cursor, schema: str) -> None:
        """Upsert in key order: concurrent chunks lock the rollup's rows in the same order."""
        t = self.summed()
        if t is None or t.num_rows == 0:
            return
        cur.execute(
            sch.q(UPSERT, schema), [t[c].to_pylist() for c in (*KEYS, "sales", "price_sum")]
        )


def _empty_as_null(a):
    return pc.if_else(pc.equal(a, ""), pa.scalar(None, pa.string()), a)


def _keyed(agg: pa.Table, sales: str, price_sum: str) -> pa.Table:
    """An aggregate as (keys..., sales, price_sum), whatever order Arrow put its columns in."""
    return pa.table({**{k: agg[k] for k in KEYS}, "sales": agg[sales], "price_sum": agg[price_sum]})


def rebuild(conn: psycopg.Connection, schema: str = sch.DEFAULT_SCHEMA) -> None:
    """Recompute the whole rollup from uk_price (in the caller's transaction)."""
    for statement in REBUILD.split("; "):
        conn.execute(sch.q(statement, schema))


def mismatches(conn: psycopg.Connection, schema: str = sch.DEFAULT_SCHEMA) -> int:
    """Rollup rows that differ from what uk_price holds now (0 when in step)."""
    return conn.execute(sch.q(MISMATCHES, schema)).fetchone()[0]


__all__ = [
    "DROP_EMPTY",
    "MONTHLY_AFTER",
    "MONTHLY_BEFORE",
    "QUERIES",
    "ROLLUP",
    "Delta",
    "mismatches",
    "rebuild",
]
