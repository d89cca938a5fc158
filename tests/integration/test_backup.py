"""Backups and point-in-time restore of the whole cluster: real pgBackRest, real Citus, to the row.

One cluster for the module (2 worker groups), archiving every group's WAL into a posix
repository under its state directory; the tests run in order and each restore leaves the
cluster running for the next.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import psycopg
import pytest

from citus_pipeline.cluster import health
from citus_pipeline.cluster.local import processes
from citus_pipeline.cluster.local.recovery import LocalRecovery
from citus_pipeline.cluster.topology import down_lines
from citus_pipeline.cluster.write_probe import WriteProbe
from citus_pipeline.data import apply_monthly, load_price_paid
from citus_pipeline.data.generate import generate_complete, generate_monthly
from citus_pipeline.errors import BackupError

pytestmark = [
    pytest.mark.citus,
    pytest.mark.skipif(
        not shutil.which("pgbackrest"),
        reason="pgbackrest not installed (Debian's pgbackrest): run scripts/bootstrap.sh",
    ),
]

SAMPLE = Path(__file__).resolve().parents[1] / "data" / "pp-sample-1995.csv"
# count and an order-free sum of a hash of every row: equal sums mean equal rows
CHECKSUM = (
    "SELECT count(*), coalesce(sum(('x' || substr(md5(t::text), 1, 15))::bit(60)::bigint), 0) "
    "FROM {} t"
)
# every row is placed by its shard's group: per-group counts must come back too
PER_GROUP = """
SELECT p.groupid, sum(s.n)::bigint FROM (
    SELECT shardid, result::bigint AS n
    FROM run_command_on_shards('{}', 'SELECT count(*) FROM %s')
) s JOIN pg_dist_placement p USING (shardid) GROUP BY 1 ORDER BY 1
"""


@pytest.fixture(scope="module")
def cluster(fresh_cluster_module):
    return fresh_cluster_module()


@pytest.fixture(scope="module")
def recovery(cluster):
    return LocalRecovery(cluster)


def q(cluster, sql, *args):
    with psycopg.connect(cluster.coordinator_dsn(), autocommit=True) as conn:
        cur = conn.execute(sql, args or None)
        return cur.fetchall() if cur.description else None


def state(cluster, table):
    return q(cluster, CHECKSUM.format(table))[0], q(cluster, PER_GROUP.format(table))


@pytest.fixture(scope="module")
def loaded(cluster, recovery, tmp_path_factory):
    """The real sample and a generated file in uk_price, a full backup, then restore point RP1."""
    d = tmp_path_factory.mktemp("files")
    dsn = cluster.coordinator_dsn()
    load_price_paid(SAMPLE, dsn, target="both", jobs=2)
    base = d / "base.csv"
    generate_complete(base, 20_000, seed=71)
    load_price_paid(base, dsn, target="both", jobs=2)
    recovery.backup("full")
    recovery.restore_point("RP1")
    return {"base": base, "dir": d, "rp1": state(cluster, "uk_price")}


def test_backups_cover_every_group_and_come_from_a_standby(cluster, recovery, loaded):
    infos = recovery.list()
    assert [i.group for i in infos] == [0, 1, 2]
    for i in infos:
        assert i.status == "ok" and i.backups and i.backups[-1].type == "full"
        assert i.backups[-1].size > 0 and i.backups[-1].lsn_stop != "0/0"
    log = "\n".join(p.read_text() for p in cluster.backups.log_dir.glob("*backup.log"))
    assert "replay on the standby reached" in log  # pgBackRest copied from the standby


def test_restore_to_each_point_gives_back_exactly_its_rows(cluster, recovery, loaded):
    month = loaded["dir"] / "month.csv"
    generate_monthly(month, loaded["base"], 2_000, seed=72)
    r = apply_monthly(month, cluster.coordinator_dsn())
    assert r.adds and r.changes and r.deletes
    after_month = state(cluster, "uk_price")
    assert after_month != loaded["rp1"]
    recovery.restore_point("RP2")
    q(cluster, "TRUNCATE uk_price")
    assert q(cluster, "SELECT count(*) FROM uk_price") == [(0,)]

    recovery.restore(to="RP1", backup_after=False)
    assert state(cluster, "uk_price") == loaded["rp1"]
    recovery.restore(to="RP2")
    assert state(cluster, "uk_price") == after_month
    # Patroni's Citus support points pg_dist_node at the restored leaders
    topo = cluster.status()
    assert health.every_group_has_a_leader(topo).holds
    assert health.dist_nodes_follow_leaders(topo).holds


def test_a_point_taken_under_streaming_writes_keeps_every_acknowledged_write(cluster, recovery):
    # every write is one distributed transaction of two rows, which hash to different groups
    # about half of the time: after the restore each pair is whole or absent
    q(cluster, "CREATE TABLE pairs (k bigint PRIMARY KEY, tx bigint NOT NULL)")
    q(cluster, "SELECT create_distributed_table('pairs', 'k')")
    probe = WriteProbe(
        cluster.coordinator_dsn(),
        "INSERT INTO pairs VALUES (%s * 2, %s), (%s * 2 + 1, %s)",
        params=lambda i: (i, i, i, i),
    )
    probe.start()
    time.sleep(3)
    acked_before = list(probe.acked)
    recovery.restore_point("RP3")
    time.sleep(2)
    probe.stop()
    assert probe.failed == 0, probe.errors
    assert len(acked_before) > 20
    recovery.restore(to="RP3", backup_after=False)
    rows = q(cluster, "SELECT tx, count(*) FROM pairs GROUP BY tx")
    counts = dict(rows)
    assert set(acked_before) <= set(counts), "a write acknowledged before the point is missing"
    assert set(counts.values()) == {2}, "a transaction is half-present across groups"
    assert set(counts) <= set(probe.acked) | {probe.next_id - 1}
    spans = q(
        cluster,
        "SELECT count(DISTINCT p.groupid) FROM pairs r JOIN pg_dist_placement p "
        "ON p.shardid = get_shard_id_for_distribution_column('pairs', r.k)",
    )
    assert spans[0][0] == 2  # the rows did span both worker groups


def test_unknown_point_and_missing_wal_are_refused_and_change_nothing(cluster, recovery, tmp_path):
    before = state(cluster, "uk_price")
    leaders = {g: cluster.status(with_shards=False).leader(g).name for g in cluster.groups()}
    with pytest.raises(BackupError, match="unknown restore point 'nope'"):
        recovery.restore(to="nope")
    plan = {gr.group: gr for gr in recovery.plan(to="RP3")}
    victim = plan[1].wal_needed[-1]
    archive = Path(cluster.layout.repo_path()) / "archive" / cluster.backups.stanza(1)
    files = list(archive.rglob(f"{victim}-*"))
    assert files
    aside = tmp_path / "aside"
    aside.mkdir()
    moved = {f: Path(shutil.move(f, aside / f.name)) for f in files}
    try:
        with pytest.raises(BackupError, match=f"^group 1: WAL file {victim} is missing"):
            recovery.restore(to="RP3")
    finally:
        for back, f in moved.items():
            shutil.move(f, back)
    assert state(cluster, "uk_price") == before
    after = cluster.status(with_shards=False)
    assert {g: after.leader(g).name for g in cluster.groups()} == leaders


def test_a_restore_failing_half_way_puts_the_cluster_back_as_it_was(
    cluster, recovery, tmp_path, monkeypatch
):
    before = state(cluster, "uk_price")
    plan = recovery.plan(to="RP1")  # planned while every file is there...
    victim = plan[2].wal_needed[-1]
    archive = Path(cluster.layout.repo_path()) / "archive" / cluster.backups.stanza(2)
    files = list(archive.rglob(f"{victim}-*"))
    moved = {f: Path(shutil.move(f, tmp_path / f.name)) for f in files}
    monkeypatch.setattr(recovery, "plan", lambda *a, **k: plan)
    try:  # ...and gone when group 2's recovery asks for it
        with pytest.raises(BackupError, match="^group 2: .* during the restore"):
            recovery.restore(to="RP1", timeout=120)
    finally:
        for back, f in moved.items():
            shutil.move(f, back)
    assert state(cluster, "uk_price") == before
    assert health.every_group_has_a_leader(cluster.status(with_shards=False)).holds


def test_a_worker_group_lost_with_both_members_comes_back_by_restore(cluster, recovery):
    recovery.restore_point("RP4")
    at_point = state(cluster, "uk_price")
    for m in cluster.members([2]):
        cluster.stop_member(m.name, kill=True)
    for m in cluster.members([2]):
        processes.wait_gone({m.name: processes.read_pid(m.pidfile) or 0}, 10)
        shutil.rmtree(m.data_dir)
    topo = cluster.status(with_shards=False)
    assert health.every_group_has_a_leader(topo).problem == "no running leader in group(s) [2]"
    assert down_lines(topo) == [
        "group 2 is down: no running leader (citusdemo-2-1 stopped, citusdemo-2-2 stopped)"
    ]
    recovery.restore(to="RP4", backup_after=False)
    assert state(cluster, "uk_price") == at_point


def test_a_new_standby_is_built_from_the_repository(cluster, recovery):
    recovery.backup("incr")
    standby = next(m for m in cluster.status(with_shards=False).members_of(1) if m.role != "leader")
    m = cluster.member_by_name(standby.name)
    cluster.stop_member(m.name)
    shutil.rmtree(m.data_dir)
    log_mark = m.log.stat().st_size
    cluster.start_member(m.name)
    log = m.log.read_text(errors="replace")[log_mark:]
    assert "replica has been created using pgbackrest" in log
    me = next(x for x in cluster.status(with_shards=False).members if x.name == m.name)
    assert me.state == "streaming"


def test_archiving_goes_on_from_the_new_leader_after_a_switchover(cluster, recovery):
    before = recovery.restore_point("before-switchover").groups[1]
    old = cluster.status(with_shards=False).leader(1).name
    assert cluster.switchover(1) != old
    # the point returns only once the file holding it is archived, in every group: in
    # group 1 by the standby just promoted, on its new timeline
    after = recovery.restore_point("after-switchover").groups[1]
    assert after.timeline == before.timeline + 1
