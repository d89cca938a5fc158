"""Spreading shards over the worker groups: Citus's background rebalance, started or joined and
waited for, and what a rebalance moved.

`run_background_rebalance` is what the `uk_price_rebalanced` asset and `bench rebalance` run:
``citus_rebalance_start`` moves shards in background tasks (in parallel, and with
``force_logical`` inserts keep working during every move), and the caller waits, logging the
task counts. A job already running -- started by a run that crashed or lost its connection --
is joined instead of a second one started, so running it again after any failure is safe.
It has no retry loop of its own: the caller retries it (the Dagster resource does, once).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import psycopg
from psycopg import sql

from ..errors import RebalanceFailed, WaitTimeout
from ..waiting import until
from .citus_meta import cleanup_orphans, fetch_active_worker_groups, node_bytes

REBALANCE_START_SQL = """
SELECT pg_catalog.citus_rebalance_start(
    shard_transfer_mode => %s::citus.shard_transfer_mode,
    parallel_transfer_colocated_shards => %s)
"""
# The newest rebalance job and its tasks counted by status, from the coordinator's catalog
# alone. citus_rebalance_status() also asks each running move's source and target for its
# progress, at the address the move started with: after the source's leader failed over it
# answers "recovery is in progress" until the move ends, and a status call must not fail
# the wait for a job that is still making its way.
REBALANCE_STATUS_SQL = """
SELECT j.job_id, j.state::text,
       (SELECT jsonb_object_agg(s.status, s.n) FROM (
            SELECT t.status::text AS status, count(*) AS n
            FROM pg_catalog.pg_dist_background_task t WHERE t.job_id = j.job_id GROUP BY 1) s)
FROM pg_catalog.pg_dist_background_job j
WHERE j.job_type = 'rebalance'
ORDER BY j.job_id DESC LIMIT 1
"""
REBALANCE_ERRORS_SQL = """
SELECT task_id, status::text, message
FROM pg_catalog.pg_dist_background_task
WHERE job_id = %s AND message IS NOT NULL AND message <> ''
ORDER BY (status::text = 'error') DESC, task_id
LIMIT 5
"""
REBALANCE_TASKS_SQL = "SELECT count(*) FROM pg_catalog.pg_dist_background_task WHERE job_id = %s"
PLACEMENTS_SQL = """
SELECT p.shardid, p.groupid FROM pg_catalog.pg_dist_placement p
JOIN pg_catalog.pg_dist_shard s USING (shardid)
"""
SHARD_SIZES_SQL = "SELECT shard_id, size FROM pg_catalog.citus_shard_sizes()"
MOVED_TABLES_SQL = """
SELECT DISTINCT logicalrelid::regclass::text FROM pg_catalog.pg_dist_shard
WHERE shardid = ANY(%s) ORDER BY 1
"""
RUNNING_STATES = ("scheduled", "running", "cancelling", "failing")
FAILED_STATES = ("failed", "cancelled")


@dataclass
class RebalanceOutcome:
    job_id: int | None
    state: str
    moves: int
    bytes_moved: int
    seconds: float
    before: dict[int, dict[str, int]]
    after: dict[int, dict[str, int]]
    worker_groups: tuple[int, ...] = ()  # the active worker groups once it finished
    vacuumed: tuple[str, ...] = ()  # tables whose moved shards were vacuumed and analyzed
    vacuum_seconds: float = 0.0


def _wait_for_job(
    conn: psycopg.Connection,
    job_id: int,
    poll_seconds: float,
    timeout_seconds: float,
    log: Callable[[str], None],
) -> str:
    """The job's final state, logging its task counts as they change."""
    logged: list[dict] = []  # the task counts last logged: a line only when they change

    def read() -> str:
        job, state, counts = conn.execute(REBALANCE_STATUS_SQL).fetchone()
        counts = counts or {}
        if not logged or counts != logged[-1]:
            log(f"rebalance job {job}: {state}, tasks {counts}")
            logged[:] = [counts]
        return state

    try:
        return until(
            read,
            timeout_seconds,
            poll_seconds,
            f"rebalance job {job_id} to finish",
            done=lambda state: state not in RUNNING_STATES,
        )
    except WaitTimeout as err:
        raise RebalanceFailed(
            f"rebalance job {job_id} still {err.last} after {timeout_seconds:.0f}s; "
            "it keeps running in the background (citus_rebalance_status())"
        ) from err


def run_background_rebalance(
    conn: psycopg.Connection,
    *,
    transfer_mode: str = "force_logical",
    parallel_colocated: bool = True,
    poll_seconds: float = 1.0,
    timeout_seconds: float = 3600.0,
    log: Callable[[str], None] = print,
) -> RebalanceOutcome:
    """Start (or join) Citus's background rebalance and wait for it, logging progress.

    A rebalance job already running (e.g. started by a run that crashed) is waited for
    instead of starting a second one. Raises :class:`RebalanceFailed` with the task errors
    Citus recorded when the job fails.
    """
    t0 = time.perf_counter()
    before = node_bytes(conn)
    placements_before = dict(conn.execute(PLACEMENTS_SQL).fetchall())
    sizes = dict(conn.execute(SHARD_SIZES_SQL).fetchall())

    status = conn.execute(REBALANCE_STATUS_SQL).fetchone()
    if status and status[1] in RUNNING_STATES:
        job_id = status[0]
        log(f"joining rebalance job {job_id} already {status[1]}")
    else:
        (job_id,) = conn.execute(
            REBALANCE_START_SQL, (transfer_mode, parallel_colocated)
        ).fetchone()
        if job_id is None:
            log("citus_rebalance_start: no moves needed, the placement is already balanced")

    state = "finished"
    if job_id is not None:
        state = _wait_for_job(conn, job_id, poll_seconds, timeout_seconds, log)
        if state in FAILED_STATES:
            errors = conn.execute(REBALANCE_ERRORS_SQL, (job_id,)).fetchall()
            detail = "; ".join(f"task {t} ({s}): {m.strip()}" for t, s, m in errors) or "no message"
            raise RebalanceFailed(f"Citus rebalance job {job_id} {state}: {detail}")

    placements_after = dict(conn.execute(PLACEMENTS_SQL).fetchall())
    moved = [s for s, g in placements_after.items() if placements_before.get(s, g) != g]
    moves = conn.execute(REBALANCE_TASKS_SQL, (job_id,)).fetchone()[0] if job_id is not None else 0
    outcome = RebalanceOutcome(
        job_id=job_id,
        state=state,
        moves=int(moves),
        bytes_moved=int(sum(sizes.get(s, 0) for s in moved)),
        seconds=time.perf_counter() - t0,
        before=before,
        after=node_bytes(conn),
        worker_groups=tuple(fetch_active_worker_groups(conn)),
    )
    if job_id is not None:
        # Drop the moved-away copies now (after the timing) rather than at Citus's next
        # deferred cleanup, so a finished rebalance leaves no cleanup record behind.
        cleanup_orphans(conn)
    if moved:
        t1 = time.perf_counter()
        outcome.vacuumed = vacuum_moved(conn, moved)
        outcome.vacuum_seconds = time.perf_counter() - t1
        log(f"VACUUM (ANALYZE) {', '.join(outcome.vacuumed)}: {outcome.vacuum_seconds:.1f}s")
    return outcome


def vacuum_moved(conn: psycopg.Connection, shard_ids: list[int]) -> tuple[str, ...]:
    """VACUUM (ANALYZE) every distributed table with a moved shard; the tables' names.

    A moved shard is a fresh copy: no hint bits, no visibility map, no statistics on its
    new node. Without this the first reader of every page sets its hint bits (and writes
    it back), index-only scans read the heap, and the new node plans its shard queries
    blind until autovacuum gets there: at 28 M rows the counts and quality checks after a
    rebalance took 56 and 60 s where they took 7 and 8 s after the publish's VACUUM.
    Citus sends it to every shard of each table; those that did not move are all-visible
    already and cost a visibility-map read. VACUUM needs an autocommit connection.
    """
    tables = tuple(t for (t,) in conn.execute(MOVED_TABLES_SQL, (shard_ids,)).fetchall())
    if tables:
        conn.execute(
            sql.SQL("VACUUM (ANALYZE) {}").format(sql.SQL(", ").join(sql.SQL(t) for t in tables))
        )
    return tables


__all__ = [
    "FAILED_STATES",
    "RUNNING_STATES",
    "RebalanceOutcome",
    "run_background_rebalance",
]
