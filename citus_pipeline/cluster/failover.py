"""What a leader change looks like from a client, and the one way the project retries across it.

When Patroni switches or fails over a group, clients of the coordinator see refused or broken
connections, a leader that turned read-only, an administrator shutdown, and Citus relays the
same from a worker as an internal error with the worker's message. :func:`is_transient` is the
only classifier of those errors in the project; :func:`retry` the only retry loop around
idempotent work. The loader (per chunk) and the Dagster resource (per statement) both call
them, and each operation is retried in exactly one of the two places.

Work redone after a broken connection may find its own earlier attempt, or another writer's
rows, already there: :func:`is_duplicate`, the one classifier of unique violations, tells the
callers that then switch to a conflict-tolerant path (the loader, publish, the deferred key).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

import psycopg
from psycopg_pool import PoolTimeout

from ..errors import FailoverRetriesExhausted, Transient

T = TypeVar("T")

# SQLSTATEs after which the same idempotent work succeeds once the new leader is there.
TRANSIENT_SQLSTATES = frozenset(
    {
        "25006",  # read_only_sql_transaction: we reached a demoted leader or a replica
        "57P01",  # admin_shutdown: Patroni stopped the postmaster
        "57P02",  # crash_shutdown
        "57P03",  # cannot_connect_now: starting up or shutting down
        "40001",  # serialization_failure (Citus 2PC recovery after a worker switchover)
        "40P01",  # deadlock_detected: one side is rolled back whole, a retry goes through
        "53300",  # too_many_connections: a promoted standby still has the old leader's clients
    }
)
# Class 08: connection exceptions, whatever the detail.
TRANSIENT_CLASSES = ("08",)
# 55000 after a worker's leader changed: a node Citus reached turned standby under it (WAL
# functions refuse, "recovery is in progress"), or the promoted node's Citus metadata is not
# synced yet and DDL waits for it ("... is a metadata node, but is out of sync"; Citus's
# maintenance daemon syncs it within seconds). 55000 with any other message is a real error.
# 58030 (io_error) is Citus's "failed to COPY to shard N on host:port" when its connection
# to the shard's node broke mid-COPY (that node's leader killed): the chunk's transaction
# rolls back whole. A worker's own I/O failure arrives with the worker's SQLSTATE and words.
# A state here counts only with one of its messages; any other message is a real error.
STATE_MESSAGES = {
    "55000": ("recovery is in progress", "is a metadata node, but is out of sync"),
    "58030": ("failed to COPY to shard",),
}
# Citus reports a lost worker connection as XX000 with the worker's message; client-side
# errors carry no SQLSTATE. Either counts only when its message says a connection went away.
TRANSIENT_MESSAGES = (
    "connection",  # refused, reset, closed, timeout, "to server", "to the remote node" ...
    "remote node",
    "terminat",  # terminating connection due to administrator command
    "shutdown",
    "is in recovery",
    "read-only transaction",
    "could not connect",
    "failed to connect",
    "consuming input failed",
    "shutting down",  # the database system is shutting down / starting up (57P03 as text)
    "starting up",
    # run_command_on_all_nodes's own words for a node whose connection broke mid-command
    "result unavailable",
    "failed to send query",
)


def message_is_transient(text: str) -> bool:
    """True when an error's text (all a Citus per-node result carries) says a connection went
    away or a node is mid leader change."""
    text = text.lower()
    return any(m in text for m in TRANSIENT_MESSAGES)


def is_transient(err: BaseException) -> bool:
    """True when ``err`` is what a leader change looks like from a client, so retrying helps."""
    if isinstance(err, PoolTimeout):
        return True  # no connection to a read-write coordinator within the wait
    if isinstance(err, psycopg.Error):
        state = err.sqlstate
        if state:
            if state in TRANSIENT_SQLSTATES or state.startswith(TRANSIENT_CLASSES):
                return True
            if any(m in str(err) for m in STATE_MESSAGES.get(state, ())):
                return True
            if not state.startswith(("XX", "57")):
                return False  # syntax, constraint, privilege ...: a real error, never retried
        elif isinstance(err, psycopg.InterfaceError):
            return True  # the client's connection object is closed or broken
        return isinstance(
            err, psycopg.OperationalError | psycopg.InternalError
        ) and message_is_transient(str(err))
    # The project's own errors say so by their class (`errors.Transient`); the builtin ones
    # are what sockets and the HTTP clients raise.
    if isinstance(err, Transient | ConnectionError | TimeoutError):
        return True
    # Data-path code may wrap the psycopg error; follow the chain.
    cause = err.__cause__ or err.__context__
    return cause is not None and cause is not err and is_transient(cause)


def is_duplicate(err: BaseException) -> bool:
    """A unique violation (a row refused, or a unique index that cannot be built over the
    rows), also as Citus forwards it from a shard (XX000 + the shard's text)."""
    if isinstance(err, psycopg.errors.UniqueViolation):
        return True
    return getattr(err, "sqlstate", None) == "XX000" and any(
        text in str(err) for text in _DUPLICATE_TEXTS
    )


_DUPLICATE_TEXTS = ("duplicate key value violates unique", "could not create unique index")


def backoff_delays(attempts: int, base: float, cap: float) -> list[float]:
    """Exponential backoff between attempts: base, 2*base, 4*base ... capped at ``cap``."""
    return [min(cap, base * (2**i)) for i in range(max(0, attempts - 1))]


def type_and_first_line(err: BaseException) -> str:
    """``<class name>: <first line of the message>``: which error it was, short enough for a
    log line (a server's message may run on with DETAIL and CONTEXT lines)."""
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0] if text else ''}"


def retry(
    work: Callable[[], T],
    *,
    what: str,
    attempts: int = 6,
    base_seconds: float = 1.0,
    max_seconds: float = 10.0,
    log: Callable[[str], None] | None = None,
    before_retry: Callable[[BaseException], None] | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """Run ``work`` (which must be idempotent), retrying it after transient errors.

    Any other error is raised at once. After the last attempt the transient error is raised
    as :class:`FailoverRetriesExhausted`, saying what was being done (with ``attempts=1``,
    no retry, it is raised as it came). ``before_retry`` runs
    before each new attempt (e.g. to drop connections to the old leader).
    """
    delays = backoff_delays(attempts, base_seconds, max_seconds)
    for attempt in range(len(delays) + 1):
        try:
            return work()
        except Exception as err:
            if not is_transient(err):
                raise
            if not delays:  # no retry was asked for: the caller sees the error itself
                raise
            if attempt >= len(delays):
                raise FailoverRetriesExhausted(
                    f"{what}: the coordinator or a worker kept failing over "
                    f"({attempts} attempts): {type_and_first_line(err)}"
                ) from err
            if before_retry:
                before_retry(err)
            if log:
                log(
                    f"{what}: failover error ({type_and_first_line(err)}); retry {attempt + 1}/"
                    f"{len(delays)} in {delays[attempt]:.1f}s"
                )
            sleep(delays[attempt])
    raise AssertionError("unreachable")


__all__ = [
    "TRANSIENT_SQLSTATES",
    "backoff_delays",
    "is_duplicate",
    "is_transient",
    "message_is_transient",
    "retry",
    "type_and_first_line",
]
