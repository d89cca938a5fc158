"""Metrics of a real local cluster: every member's exporter and Patroni, and the pooler's exporter,
scraped by a real Prometheus.

The answers are read back through Prometheus's own HTTP API, so what is asserted is what an
operator's dashboard or alert would see: the targets, the Citus series and their values.
"""

from __future__ import annotations

import shutil
import subprocess

import psycopg
import pytest

from citus_pipeline.cluster.local.monitoring import missing_tools
from citus_pipeline.cluster.local.processes import port_free
from citus_pipeline.cluster.rebalance import run_background_rebalance
from citus_pipeline.waiting import until

SHARDS = 8
SEEN_WITHIN = 60  # s, for a series to show what the cluster just did (scraped every 1 s here)

pytestmark = pytest.mark.skipif(
    bool(missing_tools()),
    reason=f"{' and '.join(missing_tools())} not installed: run scripts/bootstrap.sh --dev",
)
QUERIES = 40  # through the pooler, for its counters to count


@pytest.fixture(scope="module")
def cluster(fresh_cluster_module):
    c = fresh_cluster_module(
        start=False,
        shard_count=SHARDS,
        coordinator={"members": 2},
        workers={"groups": 1, "members": 2},
        metrics={"scrape_interval": 1},
    )
    assert c.spec.pooler.enabled  # the default: its exporter is scraped too
    c.up(with_metrics=True)
    return c


def _values(cluster, promql: str) -> dict[str, float]:
    """Instant query; one entry per series, keyed by its labels that are not the target's."""
    out = {}
    for r in cluster.monitoring.query(promql):
        labels = {
            k: v
            for k, v in r["metric"].items()
            if k not in ("__name__", "instance", "job", "server")
        }
        out[",".join(f"{k}={v}" for k, v in sorted(labels.items()))] = float(r["value"][1])
    return out


def _all_targets_up(cluster, members: int) -> bool:
    targets = cluster.monitoring.targets()
    by_job: dict[str, list[str]] = {}
    for t in targets:
        if t["health"] == "up":
            by_job.setdefault(t["job"], []).append(t["member"])
    return (
        len(by_job.get("patroni", [])) == members
        and len(by_job.get("postgres", [])) == members
        and len(by_job.get("etcd", [])) == 1
        and len(by_job.get("pgbouncer", [])) == 1
    )


def test_every_member_is_scraped_without_errors(cluster):
    members = len(cluster.members())
    until(lambda: _all_targets_up(cluster, members), SEEN_WITHIN, what="every target up")
    errors = until(
        lambda: (
            (v := _values(cluster, "pg_exporter_last_scrape_error")) and len(v) == members and v
        ),
        SEEN_WITHIN,
        what="a scrape of every exporter",
    )
    # a standby's scrape fails where a query is not recovery-safe: none may
    assert set(errors.values()) == {0.0}, errors
    leaders = _values(cluster, "max by (citus_group) (patroni_primary)")
    assert leaders == {"citus_group=0": 1.0, "citus_group=1": 1.0}


def test_the_pooler_is_scraped_and_counts_the_queries_that_pass_through_it(cluster):
    pooler = f'job="pgbouncer",pooler="{cluster.spec.name}-pooler"'
    until(
        lambda: list(_values(cluster, f"pgbouncer_up{{{pooler}}}").values()) == [1.0],
        SEEN_WITHIN,
        what="pgbouncer_up 1",
    )
    db = cluster.spec.database
    queries = f'pgbouncer_stats_queries_total{{{pooler},database="{db}"}}'
    transactions = f'pgbouncer_stats_transactions_total{{{pooler},database="{db}"}}'
    # the pooler's own start-up check came through the transaction pool: the series exists
    before = until(
        lambda: (
            (q := _values(cluster, queries)) and (x := _values(cluster, transactions)) and (q, x)
        ),
        SEEN_WITHIN,
        what=f"the pooler's counters of {db}",
    )
    with psycopg.connect(cluster.pooler_dsn(), autocommit=True, prepare_threshold=None) as conn:
        for i in range(QUERIES):
            assert conn.execute("SELECT %s::int", (i,)).fetchone() == (i,)
    grown = until(
        lambda: (
            sum(_values(cluster, queries).values()) >= sum(before[0].values()) + QUERIES
            and sum(_values(cluster, transactions).values()) >= sum(before[1].values()) + QUERIES
        ),
        SEEN_WITHIN,
        what=f"{QUERIES} more queries and transactions of {db} counted",
    )
    assert grown
    # the admin console's own row (the exporter's SHOW commands) is left out
    assert _values(cluster, 'pgbouncer_stats_queries_total{database="pgbouncer"}') == {}
    assert _values(cluster, f"pgbouncer_config_max_client_conn{{{pooler}}}") == {
        f"pooler={cluster.spec.name}-pooler": float(cluster.spec.pooler.max_client_conn)
    }


def test_shards_and_bytes_per_node_come_from_the_coordinator_leader(cluster):
    with psycopg.connect(cluster.coordinator_dsn(), autocommit=True) as conn:
        conn.execute("CREATE TABLE metrics_t (id bigint PRIMARY KEY, v text)")
        conn.execute("SELECT create_distributed_table('metrics_t', 'id')")
        conn.execute(
            "INSERT INTO metrics_t SELECT g, repeat('x', 100) FROM generate_series(1, 20000) g"
        )
    shards = until(
        lambda: (v := _values(cluster, "citus_node_shards")) and sum(v.values()) == SHARDS and v,
        SEEN_WITHIN,
        what="citus_node_shards of the new table",
    )
    leader = cluster.status(with_shards=False).leader(0)
    # once per cluster: only the coordinator's leader answers the metadata queries
    assert {k.split("member=")[1].split(",")[0] for k in shards} == {leader.name}
    worker = cluster.status(with_shards=False).leader(1)
    on_worker = [v for k, v in shards.items() if f"node={worker.host}:{worker.port}" in k]
    assert on_worker == [float(SHARDS)]
    nbytes = _values(cluster, f'citus_node_bytes{{node="{worker.host}:{worker.port}"}}')
    assert next(iter(nbytes.values())) > 20000 * 100


def test_replication_lag_is_reported_per_standby(cluster):
    lag = until(
        lambda: (v := _values(cluster, "citus_replication_lag_bytes")) and len(v) == 2 and v,
        SEEN_WITHIN,
        what="citus_replication_lag_bytes of every standby",
    )
    topo = cluster.status(with_shards=False)
    standbys = {m.name for m in topo.members if m.role != "leader"}
    assert {k.split("standby=")[1].split(",")[0] for k in lag} == standbys
    assert all("sync_state=sync" in k for k in lag), lag


def test_a_prepared_transaction_shows_until_it_is_resolved(cluster):
    leader = cluster.status(with_shards=False).leader(1)
    member = cluster.member_by_name(leader.name)
    query = f'citus_transactions_prepared{{member="{leader.name}"}}'
    with psycopg.connect(cluster.member_dsn(member), autocommit=True) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS metrics_local (x int)")
        with psycopg.connect(cluster.member_dsn(member)) as tx:
            tx.execute("INSERT INTO metrics_local VALUES (1)")
            tx.execute("PREPARE TRANSACTION 'metrics_test_gid'")
        try:
            until(
                lambda: list(_values(cluster, query).values()) == [1.0],
                SEEN_WITHIN,
                what="the prepared transaction",
            )
            age = f'citus_transactions_prepared_oldest_seconds{{member="{leader.name}"}}'
            until(
                lambda: next(iter(_values(cluster, age).values()), 0) >= 2,
                SEEN_WITHIN,
                what="the prepared transaction's age growing",
            )
        finally:
            conn.execute("ROLLBACK PREPARED 'metrics_test_gid'")
            conn.execute("DROP TABLE metrics_local")
    until(
        lambda: list(_values(cluster, query).values()) == [0.0],
        SEEN_WITHIN,
        what="no prepared transaction",
    )


def test_an_added_worker_is_scraped_and_the_rebalance_is_counted(cluster):
    group = cluster.add_worker()
    members = len(cluster.members())
    until(lambda: _all_targets_up(cluster, members), SEEN_WITHIN, what="the new group's targets up")
    with psycopg.connect(cluster.coordinator_dsn(), autocommit=True) as conn:
        outcome = run_background_rebalance(conn, transfer_mode="block_writes", log=lambda _: None)
    assert outcome.moves > 0
    done = until(
        lambda: (
            (t := _values(cluster, "citus_rebalance_tasks_done"))
            and list(t.values()) == [float(outcome.moves)]
            and list(_values(cluster, "citus_rebalance_job_running").values()) == [0.0]
        ),
        SEEN_WITHIN,
        what="the finished rebalance job in citus_rebalance_*",
    )
    assert done
    until(
        lambda: sum(_values(cluster, f'citus_node_shards{{node_group="{group}"}}').values()) > 0,
        SEEN_WITHIN,
        what=f"shards on group {group}",
    )
    assert list(_values(cluster, "citus_rebalance_tasks_failed").values()) == [0.0]


def test_down_stops_the_metrics_stack_and_up_brings_it_back(cluster):
    address = str(cluster.spec.prometheus_address)
    port = cluster.spec.local.prometheus_port
    cluster.down()
    assert not cluster.monitoring.running()
    assert all(cluster.monitoring.exporter_pid(m) is None for m in cluster.members())
    assert cluster.monitoring.pooler_exporter_pid() is None
    assert port_free(address, port)
    cluster.up()  # no flag: the state directory remembers that metrics follow this cluster
    assert cluster.monitoring.running()
    members = len(cluster.members())
    until(lambda: _all_targets_up(cluster, members), SEEN_WITHIN, what="every target up after up")
    cluster.metrics_off()
    assert not cluster.monitoring.running() and port_free(address, port)
    host, pooler_port = cluster.monitoring.pooler_exporter_address.rsplit(":", 1)
    assert cluster.monitoring.pooler_exporter_pid() is None and port_free(host, int(pooler_port))
    assert not cluster.metrics_on()


def test_alert_rules_and_config_pass_promtool(cluster):
    promtool = shutil.which("promtool")
    if not promtool:
        pytest.skip("promtool not installed (Debian prometheus)")
    for what, name in (("rules", "rules.yml"), ("config", "prometheus.yml")):
        r = subprocess.run(
            [promtool, "check", what, str(cluster.monitoring.dir / name)],
            capture_output=True,
            text=True,
            check=False,
        )
        assert r.returncode == 0, r.stdout + r.stderr
