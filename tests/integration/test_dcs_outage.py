"""The DCS gone (the embedded default's one etcd frozen) for longer than Patroni's ttl, under
single-row writes through the coordinator: with Patroni's failsafe mode (on by default) each
leader keeps its role while it reaches every member of its group, so the writes go on and
nothing acknowledged is lost."""

from __future__ import annotations

import os
import signal
import time

import psycopg
import pytest
from polling import wait_for

from citus_pipeline.cluster.write_probe import WriteProbe

pytestmark = [pytest.mark.destructive]

INSERT = "INSERT INTO dcs_probe VALUES (%s) ON CONFLICT (id) DO NOTHING"


def _leaders(c) -> dict[int, str]:
    topo = c.status(with_shards=False)
    return {g: (topo.leader(g).name if topo.leader(g) else "") for g in topo.groups}


def test_writes_go_on_while_the_dcs_is_gone(fresh_cluster):
    c = fresh_cluster()
    dsn = c.coordinator_dsn()
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE dcs_probe (id bigint PRIMARY KEY)")
        conn.execute("SELECT create_distributed_table('dcs_probe', 'id')")
    before = _leaders(c)
    assert all(before.values())
    ttl = c.spec.patroni.ttl
    outage = ttl + 10  # past the point where a leader without failsafe has demoted itself
    etcd = c.etcd.pid()
    assert etcd, "etcd is not running"

    probe = WriteProbe(dsn, INSERT)
    probe.start()
    time.sleep(2)
    os.kill(etcd, signal.SIGSTOP)
    gone = time.monotonic()
    try:
        time.sleep(outage)
    finally:
        os.kill(etcd, signal.SIGCONT)
    back = time.monotonic()
    time.sleep(5)
    probe.stop()

    # writes were acknowledged after the leaders' lock had expired in the (frozen) DCS
    late = [t for t in probe.acked_at if gone + ttl < t < back]
    assert late, f"no insert acknowledged in the outage's last {outage - ttl} s: {probe.errors}"
    # no leader changed, and every acknowledged insert is there exactly once
    wait_for(lambda: _leaders(c), lambda after: after == before, timeout=60)
    with psycopg.connect(dsn, autocommit=True) as conn:
        stored = {r[0] for r in conn.execute("SELECT id FROM dcs_probe")}
    assert set(probe.acked) <= stored
