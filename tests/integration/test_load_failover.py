"""A worker group's leader killed mid-load, on a cluster of its own: the load retries and
completes, and a rerun while the leader is down again equals a clean load."""

from __future__ import annotations

import threading

import pytest
from uk_price_reads import checksum

from citus_pipeline.data import load_price_paid
from citus_pipeline.data.generate import generate_complete
from citus_pipeline.waiting import until

pytestmark = pytest.mark.citus


def kill_running_leader(cluster, group: int) -> None:
    """SIGKILL the group leader's postmaster once it has one: right after an earlier kill,
    Patroni still names the old leader until it has restarted its PostgreSQL."""

    def leader_with_postmaster():
        leader = cluster.status(with_shards=False).leader(group)
        return (
            leader
            if leader and cluster.postmaster_pid(cluster.member_by_name(leader.name))
            else None
        )

    leader = until(
        leader_with_postmaster,
        120,
        0.2,
        f"group {group}'s leader with a postmaster",
        done=lambda m: m is not None,
    )
    cluster.kill_postmaster(leader.name)


@pytest.mark.destructive
@pytest.mark.cluster
def test_kill_worker_leader_midload_then_rerun_equals_clean(fresh_cluster, tmp_path):
    cluster = fresh_cluster()
    dsn = cluster.coordinator_dsn()
    p = tmp_path / "big.csv"
    generate_complete(p, 150_000, seed=21)
    result: dict = {}
    # The load pauses after its second committed chunk until the leader is killed: the kill
    # lands mid-load whatever the machine's speed (150,000 rows take about a second).
    paused, killed = threading.Event(), threading.Event()
    chunks_done = []

    def pause_after_two(event) -> None:
        chunks_done.append(event)
        if len(chunks_done) == 2:
            paused.set()
            killed.wait(120)

    def run():
        try:
            result["report"] = load_price_paid(
                p,
                dsn,
                schema="killed",
                target="uk_price",
                jobs=2,
                chunk_bytes=1 << 20,
                progress=pause_after_two,
            )
        except Exception as err:  # noqa: BLE001 - asserted below
            result["error"] = err

    t = threading.Thread(target=run)
    t.start()
    assert paused.wait(120), "the load never committed two chunks"
    kill_running_leader(cluster, 1)
    killed.set()
    t.join(600)
    # Every chunk after the kill writes to the dead group: the load waits for Patroni and
    # retries them (a fault costs seconds), and completes.
    assert "error" not in result, result.get("error")
    assert result["report"].retries >= 1
    assert result["report"].rows_loaded + result["report"].rows_duplicate == 150_000
    # A re-run completes the table exactly, even one that starts while a worker group's
    # leader is down (its schema DDL must wait, not fail).
    kill_running_leader(cluster, 1)
    load_price_paid(p, dsn, schema="killed", target="uk_price", jobs=2, chunk_bytes=1 << 20)
    load_price_paid(p, dsn, schema="clean", target="uk_price", jobs=2, chunk_bytes=1 << 20)
    assert checksum(dsn, "killed") == checksum(dsn, "clean")
    assert checksum(dsn, "killed")[0] == 150_000
