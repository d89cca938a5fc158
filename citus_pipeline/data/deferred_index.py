"""uk_price's indexes, built once after a bulk write into an empty uk_price instead of
maintained row by row during it.

Two indexes cost a bulk write most, measured on 4 M rows loaded straight into uk_price (2
worker groups, each with a synchronous standby):

- the property-type index has five keys, so every insert lands on one of five hot rightmost
  leaves, which PostgreSQL deduplicates again and again as they fill: with it each worker
  leader wrote 708 MB of WAL and used 17.8 CPU-s, the load took 36.7 s; without it 402 MB,
  11.5 CPU-s, 29.2 s; building it afterwards took 1.7 s;
- the primary key takes random uuids, so every insert reads and dirties a leaf somewhere in
  an index that grows past what the cache keeps: without it each worker leader wrote 228 MB
  instead of 408 and used 5.5 CPU-s instead of 9.0 (load 20.5-21.4 s instead of 26.1).

The loader's first write into an empty uk_price defers both; the publish into an empty
uk_price defers only the property-type index, because its fallback against a concurrent
writer relies on the primary key raising. Without the primary key a row whose id is already
in the table is not refused: before the key is built again, rows with an id seen twice are
removed but one (the one stored first on its shard), and the rollup follows; the loader
reports them as duplicates, as the per-chunk path would have.

Only a write into an empty table defers: a load or a monthly apply into a table with rows
keeps the indexes in step as before. If the write fails, the indexes are built again before
the error is raised (when the cluster answers); where that did not happen (a process killed
in between, a failover during the build), the next load, publish or monthly apply builds
them before it writes (:func:`build_missing`); so does one that starts while a first load is
still running (the rest of that load then meets the key as any later load does). Queries are
slower meanwhile, never wrong.

Retries: the loader has no outer retry, so it passes its failover budget; the publish is
retried whole by its caller (the Dagster resource), so it passes none.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TypeVar

import psycopg

from ..cluster import failover
from . import rollup
from . import schema as sch

# LIMIT goes down to every shard: at most one row each, whatever the table holds (a NOT
# EXISTS subquery would be planned apart and could pull every row to the coordinator).
ANY_ROW = "SELECT 1 FROM {schema}.uk_price LIMIT 1"
DROP_INDEX = f"DROP INDEX IF EXISTS {{schema}}.{sch.PROPERTY_TYPE_INDEX}"
DROP_KEY = f"ALTER TABLE {{schema}}.uk_price DROP CONSTRAINT IF EXISTS {sch.PRIMARY_KEY}"
ADD_KEY = (
    f"ALTER TABLE {{schema}}.uk_price ADD CONSTRAINT {sch.PRIMARY_KEY} PRIMARY KEY (transaction_id)"
)
# Every row whose id is stored more than once, but the first on its shard (co-located by the
# id, so each shard answers for itself); what it returns is what the rollup counted for it.
DROP_DUPLICATES = """
DELETE FROM {schema}.uk_price u
USING (SELECT transaction_id, min(ctid) AS kept FROM {schema}.uk_price
       GROUP BY transaction_id HAVING count(*) > 1) d
WHERE u.transaction_id = d.transaction_id AND u.ctid <> d.kept
RETURNING extract(year FROM u.date_of_transfer)::smallint, u.property_type, u.district,
          u.town_city, u.price
"""
# Read from the catalog, so a write into a table that has the index takes no lock for it.
EXISTS = "SELECT to_regclass(%s)"

T = TypeVar("T")


@dataclass
class BulkWrite:
    """What :func:`indexes_after_bulk_write` did around one write."""

    into_empty: bool = False  # uk_price was empty: its indexes were dropped for the write
    duplicates_removed: int = 0  # rows of this write removed before the key was built again


def _execute(dsn: str, statement: str, schema: str, params: tuple | None = None) -> tuple | None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        cur = conn.execute(sch.q(statement, schema), params)
        return cur.fetchone() if cur.description else None


def _exists(dsn: str, schema: str, name: str) -> bool:
    return _execute(dsn, EXISTS, schema, (sch.regclass(schema, name),))[0] is not None


def _drop_duplicates(dsn: str, schema: str) -> int:
    """Remove all but one row of every id stored twice, and their counts from the rollup."""
    delta = rollup.Delta()
    with psycopg.connect(dsn) as conn, conn.transaction(), conn.cursor() as cur:
        for year, ptype, district, town, price in cur.execute(sch.q(DROP_DUPLICATES, schema)):
            delta.add((year, ptype, district, town), -1, -price)
        removed = cur.rowcount
        delta.write(cur, schema)
        cur.execute(sch.q(rollup.DROP_EMPTY, schema))
    return removed


def _add_primary_key(dsn: str, schema: str) -> int:
    """Build uk_price's primary key if it is missing; returns the duplicate rows removed."""
    if _exists(dsn, schema, sch.PRIMARY_KEY):
        return 0
    try:
        _execute(dsn, ADD_KEY, schema)
        return 0
    except psycopg.Error as err:
        if _exists(dsn, schema, sch.PRIMARY_KEY):  # another load built it meanwhile
            return 0
        if not failover.is_duplicate(err):
            raise
    removed = _drop_duplicates(dsn, schema)
    _execute(dsn, ADD_KEY, schema)
    return removed


def _build(dsn: str, schema: str) -> int:
    removed = _add_primary_key(dsn, schema)
    # Looked up first: CREATE INDEX IF NOT EXISTS locks the table before it finds the index.
    if not _exists(dsn, schema, sch.PROPERTY_TYPE_INDEX):
        _execute(dsn, sch.PROPERTY_TYPE_INDEX_DDL, schema)
    return removed


def _retry(work: Callable[[], T], what: str, attempts: int, retry_wait: float) -> T:
    return failover.retry(
        work, what=what, attempts=attempts, base_seconds=retry_wait, max_seconds=10.0
    )


def build_missing(dsn: str, schema: str, *, attempts: int = 1, retry_wait: float = 2.0) -> int:
    """Build whichever of uk_price's indexes an interrupted bulk write left unbuilt (cheap
    catalog lookups when none is); returns the duplicate rows removed on the way."""
    return _retry(lambda: _build(dsn, schema), "build uk_price's indexes", attempts, retry_wait)


@contextlib.contextmanager
def indexes_after_bulk_write(
    dsn: str,
    schema: str,
    *,
    primary_key: bool = False,
    attempts: int = 1,
    retry_wait: float = 2.0,
) -> Iterator[BulkWrite]:
    """Around a write into uk_price: when uk_price is empty, drop its property-type index
    (and with ``primary_key`` its primary key) and build them when the write is done or has
    failed; when it has rows, first build any an earlier write left unbuilt. With
    ``attempts`` > 1 each statement is retried across failovers (DDL reaches every worker
    group: a group failing over then costs a wait, not the write)."""

    def run(work: Callable[[], T], what: str) -> T:
        return _retry(work, what, attempts, retry_wait)

    done = BulkWrite()
    if run(lambda: _execute(dsn, ANY_ROW, schema), "see whether uk_price is empty") is not None:
        # Duplicates an interrupted first load left are its rows, counted by its ledger (a
        # re-run reports their chunks as already loaded), not this write's.
        build_missing(dsn, schema, attempts=attempts, retry_wait=retry_wait)
        yield done
        return
    done.into_empty = True
    run(lambda: _execute(dsn, DROP_INDEX, schema), "drop the property-type index")
    if primary_key:
        run(lambda: _execute(dsn, DROP_KEY, schema), "drop the primary key")
    try:
        yield done
    except BaseException:
        with contextlib.suppress(psycopg.Error):  # the write's own error is the one to see
            _build(dsn, schema)
        raise
    done.duplicates_removed = build_missing(dsn, schema, attempts=attempts, retry_wait=retry_wait)


__all__ = ["BulkWrite", "build_missing", "indexes_after_bulk_write"]
