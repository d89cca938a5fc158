"""CitusResource's failover handling against real psycopg errors from a real PostgreSQL.

A throwaway PostgreSQL (no Citus needed) runs as user `postgres` on 127.0.0.1:5510 under a
temporary directory; each failover symptom is produced for real: a refused connection, a
read-only transaction (25006), an administrator shutdown of our backend (57P01).
"""

import time

import psycopg
import pytest
from plain_pg import plain_postgres

from citus_pipeline.cluster.failover import is_transient as is_failover_error
from citus_pipeline.defs.citus.resources import CitusResource
from citus_pipeline.errors import FailoverRetriesExhausted

PORT = 5510


@pytest.fixture(scope="module")
def plain_pg():
    with plain_postgres(PORT) as pg:
        yield pg.dsn()


def _resource(dsn: str, **kw) -> CitusResource:
    return CitusResource(
        dsn=dsn, retry_attempts=3, retry_base_seconds=0.01, retry_max_seconds=0.02, **kw
    )


def test_connection_refused_is_a_failover_error():
    with pytest.raises(psycopg.OperationalError) as err:
        psycopg.connect("host=127.0.0.1 port=1 user=postgres connect_timeout=2")
    assert is_failover_error(err.value)


def test_read_only_transaction_is_a_failover_error(plain_pg):
    with psycopg.connect(plain_pg, autocommit=True) as conn:
        conn.execute("SET default_transaction_read_only = on")
        with pytest.raises(psycopg.errors.ReadOnlySqlTransaction) as err:
            conn.execute("CREATE TABLE ro_probe (x int)")
    assert err.value.sqlstate == "25006" and is_failover_error(err.value)


def test_a_node_that_turned_standby_is_a_failover_error_and_only_that(plain_pg):
    # what Citus relays when a WAL function reaches a worker's former leader, now a standby
    raise_as = "DO $$ BEGIN RAISE EXCEPTION USING ERRCODE = '55000', MESSAGE = %s; END $$"
    with psycopg.connect(plain_pg, autocommit=True) as conn:
        with pytest.raises(psycopg.errors.ObjectNotInPrerequisiteState) as standby:
            conn.execute(raise_as.replace("%s", "'recovery is in progress'"))
        with pytest.raises(psycopg.errors.ObjectNotInPrerequisiteState) as other:
            conn.execute(raise_as.replace("%s", "'cannot do that now'"))
    assert is_failover_error(standby.value)
    assert not is_failover_error(other.value)


def test_admin_shutdown_is_a_failover_error(plain_pg):
    victim = psycopg.connect(plain_pg, autocommit=True)
    pid = victim.info.backend_pid
    with psycopg.connect(plain_pg, autocommit=True) as killer:
        killer.execute("SELECT pg_terminate_backend(%s)", (pid,))
    time.sleep(0.2)
    with pytest.raises(psycopg.OperationalError) as err:
        victim.execute("SELECT 1")
    victim.close()
    assert err.value.sqlstate == "57P01" and is_failover_error(err.value)


def test_real_errors_are_not_retried(plain_pg):
    res = _resource(plain_pg)
    calls = []

    def bad_sql():
        calls.append(1)
        with res.connection() as conn:
            conn.execute("SELECT * FROM no_such_table")

    with pytest.raises(psycopg.errors.UndefinedTable) as err:
        res.retry_idempotent(bad_sql, what="probe")
    assert not is_failover_error(err.value)
    assert len(calls) == 1
    res.close()


def test_retries_after_admin_shutdown_then_succeeds(plain_pg):
    res = _resource(plain_pg)
    attempts = []

    def work():
        with res.connection() as conn:
            attempts.append(conn.info.backend_pid)
            if len(attempts) == 1:
                # the pooled connection is shut down under us, as Patroni does on demotion
                with psycopg.connect(plain_pg, autocommit=True) as other:
                    other.execute("SELECT pg_terminate_backend(%s)", (conn.info.backend_pid,))
                time.sleep(0.2)
            return conn.execute("SELECT 42").fetchone()[0]

    assert res.retry_idempotent(work, what="probe") == 42
    assert len(attempts) == 2 and attempts[0] != attempts[1]
    res.close()


def test_gives_up_with_a_clear_message_when_the_leader_stays_read_only(plain_pg):
    res = _resource(plain_pg)

    def write():
        with res.connection() as conn, conn.transaction():
            conn.execute("SET TRANSACTION READ ONLY")
            conn.execute("CREATE TABLE ro_probe2 (x int)")

    with pytest.raises(
        FailoverRetriesExhausted, match=r"create probe: .*3 attempts.*ReadOnlySqlTransaction"
    ):
        res.retry_idempotent(write, what="create probe")
    res.close()


def test_unreachable_coordinator_exhausts_retries():
    res = _resource(
        "host=127.0.0.1 port=1 user=postgres connect_timeout=1", connect_wait_seconds=1.0
    )
    with pytest.raises(FailoverRetriesExhausted, match="read: "):
        res.query_idempotent("SELECT 1", what="read")
    res.close()


def test_search_path_follows_the_configured_schema(plain_pg):
    with psycopg.connect(plain_pg, autocommit=True) as conn:
        conn.execute("CREATE SCHEMA IF NOT EXISTS probe_schema")
        conn.execute("CREATE TABLE IF NOT EXISTS probe_schema.uk_price (x int)")
        conn.execute("INSERT INTO probe_schema.uk_price VALUES (7)")
    res = _resource(plain_pg, db_schema="probe_schema")
    assert res.query_idempotent("SELECT x FROM uk_price") == [(7,)]
    res.close()
    with pytest.raises(ValueError, match="plain lower-case identifier"):
        _resource(plain_pg, db_schema="x; drop").checked_schema()
