"""What counts as a failover error: the classifier every retry in the project goes through."""

from __future__ import annotations

import psycopg
import pytest

from citus_pipeline.cluster import failover


@pytest.mark.parametrize(
    ("err", "transient"),
    [
        (psycopg.errors.ObjectNotInPrerequisiteState("recovery is in progress"), True),
        # a worker group's new leader whose Citus metadata is not synced yet refuses DDL
        (
            psycopg.errors.ObjectNotInPrerequisiteState(
                "127.0.61.2:6432 is a metadata node, but is out of sync"
            ),
            True,
        ),
        (psycopg.errors.ObjectNotInPrerequisiteState("cannot drop a table in use"), False),
        (psycopg.errors.ReadOnlySqlTransaction("read-only transaction"), True),
        (psycopg.errors.UniqueViolation("duplicate key value violates unique"), False),
        (psycopg.errors.CheckViolation('violates check constraint "cheap"'), False),
    ],
)
def test_a_failover_error_is_told_from_a_real_one(err, transient):
    assert failover.is_transient(err) is transient


def test_retry_keeps_trying_a_failover_error_and_reports_what_it_was_doing():
    calls = []

    def work():
        calls.append(1)
        raise psycopg.errors.AdminShutdown("terminating connection due to administrator command")

    with pytest.raises(failover.FailoverRetriesExhausted, match="build the index.*3 attempts"):
        failover.retry(work, what="build the index", attempts=3, sleep=lambda _s: None)
    assert len(calls) == 3


def test_retry_without_a_budget_raises_the_error_as_it_came():
    err = psycopg.errors.AdminShutdown("terminating connection due to administrator command")

    def work():
        raise err

    with pytest.raises(psycopg.errors.AdminShutdown) as raised:
        failover.retry(work, what="build the index", attempts=1)
    assert raised.value is err
