"""A leader killed while Citus's background rebalance copies a shard, then what an operator
does: the rebalance run again until it finishes, with nothing of the interrupted move left
behind (no slot, publication, subscription or cleanup record on any node)."""

from __future__ import annotations

import time

import psycopg

from ..cluster import health
from ..cluster.citus_meta import ensure_distributed
from ..cluster.failover import is_transient
from ..cluster.rebalance import REBALANCE_START_SQL, run_background_rebalance
from ..cluster.topology import ClusterBackend
from ..errors import ClusterError, RebalanceFailed
from ..waiting import until
from .injector import KILL, FaultInjector
from .kill import kill_leader
from .ready import MID_FAULT
from .scenario import FaultRun, Scenario

MOVES_TABLE = "fault_moves"
MOVES_ROWS = 400_000  # ~60 MB over 32 shards: each move copies for a few seconds
RUNNING_MOVE_SQL = """
SELECT t.task_id, t.command FROM pg_catalog.pg_dist_background_task t
WHERE t.job_id = %s AND t.status = 'running' ORDER BY t.task_id LIMIT 1
"""
PLACEMENT_CHECK_SQL = """
SELECT count(*) FILTER (WHERE n <> 1) FROM (
  SELECT s.shardid, count(p.placementid) AS n FROM pg_catalog.pg_dist_shard s
  LEFT JOIN pg_catalog.pg_dist_placement p USING (shardid)
  WHERE s.logicalrelid = %s::regclass GROUP BY s.shardid) x
"""


def _seed_moves(dsn: str) -> None:
    """``fault_moves`` with MOVES_ROWS rows, distributed like the probe (the two move together)."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        ensure_distributed(conn, MOVES_TABLE, "id bigint PRIMARY KEY, payload text")
        conn.execute(
            f"INSERT INTO {MOVES_TABLE} SELECT i, repeat(md5(i::text), 4) "
            "FROM generate_series(1, %s) i ON CONFLICT (id) DO NOTHING",
            (MOVES_ROWS,),
        )


def _move_source_group(conn: psycopg.Connection, command: str) -> int:
    """The group a running ``citus_move_shard_placement(shard, source nodeid, target nodeid,
    mode)`` task copies from."""
    args = command.split("(", 1)[1].split(",")
    source = int(args[1])
    return conn.execute(
        "SELECT groupid FROM pg_catalog.pg_dist_node WHERE nodeid = %s", (source,)
    ).fetchone()[0]


def rebalance_interrupted(c: ClusterBackend, f: FaultInjector, victim: str) -> FaultRun:
    """A worker group added, Citus's background rebalance started, and kill -9 of the
    coordinator's leader (``victim`` "coordinator") or of the leader of the group a move is
    copying from ("source") while it copies; then what an operator does: the old member
    started again, the rebalance run again (joined while Citus still runs the job) until it
    finishes, and no slot, publication, subscription or cleanup record of the interrupted
    move left on any node."""
    dsn = c.coordinator_dsn()
    _seed_moves(dsn)
    added = c.add_worker()
    with psycopg.connect(dsn, autocommit=True) as conn:
        (job,) = conn.execute(REBALANCE_START_SQL, ("force_logical", True)).fetchone()
        if job is None:
            raise ClusterError(f"group {added} added, but Citus planned no move")
        task, command = until(
            lambda: conn.execute(RUNNING_MOVE_SQL, (job,)).fetchone(),
            120,
            what=f"a running move of rebalance job {job}",
            ignore=MID_FAULT,
        )
        group = 0 if victim == "coordinator" else _move_source_group(conn, command)
    time.sleep(1.0)  # into the copy
    killed = kill_leader(c, f, group)
    runs, give_up = 0, time.monotonic() + 120
    while True:  # the rerun: join the job Citus still runs, or start the rest again
        runs += 1
        try:
            with psycopg.connect(c.coordinator_dsn(), autocommit=True) as conn:
                outcome = run_background_rebalance(conn, log=lambda _: None, timeout_seconds=600)
            break
        except Exception as err:  # a failed job, or the failover still showing
            retry = isinstance(err, RebalanceFailed) or is_transient(err)
            if not retry or time.monotonic() > give_up:
                raise
            time.sleep(5)
    with psycopg.connect(c.coordinator_dsn(), autocommit=True) as conn:
        clean = until(
            lambda: health.no_shard_move_leftovers(conn),
            180,
            what="no shard-move leftovers",
            done=lambda found: found.holds,
            ignore=MID_FAULT,
        )
        rows = conn.execute(f"SELECT count(*) FROM {MOVES_TABLE}").fetchone()[0]
        misplaced = conn.execute(PLACEMENT_CHECK_SQL, (MOVES_TABLE,)).fetchone()[0]
        on_new = outcome.after.get(added, {}).get("shards", 0)
    detail = (
        f"{killed.detail} while it moved task {task} of job {job}; {runs} run(s) after, "
        f"group {added} holds {on_new} placements, {rows} of {MOVES_ROWS} rows, "
        f"{misplaced} shards without exactly one placement, leftovers: "
        + ("none" if clean.holds else str(clean.problem))
    )
    return FaultRun(killed.started, killed.ended, detail, killed.failover_s, killed.registered_s)


SCENARIOS = (
    Scenario(
        "kill-coordinator-mid-rebalance",
        "a group added, background rebalance, kill -9 of the coordinator's leader mid-move",
        lambda c, f: rebalance_interrupted(c, f, "coordinator"),
        (KILL,),
    ),
    Scenario(
        "kill-source-mid-rebalance",
        "a group added, background rebalance, kill -9 of the moving shard's source leader",
        lambda c, f: rebalance_interrupted(c, f, "source"),
        (KILL,),
    ),
)

__all__ = ["MOVES_ROWS", "SCENARIOS", "rebalance_interrupted"]
