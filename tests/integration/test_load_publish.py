"""Publishing uk_price_raw into uk_price against real Citus: each staged row once, the rollup
exact, the deferred index built, a concurrent writer neither doubled nor lost."""

from __future__ import annotations

import threading

import psycopg
import pytest
from uk_price_reads import fetch_all, indexes_per_shard, rollup_off

from citus_pipeline.data import load_price_paid, publish, publish_uk_price
from citus_pipeline.data import schema as sch
from citus_pipeline.data.generate import generate_complete
from citus_pipeline.waiting import until

pytestmark = pytest.mark.citus


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
        def publish_waiting() -> int:
            waiting = fetch_all(
                citus_dsn,
                "SELECT count(*) FROM pg_stat_activity "
                "WHERE wait_event_type = 'Lock' AND query LIKE 'DROP INDEX%%'",
            )[0][0]
            assert waiting or t.is_alive(), "publish never waited"
            return waiting

        until(publish_waiting, 30, 0.1, "the publish to wait on the writer's lock")
        writer.commit()
        t.join(120)
    finally:
        writer.close()
    assert (result[0].rows_published, result[0].rows_in_uk_price) == (19_999, 20_000)
    missing = (
        f"SELECT count(*) FROM {schema}.uk_price_raw r LEFT JOIN {schema}.uk_price u "
        "ON u.transaction_id = r.transaction_unique_identifier WHERE u.transaction_id IS NULL"
    )
    assert fetch_all(citus_dsn, missing)[0][0] == 0
    assert rollup_off(citus_dsn, schema) == 0
    assert indexes_per_shard(citus_dsn, schema) == {2}
