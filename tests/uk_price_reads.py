"""Reads of uk_price and the tables kept with it, as the integration tests compare them."""

from __future__ import annotations

import psycopg

from citus_pipeline.data import rollup
from citus_pipeline.data import schema as sch


def fetch_all(dsn, query, *args):
    """Every row ``query`` returns, on a connection of its own."""
    with psycopg.connect(dsn) as c:
        return c.execute(query, args).fetchall()


def checksum(dsn, schema, table="uk_price"):
    with psycopg.connect(dsn) as conn:
        return sch.checksum(conn, schema, table)


def rollup_off(dsn, schema) -> int:
    """Rollup keys not in step with uk_price (0 when every write path kept it exact)."""
    with psycopg.connect(dsn) as conn:
        return rollup.mismatches(conn, schema)


def indexes_per_shard(dsn, schema) -> set[int]:
    """How many indexes each placement of uk_price has (2: the primary key, property type)."""
    return {
        int(n)
        for (n,) in fetch_all(
            dsn,
            "SELECT result FROM run_command_on_placements(%s, "
            "$$SELECT count(*) FROM pg_index WHERE indrelid = '%%s'::regclass$$)",
            f"{schema}.uk_price",
        )
    }


def index_oid(dsn, schema, name: str) -> int | None:
    """The oid of one of uk_price's indexes on the coordinator, None when absent."""
    (oid,) = fetch_all(dsn, "SELECT to_regclass(%s)::oid", f"{schema}.{name}")[0]
    return oid


def property_type_index(dsn, schema) -> int | None:
    return index_oid(dsn, schema, sch.PROPERTY_TYPE_INDEX)
