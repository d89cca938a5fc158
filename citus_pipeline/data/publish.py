"""Publishing the staged rows: uk_price_raw -> uk_price, typed and distributed (idempotent)."""

from __future__ import annotations

import time

import psycopg
from psycopg import sql
from pydantic import BaseModel

from ..cluster.failover import is_duplicate
from . import rollup
from . import schema as sch
from .deferred_index import indexes_after_bulk_write
from .progress import Progress, ProgressEvent

PUBLISH_INTO_EMPTY = """
INSERT INTO {schema}.uk_price
    (transaction_id, price, date_of_transfer, property_type, old_new, duration,
     ppd_category_type, postcode, paon, saon, street, locality, town_city, district, county)
SELECT transaction_unique_identifier, price::integer, date_of_transfer::date,
       property_type::"char", "Old/New"::"char", duration::"char", ppdcategory_type::"char",
       nullif(postcode, ''), nullif(paon, ''), nullif(saon, ''), nullif(street, ''),
       nullif(locality, ''), nullif("Town/City", ''), nullif(district, ''), nullif(county, '')
FROM {schema}.uk_price_raw
"""
# Into an empty uk_price the ids of uk_price_raw (its primary key) cannot collide, and the
# speculative insertion ON CONFLICT pays per row (one more primary-key lookup) is saved; a
# row that another writer added meanwhile fails the statement, which is then run again.
PUBLISH = PUBLISH_INTO_EMPTY + "ON CONFLICT (transaction_id) DO NOTHING\n"


class PublishReport(BaseModel):
    rows_published: int
    rows_in_uk_price: int
    seconds: float


def _publish(conn: psycopg.Connection, schema: str, statement: str) -> tuple[int, int]:
    """One transaction: the insert and the rollup; uk_price's rows before and after."""
    count = sql.SQL("SELECT count(*) FROM {}").format(sch.table(schema, sch.TYPED))
    with conn.transaction():
        # Citus reports rows processed, not inserted, for INSERT ... SELECT ON CONFLICT
        (before,) = conn.execute(count).fetchone()
        conn.execute(sch.q(statement, schema))
        (total,) = conn.execute(count).fetchone()
        rollup.rebuild(conn, schema)
    return before, total


def publish_uk_price(
    dsn: str,
    *,
    progress: Progress | None = None,
    schema: str = sch.DEFAULT_SCHEMA,
    analyze: bool = True,
) -> PublishReport:
    """uk_price_raw -> uk_price: every staged row not yet in uk_price, typed (idempotent).

    Rows of uk_price_raw were validated by the loader; the CHECK constraints of uk_price
    stop anything else. `ON CONFLICT DO NOTHING` makes a re-run add nothing (the first
    publish into an empty uk_price needs none and goes without). The two tables
    are co-located, so Citus runs the statement shard by shard on the workers, in parallel.
    The rollup is recomputed from uk_price in the same transaction. Into an empty uk_price,
    the property-type index is built after the insert (`deferred_index`).
    """
    started = time.monotonic()
    with (
        indexes_after_bulk_write(dsn, schema) as bulk,
        psycopg.connect(dsn, autocommit=True) as conn,
    ):
        empty = bulk.into_empty
        try:
            before, total = _publish(conn, schema, PUBLISH_INTO_EMPTY if empty else PUBLISH)
        except psycopg.Error as err:
            if not (empty and is_duplicate(err)):
                raise
            before, total = _publish(conn, schema, PUBLISH)
    published = total - before
    if analyze:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("VACUUM ANALYZE {}").format(sch.table(schema, sch.TYPED)))
    if progress:
        progress(ProgressEvent(published, None, 0, f"published {published} rows", published, 0))
    return PublishReport(
        rows_published=published, rows_in_uk_price=total, seconds=time.monotonic() - started
    )


__all__ = ["PublishReport", "publish_uk_price"]
