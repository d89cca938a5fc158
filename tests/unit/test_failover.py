"""What counts as a failover error: the classifier every retry in the project goes through."""

from __future__ import annotations

import psycopg
import pytest

from citus_pipeline.cluster import failover
from citus_pipeline.errors import FailoverRetriesExhausted, GroupUnreachable, Transient, UserError


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
        # Citus, when its COPY stream to a shard's node broke (that node's leader killed)
        (psycopg.errors.IoError("failed to COPY to shard 102016 on 127.0.101.1:6432"), True),
        (psycopg.errors.IoError("could not read block 7 in file base/1/2"), False),
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

    with pytest.raises(FailoverRetriesExhausted, match="build the index.*3 attempts"):
        failover.retry(work, what="build the index", attempts=3, sleep=lambda _s: None)
    assert len(calls) == 3


def test_retry_without_a_budget_raises_the_error_as_it_came():
    err = psycopg.errors.AdminShutdown("terminating connection due to administrator command")

    def work():
        raise err

    with pytest.raises(psycopg.errors.AdminShutdown) as raised:
        failover.retry(work, what="build the index", attempts=1)
    assert raised.value is err


def test_the_projects_own_errors_are_retried_by_their_class():
    assert failover.is_transient(GroupUnreachable("group 1: connection to the leader lost"))
    assert not failover.is_transient(UserError("group 1: connection to the leader lost"))
    # a retryable error says so by `Transient`, not by posing as a socket error
    assert not issubclass(GroupUnreachable, ConnectionError)
    assert issubclass(GroupUnreachable, Transient)


def test_a_wrapped_failover_error_is_followed_through_its_cause():
    try:
        try:
            raise psycopg.errors.AdminShutdown("terminating connection")
        except psycopg.Error as err:
            raise RuntimeError("chunk 3 failed") from err
    except RuntimeError as wrapped:
        assert failover.is_transient(wrapped)


@pytest.mark.parametrize(
    ("err", "duplicate"),
    [
        (psycopg.errors.UniqueViolation("duplicate key value violates unique"), True),
        # Citus relays a shard's unique violation as an internal error with the shard's text
        (psycopg.errors.InternalError_("duplicate key value violates unique constraint"), True),
        (psycopg.errors.InternalError_("could not create unique index"), True),
        (psycopg.errors.InternalError_("connection to the remote node lost"), False),
        (psycopg.errors.CheckViolation('violates check constraint "cheap"'), False),
    ],
)
def test_a_unique_violation_is_told_also_as_citus_relays_it(err, duplicate):
    assert failover.is_duplicate(err) is duplicate
