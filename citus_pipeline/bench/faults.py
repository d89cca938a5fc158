"""`citus-pipeline bench faults`: the fault matrix on the local backend, under writes.

Each scenario breaks one thing while a writer inserts single rows with increasing ids through
the coordinator (`WriteProbe`), ends the fault (a killed member started again, a frozen one
thawed, the DCS back), waits until the cluster is whole again, then checks that every
acknowledged id is stored exactly once. Per scenario it reports:

* ``lost``: acknowledged ids the table does not hold (must be 0), ``duplicated`` likewise;
* ``max_gap_s``: the longest time without an acknowledged write after the fault began,
  which is what a client saw of the outage; ``failing_s``: from the first to the last failed
  insert (the writer goes on with the next id, so where only one group's shards refuse, the
  gap stays short and this says how long some writes failed);
* ``failover_s``: from the fault to Patroni's new leader of the group running, and
  ``registered_s`` to pg_dist_node naming it (none where no leader change is expected);
* ``recovery_s``: from the fault's end to the cluster whole again (every member running or
  streaming, every group led, each synchronous standby streaming, pg_dist_node following
  Patroni's leaders);
* ``max_status_s``: the slowest `cluster status` asked throughout, from the fault to the
  cluster whole again.

The integration tests run the same scenarios and assert what each must guarantee; this
command prints the figures (and ``--json``).
"""

from __future__ import annotations

import json
import os
import signal
import tempfile
import threading
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Annotated, TypeVar

import psycopg
import typer
from rich.console import Console
from rich.table import Table

from ..cluster import failover, health
from ..cluster.citus_meta import ensure_distributed, recover_prepared_transactions
from ..cluster.failover import is_transient
from ..cluster.local import LocalCluster
from ..cluster.local.faults import back_on_disk, fill, frozen, member_processes, own_filesystem
from ..cluster.render import down_lines
from ..cluster.rolling import rolling_restart
from ..cluster.topology import ClusterTopology
from ..cluster.write_probe import WriteProbe, probe_table
from ..data import schema as sch
from ..errors import ClusterError
from .backup import RESULTS

console = Console(width=160)
T = TypeVar("T")

PROBE_TABLE = "fault_probe"
INSERT = f"INSERT INTO {PROBE_TABLE} (id) VALUES (%s)"
DCS_OUTAGE_S = 30


@dataclass
class FaultRun:
    """What a scenario did, in the probe's clock (monotonic seconds)."""

    started: float  # the fault began
    ended: float  # the fault was over (member back, thawed, DCS back)
    detail: str  # one line: what happened to whom
    failover_s: float | None = None  # Patroni's new leader running
    registered_s: float | None = None  # ... and named by pg_dist_node
    # undoes the scenario's setup once the writer has stopped (not part of the fault)
    cleanup: Callable[[], None] | None = None
    # the most members of the broken group seen out of recovery at once (2: split brain)
    max_primaries: int | None = None


@dataclass
class Outcome:
    name: str
    acked: int
    lost: int
    duplicated: int
    failed: int
    max_gap_s: float
    failing_s: float
    failover_s: float | None
    registered_s: float | None
    recovery_s: float
    fault_s: float  # how long the fault lasted
    detail: str
    errors: list[str] = field(default_factory=list)
    max_primaries: int | None = None  # partitions: members out of recovery at once
    max_status_s: float = 0.0  # the slowest `cluster status` from the fault to whole again
    # (seconds after the fault began) of every acknowledged insert: what the tests look at
    acked_after_s: list[float] = field(default_factory=list, repr=False)


def until(read: Callable[[], T], done: Callable[[T], bool], timeout: float, what: str) -> T:
    """``read()`` every half second until ``done`` holds; a ClusterError naming ``what`` after
    ``timeout`` s. A read that raises counts as not done (the cluster is mid-fault)."""
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        try:
            value = read()
        except (ClusterError, psycopg.Error) as err:
            last = err
        else:
            if done(value):
                return value
            last = value
        time.sleep(0.5)
    raise ClusterError(f"{what}: not after {timeout:.0f} s (last seen: {last})")


def is_whole(topo: ClusterTopology, c: LocalCluster) -> bool:
    """Every member running or streaming, every group led, each synchronous standby
    streaming, pg_dist_node following Patroni's leaders."""
    want = len(c.members())
    return (
        len(topo.members) == want
        and all(m.state in ("running", "streaming") for m in topo.members)
        and health.every_group_has_a_leader(topo).holds
        and health.every_sync_standby_streams(topo, c.spec).holds
        and health.dist_nodes_follow_leaders(topo).holds
    )


def wait_whole(c: LocalCluster, timeout: float = 180) -> ClusterTopology:
    return until(lambda: c.status(with_shards=False), lambda t: is_whole(t, c), timeout, "whole")


def wait_new_leader(
    c: LocalCluster, group: int, old: str, timeout: float = 120, old_pid: int | None = None
) -> str:
    """Until Patroni reports a running leader of ``group`` other than ``old`` or, given
    ``old_pid``, ``old`` itself under another Patroni (killed, started again, leading)."""

    def restarted() -> bool:
        pid = c.member_pid(c.member_by_name(old))
        return old_pid is not None and pid is not None and pid != old_pid

    def led(topo: ClusterTopology) -> bool:
        leader = topo.leader(group)
        if leader is None or leader.state != "running":
            return False
        return leader.name != old or restarted()

    topo = until(lambda: c.status(with_shards=False), led, timeout, f"group {group}: a new leader")
    return topo.leader(group).name


def wait_registered(c: LocalCluster, group: int, leader: str, timeout: float = 120) -> None:
    """Until pg_dist_node's primary row of ``group`` names ``leader`` (Patroni's Citus
    support updates it on the coordinator)."""
    host = c.member_by_name(leader).address
    until(
        lambda: c.status(with_shards=False).dist_nodes,
        lambda nodes: any(
            n.groupid == group and n.role == "primary" and n.host == host for n in nodes
        ),
        timeout,
        f"group {group}: {leader} in pg_dist_node",
    )


def primaries(c: LocalCluster, group: int) -> list[str]:
    """Members of ``group`` whose PostgreSQL is out of recovery right now (split brain if >1)."""
    found = []
    for m in c.members([group]):
        try:
            with psycopg.connect(c.member_dsn(m), autocommit=True, connect_timeout=3) as conn:
                if not conn.execute("SELECT pg_is_in_recovery()").fetchone()[0]:
                    found.append(m.name)
        except psycopg.Error:
            continue
    return found


# ---- the scenarios ------------------------------------------------------------------------
def _leader(c: LocalCluster, group: int) -> str:
    leader = c.status(with_shards=False).leader(group)
    if leader is None:
        raise ClusterError(f"group {group} has no leader to break")
    return leader.name


def _sync_standby(topo: ClusterTopology, group: int) -> str | None:
    return next((m.name for m in topo.members_of(group) if m.role in health.SYNC_ROLES), None)


def _kill_leader(c: LocalCluster, group: int) -> FaultRun:
    """kill -9 of the leader's Patroni and postmaster (its backends go with the postmaster);
    started again once the group has a new registered leader, as a supervisor would."""
    old = _leader(c, group)
    t0 = time.monotonic()
    c.stop_member(old, kill=True)
    new = wait_new_leader(c, group, old)
    failover = time.monotonic() - t0
    wait_registered(c, group, new)
    registered = time.monotonic() - t0
    c.start_member(old)
    return FaultRun(t0, time.monotonic(), f"{old} killed, {new} leads", failover, registered)


def kill_worker_leader(c: LocalCluster) -> FaultRun:
    return _kill_leader(c, 1)


def kill_coordinator_leader(c: LocalCluster) -> FaultRun:
    return _kill_leader(c, 0)


def kill_sync_standby(c: LocalCluster) -> FaultRun:
    """kill -9 of group 1's synchronous standby: Patroni drops the group to asynchronous
    (or picks another standby) and commits go on; started again after a ttl."""
    topo = c.status(with_shards=False)
    standby = _sync_standby(topo, 1)
    if standby is None:
        raise ClusterError("group 1 has no synchronous standby to kill")
    t0 = time.monotonic()
    c.stop_member(standby, kill=True)
    time.sleep(c.spec.patroni.ttl)
    c.start_member(standby)
    return FaultRun(t0, time.monotonic(), f"{standby} killed for {c.spec.patroni.ttl} s")


def _leader_lost_for(
    c: LocalCluster,
    group: int,
    old: str,
    hold: float,
    fault: AbstractContextManager,
    what: str,
    end: str,
    old_pid: int | None = None,
) -> FaultRun:
    """``fault`` (entered now, left after ``hold`` s) takes ``old``, the leader of ``group``;
    meanwhile Patroni's new leader and its registration in pg_dist_node are awaited (with
    ``old_pid``, ``old`` leading again under a new Patroni counts too). Where the
    registration comes only once the fault is over, the detail says so, in the fault's own
    words: ``what`` it is (``"frozen 40 s"``) and its ``end`` (``"thaw"``)."""
    new, failover, registered = None, None, None
    t0 = time.monotonic()
    with fault:
        try:
            new = wait_new_leader(c, group, old, timeout=hold, old_pid=old_pid)
            failover = time.monotonic() - t0
            wait_registered(c, group, new, timeout=max(1.0, t0 + hold - time.monotonic()))
            registered = time.monotonic() - t0
        except ClusterError:
            pass  # said in the detail: no leader change, or not registered, meanwhile
        time.sleep(max(0.0, t0 + hold - time.monotonic()))
    ended = time.monotonic()
    detail = f"{old} {what}"
    if new is None:
        detail += ", no new leader meanwhile"
    else:
        detail += f", {new} leads" + (" again" if new == old else "")
        if registered is None:
            wait_registered(c, group, new)
            detail += f"; in pg_dist_node only after the {end}"
            registered = time.monotonic() - t0
    return FaultRun(t0, ended, detail, failover, registered)


def _freeze_leader(c: LocalCluster, group: int) -> FaultRun:
    """SIGSTOP of every process of the leader for 2 x ttl (a paused VM, a long stall), then
    SIGCONT. The supervisor finds the member hung about ttl into the stall, kills it and
    starts it again: before the thaw the group leads again, through the standby Patroni
    promotes or through the old leader back while its lock stands; the rest rejoins as a
    replica (pg_rewind where its timeline diverged). Without the supervisor
    (``local.supervisor: false``) the standby leads, but the frozen member's connections
    keep its successor out of pg_dist_node until the thaw."""
    old = _leader(c, group)
    m = c.member_by_name(old)
    hold = 2 * c.spec.patroni.ttl
    old_pid, seen = c.member_pid(m), len(c.supervisor.interventions())
    at = time.time()
    run = _leader_lost_for(
        c, group, old, hold, frozen(member_processes(m)), f"frozen {hold} s", "thaw", old_pid
    )
    kills = [e for e in c.supervisor.interventions()[seen:] if e["member"] == old]
    if kills:
        run.detail += f"; the supervisor killed it {kills[0]['at'] - at:.1f} s in"
    return run


def freeze_worker_leader(c: LocalCluster) -> FaultRun:
    return _freeze_leader(c, 1)


def freeze_coordinator_leader(c: LocalCluster) -> FaultRun:
    return _freeze_leader(c, 0)


def dcs_outage(c: LocalCluster) -> FaultRun:
    """The embedded default's one etcd frozen for 30 s (longer than ttl): with failsafe mode
    each leader stays primary while it reaches the members of its group."""
    etcd = c.etcd.pid()
    if not etcd:
        raise ClusterError("etcd is not running")
    t0 = time.monotonic()
    os.kill(etcd, signal.SIGSTOP)
    try:
        time.sleep(DCS_OUTAGE_S)
    finally:
        os.kill(etcd, signal.SIGCONT)
    return FaultRun(t0, time.monotonic(), f"etcd frozen {DCS_OUTAGE_S} s")


class PrimaryWatch(threading.Thread):
    """Counts, twice a second, the members of a group out of recovery: more than one at a
    time is a split brain."""

    def __init__(self, c: LocalCluster, group: int) -> None:
        super().__init__(daemon=True)
        self.c, self.group, self.most = c, group, 0
        self._done = threading.Event()

    def run(self) -> None:
        while not self._done.is_set():
            self.most = max(self.most, len(primaries(self.c, self.group)))
            self._done.wait(0.5)

    def stop(self) -> int:
        self._done.set()
        self.join()
        return self.most


class StatusWatch(threading.Thread):
    """`cluster status` (with the shards, as the command prints it) asked again a second
    after each answer, for the whole scenario: the slowest answer. A call still out when
    the scenario ends counts for as long as it has been out."""

    def __init__(self, c: LocalCluster) -> None:
        super().__init__(daemon=True)
        self.c, self.slowest = c, 0.0
        self._asked: float | None = None
        self._done = threading.Event()

    def run(self) -> None:
        while not self._done.is_set():
            self._asked = asked = time.monotonic()
            try:
                self.c.status()
            except (ClusterError, psycopg.Error):
                pass  # an error is an answer too
            self.slowest = max(self.slowest, time.monotonic() - asked)
            self._asked = None
            self._done.wait(1.0)

    def stop(self) -> float:
        self._done.set()
        asked = self._asked
        if asked is not None:
            self.slowest = max(self.slowest, time.monotonic() - asked)
        self.join(timeout=30)
        return self.slowest


def _partition_leader(c: LocalCluster, group: int, whole: bool) -> FaultRun:
    """The leader of ``group`` cut off for 2 x ttl, then healed: from etcd and from its
    group's other members only (``whole`` False: the coordinator still reaches it, the case
    that could split the brain), or from everything (``whole``: its link down)."""
    old = _leader(c, group)
    member = c.member_by_name(old)
    hold = 2 * c.spec.patroni.ttl
    peers = [str(c.spec.etcd_address), *(m.address for m in c.members([group]) if m != member)]
    cut = c.network.cut_off(member, None if whole else peers)
    what = "cut off from everything" if whole else "cut off from etcd and its group"
    watch = PrimaryWatch(c, group)
    watch.start()
    try:
        run = _leader_lost_for(c, group, old, hold, cut, f"{what} for {hold} s", "heal")
    finally:
        most = watch.stop()
    run.max_primaries = most
    return run


def partition_worker_leader(c: LocalCluster) -> FaultRun:
    return _partition_leader(c, 1, whole=False)


def isolate_worker_leader(c: LocalCluster) -> FaultRun:
    return _partition_leader(c, 1, whole=True)


def isolate_coordinator_leader(c: LocalCluster) -> FaultRun:
    return _partition_leader(c, 0, whole=True)


def lose_worker_group(c: LocalCluster) -> FaultRun:
    """kill -9 of both members of group 2 for one ttl, then `up`: the writes whose shard is on
    group 2 fail meanwhile, the others go on; status says the group is down in one line."""
    names = [m.name for m in c.members([2])]
    t0 = time.monotonic()
    for name in names:
        c.stop_member(name, kill=True)
    topo = until(
        lambda: c.status(with_shards=False),
        lambda t: any(line.startswith("group 2 ") for line in down_lines(t)),
        60,
        "status reporting group 2 down",
    )
    line = next(x for x in down_lines(topo) if x.startswith("group 2 "))
    time.sleep(max(0.0, t0 + c.spec.patroni.ttl - time.monotonic()))
    c.up()
    return FaultRun(t0, time.monotonic(), f"status said: {line}")


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
            return f"{failover.one_line(err)} ({retried})"
        return "ok"


def disk_full_worker_leader(c: LocalCluster) -> FaultRun:
    """Group 1's leader on a filesystem of its own (its synchronous standby stopped, its
    directory moved onto a tmpfs, started, then switched over to), the filesystem filled for
    20 s, then the room given back. A bulk insert meanwhile needs new pages there and fails
    whole with PostgreSQL's "No space left on device" (not retried: it is no failover); the
    probe's single rows, which fit in pages already there, go on; the bulk insert run again
    once the room is back stores every row; the group keeps its leader (Patroni does not fail
    over for a full disk)."""
    topo = c.status(with_shards=False)
    old = _leader(c, 1)
    standby = _sync_standby(topo, 1)
    if standby is None:
        raise ClusterError("group 1 has no synchronous standby to move onto its own disk")
    member = c.member_by_name(standby)

    def back() -> None:
        """The old leader leads again and the moved member's directory goes back on disk."""
        wait_whole(c)
        if _leader(c, 1) != old:
            c.switchover(1, old)
            wait_whole(c)
        c.stop_member(standby)
        try:
            back_on_disk(member)
        finally:
            c.start_member(standby)

    c.stop_member(standby)
    try:
        own_filesystem(member, DISK_ROOM_MB)
    finally:
        c.start_member(standby)
    try:
        wait_whole(c)
        c.switchover(1, standby)
        wait_registered(c, 1, standby)
        wait_whole(c)
        _fill_table(c.coordinator_dsn())
        t0 = time.monotonic()
        ballast = fill(member.dir)
        try:
            during = _bulk_insert(c.coordinator_dsn())
            time.sleep(max(0.0, t0 + DISK_FULL_S - time.monotonic()))
        finally:
            ballast.unlink()
        ended = time.monotonic()
        after = _bulk_insert(c.coordinator_dsn())
        with psycopg.connect(c.coordinator_dsn(), autocommit=True) as conn:
            rows = conn.execute(f"SELECT count(*) FROM {FILL_TABLE}").fetchone()[0]
        leader = until(
            lambda: c.status(with_shards=False).leader(1),
            lambda m: m is not None,
            60,
            "group 1's leader after the disk full",
        ).name
    except BaseException:
        back()  # never leave a member on a tmpfs (the cluster's purge could not remove it)
        raise
    detail = (
        f"{standby}'s filesystem full {DISK_FULL_S} s; a bulk insert meanwhile: {during}; "
        f"after: {after}, {rows} of {FILL_ROWS} rows; {leader} leads group 1"
    )
    return FaultRun(t0, ended, detail, cleanup=back)


RESTART_PARAMETER = "max_connections"  # takes effect only at a restart


def rolling_restart_scenario(c: LocalCluster) -> FaultRun:
    """`cluster restart --rolling --pending` after a change of max_connections in every
    group: each member restarted once, every group led throughout."""
    current = int(c.spec.postgresql.parameters.get(RESTART_PARAMETER, 100))
    with psycopg.connect(c.coordinator_dsn(), autocommit=True) as conn:
        now = int(conn.execute(f"SHOW {RESTART_PARAMETER}").fetchone()[0])
    target = current + 10 if now == current else current  # alternate, so reruns change it
    t0 = time.monotonic()
    for g in c.groups():
        c.api.set_group_config(g, {"postgresql": {"parameters": {RESTART_PARAMETER: target}}})
    until(
        lambda: c.status(with_shards=False),
        lambda t: all(m.pending_restart for m in t.members),
        60,
        f"every member pending a restart for {RESTART_PARAMETER}",
    )
    done = rolling_restart(c, pending_only=True)
    return FaultRun(
        t0, time.monotonic(), f"{RESTART_PARAMETER} {now} -> {target}: {len(done)} restarted"
    )


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


def _rebalance_interrupted(c: LocalCluster, victim: str) -> FaultRun:
    """A worker group added, Citus's background rebalance started, and kill -9 of the
    coordinator's leader (``victim`` "coordinator") or of the leader of the group a move is
    copying from ("source") while it copies; then what an operator does: the old member
    started again, the rebalance run again (joined while Citus still runs the job) until it
    finishes, and no slot, publication, subscription or cleanup record of the interrupted
    move left on any node."""
    from ..cluster.rebalance import REBALANCE_START_SQL, RebalanceFailed, run_background_rebalance

    dsn = c.coordinator_dsn()
    _seed_moves(dsn)
    added = c.add_worker()
    with psycopg.connect(dsn, autocommit=True) as conn:
        (job,) = conn.execute(REBALANCE_START_SQL, ("force_logical", True)).fetchone()
        if job is None:
            raise ClusterError(f"group {added} added, but Citus planned no move")
        task, command = until(
            lambda: conn.execute(RUNNING_MOVE_SQL, (job,)).fetchone(),
            bool,
            120,
            f"a running move of rebalance job {job}",
        )
        group = 0 if victim == "coordinator" else _move_source_group(conn, command)
    time.sleep(1.0)  # into the copy
    killed = _kill_leader(c, group)
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
            lambda f: f.holds,
            180,
            "no shard-move leftovers",
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


def kill_coordinator_mid_rebalance(c: LocalCluster) -> FaultRun:
    return _rebalance_interrupted(c, "coordinator")


def kill_source_mid_rebalance(c: LocalCluster) -> FaultRun:
    return _rebalance_interrupted(c, "source")


MONTHLY_SCHEMA = "fault_monthly"
MONTHLY_BASE_ROWS = 200_000
MONTHLY_ROWS = 60_000  # A/C/D records: the apply's statements run for a few seconds
# The apply's first A/C/D statement, waiting for the lock the scenario holds on uk_price.
APPLYING_SQL = """
SELECT left(query, 60) FROM pg_catalog.pg_stat_activity
WHERE state = 'active' AND wait_event_type = 'Lock' AND query ~ %s
"""


def _seed_monthly(dsn: str, work: Path) -> tuple[Path, tuple[int, int], tuple[int, int]]:
    """A base table and a monthly file, and the checksums of ``uk_price`` before and after
    the file (the latter from the next complete file, loaded into a schema of its own)."""
    from ..data import drop_all, load_price_paid
    from ..data.generate import generate_complete, generate_monthly

    base, month, nxt = work / "base.csv", work / "pp-2025-01.csv", work / "next.csv"
    generate_complete(base, MONTHLY_BASE_ROWS, seed=41)
    generate_monthly(month, base, MONTHLY_ROWS, seed=42, unknown=5, expected_out=nxt)
    sums = []
    for schema, source in ((MONTHLY_SCHEMA + "_next", nxt), (MONTHLY_SCHEMA, base)):
        drop_all(dsn, schema=schema)
        load_price_paid(source, dsn, schema=schema, target="uk_price")
        with psycopg.connect(dsn) as conn:
            sums.append(sch.checksum(conn, schema))
    drop_all(dsn, schema=MONTHLY_SCHEMA + "_next")
    return month, sums[1], sums[0]


def _monthly_interrupted(c: LocalCluster, group: int) -> FaultRun:
    """A monthly file applied while kill -9 takes ``group``'s leader in the middle of the
    apply: its stage copied and its outcomes read, its first A/C/D statement under way
    (held there by a SHARE lock on uk_price, so the kill always lands at that point); then
    what an operator does: the same file applied again. The table must hold none of the file
    after the kill (never a part), and exactly the next complete file after the rerun."""
    from ..data import apply_monthly

    dsn = c.coordinator_dsn()
    with tempfile.TemporaryDirectory(prefix="citus-pipeline-faults-") as tmp:
        month, before, after = _seed_monthly(dsn, Path(tmp))
        first: dict[str, object] = {}

        def apply() -> None:
            try:
                first["report"] = apply_monthly(month, dsn, schema=MONTHLY_SCHEMA)
            except Exception as err:  # noqa: BLE001 - reported, then the file is applied again
                first["error"] = err

        holder = psycopg.connect(dsn)
        holder.execute(sch.q("LOCK TABLE {schema}.uk_price IN SHARE MODE", MONTHLY_SCHEMA))
        applier = threading.Thread(target=apply, daemon=True)
        applier.start()
        with psycopg.connect(dsn, autocommit=True) as conn:
            pattern = rf'^\s*(DELETE FROM|UPDATE|INSERT INTO) "{MONTHLY_SCHEMA}"\.uk_price\M'
            statement = until(
                lambda: conn.execute(APPLYING_SQL, (pattern,)).fetchone(),
                bool,
                120,
                "the monthly apply's first A/C/D statement",
            )[0]
        try:
            killed = _kill_leader(c, group)
        finally:
            try:
                holder.close()  # the lock goes with the session (or went with the coordinator)
            except psycopg.Error:
                pass
        applier.join(300)
        with psycopg.connect(c.coordinator_dsn(), autocommit=True) as conn:
            recover_prepared_transactions(conn)
            between = sch.checksum(conn, MONTHLY_SCHEMA)
        rerun = failover.retry(
            lambda: apply_monthly(month, c.coordinator_dsn(), schema=MONTHLY_SCHEMA),
            what="the monthly apply's rerun",
            attempts=10,
            base_seconds=2.0,
        )
        with psycopg.connect(c.coordinator_dsn(), autocommit=True) as conn:
            final = sch.checksum(conn, MONTHLY_SCHEMA)
            logged = conn.execute(
                sch.q("SELECT count(*) FROM {schema}.uk_price_monthly_log", MONTHLY_SCHEMA)
            ).fetchone()[0]
    state = {before: "none", after: "all"}.get(between, "a part")
    outcome = (
        (
            failover.one_line(first["error"])
            if "error" in first
            else f"finished in {first['report'].seconds:.1f} s"
        )
        if first
        else "still running"
    )
    detail = (
        f"{killed.detail} during `{' '.join(statement.split())}`...; first apply: {outcome}; "
        f"then {state} of the file applied; rerun applied {rerun.applied} "
        f"({rerun.files_already_applied} file already logged), {logged} records logged; "
        f"uk_price {'equals' if final == after else 'DIFFERS FROM'} the next complete file"
    )
    return FaultRun(killed.started, killed.ended, detail, killed.failover_s, killed.registered_s)


def kill_coordinator_mid_monthly(c: LocalCluster) -> FaultRun:
    return _monthly_interrupted(c, 0)


def kill_worker_mid_monthly(c: LocalCluster) -> FaultRun:
    return _monthly_interrupted(c, 1)


# name -> (what is done, the function that does it and ends it)
SCENARIOS: dict[str, tuple[str, Callable[[LocalCluster], FaultRun]]] = {
    "kill-worker-leader": (
        "kill -9 of group 1's leader (Patroni and PostgreSQL), started again after failover",
        kill_worker_leader,
    ),
    "kill-coordinator-leader": (
        "kill -9 of the coordinator's leader, started again after failover",
        kill_coordinator_leader,
    ),
    "kill-sync-standby": (
        "kill -9 of group 1's synchronous standby for one ttl",
        kill_sync_standby,
    ),
    "freeze-worker-leader": (
        "every process of group 1's leader stopped (SIGSTOP) for 2 x ttl, then thawed",
        freeze_worker_leader,
    ),
    "freeze-coordinator-leader": (
        "every process of the coordinator's leader stopped for 2 x ttl, then thawed",
        freeze_coordinator_leader,
    ),
    "partition-worker-leader": (
        "group 1's leader cut off from etcd and its standby for 2 x ttl (netns), then healed",
        partition_worker_leader,
    ),
    "isolate-worker-leader": (
        "group 1's leader cut off from everything for 2 x ttl (netns), then healed",
        isolate_worker_leader,
    ),
    "isolate-coordinator-leader": (
        "the coordinator's leader cut off from everything for 2 x ttl (netns), then healed",
        isolate_coordinator_leader,
    ),
    "dcs-outage": (f"the one etcd frozen for {DCS_OUTAGE_S} s (past ttl)", dcs_outage),
    "disk-full-worker-leader": (
        f"group 1's leader on a tmpfs of its own, filled for {DISK_FULL_S} s, then emptied",
        disk_full_worker_leader,
    ),
    "lose-worker-group": (
        "kill -9 of both members of group 2 for one ttl, then `up`",
        lose_worker_group,
    ),
    "rolling-restart": (
        f"{RESTART_PARAMETER} changed in every group, then `cluster restart --rolling --pending`",
        rolling_restart_scenario,
    ),
    "kill-coordinator-mid-rebalance": (
        "a group added, background rebalance, kill -9 of the coordinator's leader mid-move",
        kill_coordinator_mid_rebalance,
    ),
    "kill-source-mid-rebalance": (
        "a group added, background rebalance, kill -9 of the moving shard's source leader",
        kill_source_mid_rebalance,
    ),
    "kill-coordinator-mid-monthly": (
        "a monthly file applied, kill -9 of the coordinator's leader mid-apply, applied again",
        kill_coordinator_mid_monthly,
    ),
    "kill-worker-mid-monthly": (
        "a monthly file applied, kill -9 of group 1's leader mid-apply, applied again",
        kill_worker_mid_monthly,
    ),
}


NETNS_SCENARIOS = ("partition-worker-leader", "isolate-worker-leader", "isolate-coordinator-leader")


# ---- one run: writer, fault, heal, check -------------------------------------------------
def stored(dsn: str, first: int) -> tuple[set[int], int]:
    """The ids from ``first`` on, and how many rows carry them (more rows than ids: duplicates)."""
    with psycopg.connect(dsn, autocommit=True, connect_timeout=10) as conn:
        rows = [
            r[0] for r in conn.execute(f"SELECT id FROM {PROBE_TABLE} WHERE id >= %s", (first,))
        ]
    return set(rows), len(rows)


def run_scenario(c: LocalCluster, name: str, settle: float = 2.0) -> Outcome:
    """Run ``name`` under writes on a whole cluster; leaves the cluster whole again."""
    _, fault = SCENARIOS[name]
    wait_whole(c)
    dsn = c.coordinator_dsn()
    first = probe_table(dsn, PROBE_TABLE)
    probe = WriteProbe(dsn, INSERT, start_id=first, pause=0.02)
    probe.start()
    watch = StatusWatch(c)
    try:
        time.sleep(settle)
        watch.start()
        run = fault(c)
        wait_whole(c)
        recovered = time.monotonic()
        time.sleep(settle)  # writes after the recovery, so the last gap is closed
    finally:
        probe.stop()
        slowest_status = watch.stop()
    if run.cleanup:
        run.cleanup()
        wait_whole(c)
    ids, rows = stored(dsn, first)
    fails = [t for t in probe.failed_at if t >= run.started]
    return Outcome(
        name=name,
        acked=len(probe.acked),
        lost=len(set(probe.acked) - ids),
        duplicated=rows - len(ids),
        failed=len(fails),  # from the fault on: a setup's switchover is not the fault's
        max_gap_s=round(probe.longest_gap(run.started), 1),
        failing_s=round(max(fails) - min(fails), 1) if fails else 0.0,
        failover_s=None if run.failover_s is None else round(run.failover_s, 1),
        registered_s=None if run.registered_s is None else round(run.registered_s, 1),
        recovery_s=round(recovered - run.ended, 1),
        fault_s=round(run.ended - run.started, 1),
        detail=run.detail,
        errors=probe.distinct_errors(run.started),
        max_primaries=run.max_primaries,
        max_status_s=round(slowest_status, 1),
        acked_after_s=[t - run.started for t in probe.acked_at if t >= run.started],
    )


# ---- the command -------------------------------------------------------------------------
def print_outcomes(outcomes: list[Outcome], ttl: int, loop_wait: int) -> None:
    t = Table(title=f"Faults under single-row writes (ttl {ttl} s, loop_wait {loop_wait} s)")
    cols = ("scenario", "lost", "max gap", "failing", "failover", "registered", "recovery")
    cols = (*cols, "failed", "status", "what")
    for col in cols:
        t.add_column(col)
    for o in outcomes:
        t.add_row(
            o.name,
            f"{o.lost}/{o.acked}" + (f" (+{o.duplicated} dup)" if o.duplicated else ""),
            f"{o.max_gap_s:.1f} s",
            f"{o.failing_s:.1f} s",
            "-" if o.failover_s is None else f"{o.failover_s:.1f} s",
            "-" if o.registered_s is None else f"{o.registered_s:.1f} s",
            f"{o.recovery_s:.1f} s",
            str(o.failed),
            f"{o.max_status_s:.1f} s",
            o.detail,
        )
    console.print(t)
    for o in outcomes:
        if o.errors:
            console.print(f"{o.name}: first errors: " + " | ".join(o.errors))


def write_plot(outcomes: list[Outcome], path: Path) -> None:
    """Acknowledged writes per second around each fault: the gap a client saw, the fault's
    span shaded, Patroni's new leader and its registration in pg_dist_node marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = (len(outcomes) + 1) // 2
    fig, axes = plt.subplots(rows, 2, figsize=(12, 2.6 * rows), squeeze=False)
    for ax, o in zip(axes.flat, outcomes, strict=False):
        end = max([o.fault_s + o.recovery_s, *o.acked_after_s], default=1.0)
        bins = [i * 0.5 for i in range(int(end / 0.5) + 2)]
        ax.hist(o.acked_after_s, bins=bins, weights=[2.0] * len(o.acked_after_s), color="C0")
        ax.axvspan(0, o.fault_s, color="C3", alpha=0.12, label="fault")
        for x, label, style in (
            (o.failover_s, "new leader", "--"),
            (o.registered_s, "in pg_dist_node", ":"),
        ):
            if x is not None:
                ax.axvline(x, color="k", linestyle=style, linewidth=1, label=label)
        ax.set_title(f"{o.name}: gap {o.max_gap_s:.1f} s, lost {o.lost}/{o.acked}", fontsize=9)
        ax.set_xlabel("seconds after the fault began", fontsize=8)
        ax.set_ylabel("acked writes/s", fontsize=8)
        ax.legend(fontsize=7, loc="upper right")
    for ax in list(axes.flat)[len(outcomes) :]:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def faults_command(
    scenario: Annotated[
        list[str] | None,
        typer.Option(help=f"scenario to run (repeatable; default all): {', '.join(SCENARIOS)}"),
    ] = None,
    json_out: Annotated[bool, typer.Option("--json", help="print the figures as JSON")] = False,
    keep: Annotated[bool, typer.Option(help="leave the bench cluster running")] = False,
    spec: Annotated[
        str | None, typer.Option(help="base spec (addresses/ports are moved to the bench block)")
    ] = None,
) -> None:
    """Kill and freeze members and the DCS under writes: lost writes, gaps, recovery."""
    from .rebalance import BENCH_STATE, bench_cluster

    # partitions need the cluster's own network namespaces, which need root
    netns = os.geteuid() == 0
    names = scenario or [n for n in SCENARIOS if netns or n not in NETNS_SCENARIOS]
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown:
        raise typer.BadParameter(f"unknown scenario(s) {unknown}; known: {list(SCENARIOS)}")
    if not netns and not json_out:
        console.print(f"not root: no network namespaces, so not {', '.join(NETNS_SCENARIOS)}")
    cluster = bench_cluster(BENCH_STATE, spec, "netns" if netns else "loopback")
    outcomes, broken = [], []
    try:
        for name in names:
            if not json_out:
                console.print(f"[bold]{name}[/]: {SCENARIOS[name][0]}")
            try:
                outcomes.append(run_scenario(cluster, name))
            except Exception as err:  # noqa: BLE001 - said, kept with the others' figures
                broken.append(f"{name}: {failover.one_line(err)}")
                console.print(f"[red]{broken[-1]}[/]")
                wait_whole(cluster)  # the next scenario needs a whole cluster, or stop here
    finally:
        if not keep:
            cluster.down(purge=True)
    p = cluster.spec.patroni
    figures = {
        "ttl": p.ttl,
        "loop_wait": p.loop_wait,
        "failed_scenarios": broken,
        "scenarios": [
            {k: v for k, v in asdict(o).items() if k != "acked_after_s"} for o in outcomes
        ],
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "faults.json").write_text(json.dumps(figures, indent=2))
    write_plot(outcomes, RESULTS / "faults.png")
    if json_out:
        print(json.dumps(figures, indent=2))
    else:
        print_outcomes(outcomes, p.ttl, p.loop_wait)
        console.print(f"figures: {RESULTS / 'faults.json'}, plot: {RESULTS / 'faults.png'}")
    if broken:
        raise ClusterError("scenarios that did not complete: " + "; ".join(broken))


__all__ = [
    "SCENARIOS",
    "Outcome",
    "faults_command",
    "primaries",
    "run_scenario",
    "wait_whole",
]
