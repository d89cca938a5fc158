"""uk_price's property-type index, built once after a bulk write into an empty uk_price
instead of maintained row by row during it.

The index has five keys, so every insert lands on one of five hot rightmost leaves, which
PostgreSQL deduplicates again and again as they fill. Measured on 4 M rows loaded straight
into uk_price (2 worker groups, each with a synchronous standby): with the index each worker
leader wrote 708 MB of WAL and used 17.8 CPU-s, each standby 4.3 CPU-s replaying it, the load
took 36.7 s; without it 402 MB, 11.5 and 2.4 CPU-s, 29.2 s; building it afterwards took
1.7 s. The publish into an empty uk_price (the main job's path) defers it too, though its
INSERT ... SELECT was not measurably faster for it at 28 M rows.

Only the first write into an empty table defers: a load or a monthly apply into a table with
rows keeps the index in step as before. If the write fails, the index is built again before
the error is raised (when the cluster answers); where that build did not happen (a process
killed in between, a failover during the build), the next load or publish builds it before
it writes, and `ensure_schema` (every load and monthly apply runs one) creates it too:
queries are slower meanwhile, never wrong.

Retries: the loader has no outer retry, so it passes its failover budget; the publish is
retried whole by its caller (the Dagster resource), so it passes none.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import psycopg

from ..cluster import failover
from . import schema as sch

# LIMIT goes down to every shard: at most one row each, whatever the table holds (a NOT
# EXISTS subquery would be planned apart and could pull every row to the coordinator).
ANY_ROW = "SELECT 1 FROM {schema}.uk_price LIMIT 1"
DROP = f"DROP INDEX IF EXISTS {{schema}}.{sch.PROPERTY_TYPE_INDEX}"
# Read from the catalog, so a write into a table that has the index takes no lock for it.
EXISTS = "SELECT to_regclass(%s)"


def _execute(dsn: str, statement: str, schema: str, params: tuple | None = None) -> tuple | None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        cur = conn.execute(sch.q(statement, schema), params)
        return cur.fetchone() if cur.description else None


@contextlib.contextmanager
def index_after_bulk_write(
    dsn: str, schema: str, *, attempts: int = 1, retry_wait: float = 2.0
) -> Iterator[bool]:
    """Around a write into uk_price: yields True when uk_price was empty and its
    property-type index was dropped, to be built when the write is done (or has failed).
    With ``attempts`` > 1 each statement is retried across failovers (DDL reaches every
    worker group: a group failing over then costs a wait, not the write)."""

    def run(statement: str, what: str, params: tuple | None = None) -> tuple | None:
        if attempts <= 1:  # the caller retries the whole write
            return _execute(dsn, statement, schema, params)
        return failover.retry(
            lambda: _execute(dsn, statement, schema, params),
            what=what,
            attempts=attempts,
            base_seconds=retry_wait,
            max_seconds=10.0,
        )

    if run(ANY_ROW, "see whether uk_price is empty") is not None:
        index = sch.regclass(schema, sch.PROPERTY_TYPE_INDEX)
        if run(EXISTS, "look for the property-type index", (index,))[0] is None:
            run(sch.PROPERTY_TYPE_INDEX_DDL, "build the property-type index left unbuilt")
        yield False
        return
    run(DROP, "drop the property-type index for a bulk write")
    try:
        yield True
    except BaseException:
        with contextlib.suppress(psycopg.Error):  # the write's own error is the one to see
            _execute(dsn, sch.PROPERTY_TYPE_INDEX_DDL, schema)
        raise
    run(sch.PROPERTY_TYPE_INDEX_DDL, "build the property-type index")


__all__ = ["index_after_bulk_write"]
