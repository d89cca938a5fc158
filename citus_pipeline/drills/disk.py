"""A leader's disk full for a while, then given its room back.

What must hold: a statement that needs new pages fails whole with PostgreSQL's "No space
left on device" at once (it is no failover, so nothing retries it), the single rows that fit
in pages already there go on, the same statement run once the room is back stores every row,
and the group keeps its leader (Patroni does not fail over for a full disk).
"""

from __future__ import annotations

import time

import psycopg

from ..cluster import failover
from ..cluster.citus_meta import ensure_distributed
from ..cluster.failover import is_transient
from ..cluster.topology import ClusterBackend
from ..errors import ClusterError
from ..waiting import until
from .injector import DISK, FaultInjector
from .ready import MID_FAULT, leader_name, sync_standby, wait_registered, wait_whole
from .scenario import FaultRun, Scenario

DISK_FULL_S = 20
DISK_ROOM_MB = 256  # room above the member directory's size: WAL segments come and go
FILL_TABLE = "fault_fill"
FILL_ROWS = 100_000  # ~25 MB over the shards: every group's pages must grow
FILL_SQL = (
    f"INSERT INTO {FILL_TABLE} SELECT i, repeat(md5(i::text), 4) FROM generate_series(1, %s) i"
)


def _fill_table(dsn: str) -> None:
    """An empty distributed ``fault_fill`` (created before the disk fills: DDL needs room)."""
    with psycopg.connect(dsn, autocommit=True, connect_timeout=5) as conn:
        ensure_distributed(conn, FILL_TABLE, "id bigint PRIMARY KEY, payload text")
        conn.execute(f"TRUNCATE {FILL_TABLE}")


def _bulk_insert(dsn: str) -> str:
    """``FILL_ROWS`` rows into ``fault_fill`` in one statement: "ok" or the error's line."""
    with psycopg.connect(dsn, autocommit=True, connect_timeout=5) as conn:
        try:
            conn.execute(FILL_SQL, (FILL_ROWS,))
        except psycopg.Error as err:  # the loader's retry would wait on a failover error
            retried = "a failover error" if is_transient(err) else "not a failover error"
            return f"{failover.type_and_first_line(err)} ({retried})"
        return "ok"


def disk_full_worker_leader(c: ClusterBackend, f: FaultInjector) -> FaultRun:
    """Group 1's leader on a filesystem of its own (its synchronous standby moved onto it,
    then switched over to), the filesystem filled for 20 s, then the room given back; a bulk
    insert meanwhile and after, the probe's single rows throughout."""
    topo = c.status(with_shards=False)
    old = leader_name(c, 1)
    standby = sync_standby(topo, 1)
    if standby is None:
        raise ClusterError("group 1 has no synchronous standby to move onto its own disk")

    undo = f.own_disk(standby, DISK_ROOM_MB)

    def back() -> None:
        """The old leader leads again and the moved member goes back on its disk."""
        wait_whole(c, faults=f)
        if leader_name(c, 1) != old:
            c.switchover(1, old)
            wait_whole(c, faults=f)
        undo()

    try:
        wait_whole(c, faults=f)
        c.switchover(1, standby)
        wait_registered(c, 1, standby)
        wait_whole(c, faults=f)
        _fill_table(c.coordinator_dsn())
        t0 = time.monotonic()
        with f.disk_filled(standby):
            during = _bulk_insert(c.coordinator_dsn())
            time.sleep(max(0.0, t0 + DISK_FULL_S - time.monotonic()))
        ended = time.monotonic()
        after = _bulk_insert(c.coordinator_dsn())
        with psycopg.connect(c.coordinator_dsn(), autocommit=True) as conn:
            rows = conn.execute(f"SELECT count(*) FROM {FILL_TABLE}").fetchone()[0]
        leader = until(
            lambda: c.status(with_shards=False).leader(1),
            60,
            what="group 1's leader after the disk full",
            done=lambda m: m is not None,
            ignore=MID_FAULT,
        ).name
    except BaseException:
        back()  # never leave a member on its own disk (the cluster's purge could not remove it)
        raise
    detail = (
        f"{standby}'s filesystem full {DISK_FULL_S} s; a bulk insert meanwhile: {during}; "
        f"after: {after}, {rows} of {FILL_ROWS} rows; {leader} leads group 1"
    )
    return FaultRun(t0, ended, detail, cleanup=back)


SCENARIOS = (
    Scenario(
        "disk-full-worker-leader",
        f"group 1's leader on a tmpfs of its own, filled for {DISK_FULL_S} s, then emptied",
        disk_full_worker_leader,
        (DISK,),
    ),
)

__all__ = ["DISK_FULL_S", "SCENARIOS", "disk_full_worker_leader"]
