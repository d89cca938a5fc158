"""What the cluster's Prometheus metrics are, for both backends.

Every member serves two endpoints: Patroni's own ``/metrics`` on its REST API (role, timeline,
WAL positions, pause) and a postgres exporter with the queries below (PostgreSQL's own
statistics plus Citus: shards and bytes per node, rebalance progress, replication lag, in-flight
distributed transactions). The queries that read cluster-wide Citus metadata answer only on the
coordinator's leader, so each such series exists once per cluster, not once per member that
happens to hold a copy of the metadata. The pooler has an exporter of its own, which reads
PgBouncer's admin console (``SHOW STATS``, ``POOLS``, ``DATABASES``, ``CONFIG``). The alert
rules are rendered from the same spec.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import yaml

from .spec import ClusterSpec

# An uncorrelated scalar subquery is planned as an InitPlan, so this guard becomes a one-time
# filter: on every other member the (fan-out) rest of the query is never executed.
_ON_COORDINATOR_LEADER = "(SELECT citus_is_coordinator() AND NOT pg_is_in_recovery())"


def _label(description: str) -> dict[str, str]:
    return {"usage": "LABEL", "description": description}


def _gauge(description: str) -> dict[str, str]:
    return {"usage": "GAUGE", "description": description}


def _counter(description: str) -> dict[str, str]:
    return {"usage": "COUNTER", "description": description}


# The exporter runs with --disable-default-metrics: its built-in pg_replication_slots query calls
# pg_current_wal_lsn(), which fails on every standby, so every standby's scrape reported an
# error. These take the built-ins' names (dashboards keep working) and are safe on a standby.
POSTGRES_QUERIES: dict[str, dict[str, Any]] = {
    "pg_stat_database": {
        "query": """
SELECT datname, numbackends, xact_commit, xact_rollback, blks_read, blks_hit, tup_returned,
       tup_fetched, tup_inserted, tup_updated, tup_deleted, conflicts, temp_bytes, deadlocks
FROM pg_stat_database WHERE datname IS NOT NULL""",
        "metrics": [
            {"datname": _label("database")},
            {"numbackends": _gauge("backends connected to the database")},
            {"xact_commit": _counter("transactions committed")},
            {"xact_rollback": _counter("transactions rolled back")},
            {"blks_read": _counter("disk blocks read")},
            {"blks_hit": _counter("blocks found in shared buffers")},
            {"tup_returned": _counter("rows returned by queries")},
            {"tup_fetched": _counter("rows fetched by queries")},
            {"tup_inserted": _counter("rows inserted")},
            {"tup_updated": _counter("rows updated")},
            {"tup_deleted": _counter("rows deleted")},
            {"conflicts": _counter("queries cancelled by recovery conflicts (standbys)")},
            {"temp_bytes": _counter("bytes written to temporary files")},
            {"deadlocks": _counter("deadlocks detected")},
        ],
    },
    "pg_stat_activity": {
        "query": """
SELECT datname, state, count(*) AS count,
       coalesce(max(extract(epoch FROM now() - xact_start)), 0) AS max_tx_duration
FROM pg_stat_activity WHERE datname IS NOT NULL AND state IS NOT NULL
GROUP BY datname, state""",
        "metrics": [
            {"datname": _label("database")},
            {"state": _label("backend state")},
            {"count": _gauge("backends in this state")},
            {"max_tx_duration": _gauge("seconds of the oldest transaction in this state")},
        ],
    },
    "pg_replication_slots": {
        "query": """
SELECT slot_name, slot_type, active::int AS active,
       CASE WHEN pg_is_in_recovery() THEN 0
            ELSE coalesce(pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn), 0) END
         AS pg_wal_lsn_diff
FROM pg_replication_slots""",
        "metrics": [
            {"slot_name": _label("replication slot (Patroni's members, Citus shard moves)")},
            {"slot_type": _label("physical or logical")},
            {"active": _gauge("1 while a consumer is connected")},
            {"pg_wal_lsn_diff": _gauge("WAL bytes the slot holds back (on the leader)")},
        ],
    },
    "pg_locks": {
        "query": "SELECT mode, count(*) AS count FROM pg_locks GROUP BY mode",
        "metrics": [{"mode": _label("lock mode")}, {"count": _gauge("locks held or awaited")}],
    },
}

# postgres_exporter's --extend.query-path format: a metric is <query name>_<column>.
CITUS_QUERIES: dict[str, dict[str, Any]] = {
    "citus_node": {
        "query": f"""
SELECT n.groupid::text AS node_group, n.nodename || ':' || n.nodeport AS node,
       count(s.shardid) AS shards, coalesce(sum(s.shard_size), 0) AS bytes
FROM pg_dist_node n
LEFT JOIN citus_shards s ON s.nodename = n.nodename AND s.nodeport = n.nodeport
WHERE n.noderole = 'primary' AND {_ON_COORDINATOR_LEADER}
GROUP BY 1, 2""",
        # citus_shards asks every worker for its sizes: not on every scrape
        "cache_seconds": 30,
        "metrics": [
            # not `citus_group`: that target label names the member that answers
            {"node_group": _label("Citus group of the node (0: coordinator)")},
            {"node": _label("host:port of the node in pg_dist_node")},
            {"shards": _gauge("shard placements on the node")},
            {"bytes": _gauge("bytes of the shard placements on the node")},
        ],
    },
    "citus_rebalance": {
        "query": f"""
WITH job AS (
  SELECT job_id, state FROM pg_dist_background_job
  WHERE job_type = 'rebalance' ORDER BY job_id DESC LIMIT 1),
moves AS (
  SELECT count(*) AS n, coalesce(sum(source_shard_size), 0) AS total,
         coalesce(sum(target_shard_size), 0) AS copied
  FROM get_rebalance_progress())
SELECT coalesce((j.state::text IN ('scheduled', 'running', 'cancelling', 'failing'))::int, 0)
         AS job_running,
       count(t.task_id) AS tasks,
       count(t.task_id) FILTER (WHERE t.status = 'done') AS tasks_done,
       count(t.task_id) FILTER (WHERE t.status IN ('error', 'cancelled')) AS tasks_failed,
       max(m.n) AS moves_in_progress, max(m.total) AS move_bytes_total,
       max(m.copied) AS move_bytes_copied
FROM moves m
LEFT JOIN job j ON true
LEFT JOIN pg_dist_background_task t ON t.job_id = j.job_id
WHERE {_ON_COORDINATOR_LEADER}
GROUP BY j.state""",
        "metrics": [
            {"job_running": _gauge("1 while the latest background rebalance job runs")},
            {"tasks": _gauge("shard moves of the latest rebalance job")},
            {"tasks_done": _gauge("shard moves of the latest rebalance job that finished")},
            {"tasks_failed": _gauge("shard moves of the latest rebalance job that failed")},
            {"moves_in_progress": _gauge("shard moves copying data now")},
            {"move_bytes_total": _gauge("bytes of the shards being moved now")},
            {"move_bytes_copied": _gauge("bytes already copied of the shards being moved")},
        ],
    },
    "citus_replication": {
        # every leader, per standby; CASE keeps pg_current_wal_lsn() from running on a standby
        "query": """
SELECT application_name AS standby, sync_state,
       CASE WHEN pg_is_in_recovery() THEN 0
            ELSE coalesce(pg_wal_lsn_diff(pg_current_wal_lsn(), replay_lsn), 0) END
         AS lag_bytes,
       coalesce(extract(epoch FROM replay_lag), 0) AS replay_lag_seconds
FROM pg_stat_replication""",
        "metrics": [
            {"standby": _label("the standby's application_name (its member name)")},
            {"sync_state": _label("sync, quorum, potential or async")},
            {"lag_bytes": _gauge("WAL bytes the standby has not replayed yet")},
            {"replay_lag_seconds": _gauge("seconds the standby's replay lags behind")},
        ],
    },
    "citus_transactions": {
        "query": """
SELECT (SELECT count(*) FROM get_all_active_transactions() WHERE transaction_number > 0)
         AS distributed_active,
       (SELECT count(*) FROM pg_prepared_xacts) AS prepared,
       (SELECT coalesce(extract(epoch FROM now() - min(prepared)), 0) FROM pg_prepared_xacts)
         AS prepared_oldest_seconds,
       (SELECT count(*) FROM pg_dist_transaction) AS commit_records""",
        "metrics": [
            {"distributed_active": _gauge("distributed transactions in progress on the member")},
            {"prepared": _gauge("prepared (two-phase) transactions on the member")},
            {"prepared_oldest_seconds": _gauge("age of the oldest prepared transaction")},
            {"commit_records": _gauge("2PC commit records awaiting recovery (coordinator)")},
        ],
    },
}


EXPORTER_QUERIES = {**POSTGRES_QUERIES, **CITUS_QUERIES}

# the exporter's arguments on both backends (each adds its listen address and query file)
EXPORTER_ARGS = ("--disable-default-metrics", "--disable-settings-metrics", "--log.level=warn")


def exporter_queries_yaml() -> str:
    return yaml.safe_dump(EXPORTER_QUERIES, sort_keys=False, width=100)


# The pooler's exporter: spreaker's prometheus-pgbouncer-exporter from PyPI, pinned with its
# hash in k8s/pooler/exporter-requirements.txt (the image and scripts/bootstrap.sh --dev install
# it from there). Debian packages only its 1.7, which reads the SHOW STATS columns PgBouncer
# renamed in 1.8 and fails on every scrape of Debian's PgBouncer 1.18.
POOLER_EXPORTER_VERSION = "2.1.2"
POOLER_EXPORTER_COMMAND = "pgbouncer-exporter"  # on PATH: a link into its venv


def pooler_exporter_argv(config_file: str) -> list[str]:
    """The pooler exporter's command line on both backends. It logs JSON lines to stdout, and
    --log-file stays unset: the exporter compares its value with ``is not "stdout"``, so only
    the default means stdout."""
    return [POOLER_EXPORTER_COMMAND, "--config", config_file]


def pooler_exporter_config(
    spec: ClusterSpec, *, listen_host: str, listen_port: int, pooler_host: str, tls: str
) -> str:
    """The pooler exporter's config file: at every scrape it logs in to PgBouncer's admin
    console as the superuser (one of ``stats_users``). ``tls`` is the DSN's query string.

    No password is in it: libpq takes it from the environment (PGPASSFILE locally,
    PGPASSWORD on Kubernetes), where a password needs no escaping, while in the URI a ``@``,
    ``/`` or ``%`` in it would have to be percent-encoded or would break the DSN."""
    dsn = (
        f"postgresql://{spec.credentials.superuser}@{pooler_host}:{spec.pooler.port}/"
        f"pgbouncer?{tls}"
    )
    config = {
        "exporter_host": listen_host,
        "exporter_port": listen_port,
        "pgbouncers": [
            {
                "dsn": dsn,
                "connect_timeout": 3,
                # the admin console's own row counts the exporter's SHOW commands: noise
                "exclude_databases": ["pgbouncer"],
            }
        ],
    }
    return yaml.safe_dump(config, sort_keys=False)


def alert_rules(spec: ClusterSpec) -> dict[str, Any]:
    """Prometheus alerting rules for the cluster of ``spec`` (``rule_files`` format)."""
    m = spec.metrics
    every = f"{2 * m.scrape_interval}s"

    def rule(name: str, expr: str, summary: str, severity: str, wait: str = every) -> dict:
        return {
            "alert": name,
            "expr": expr,
            "for": wait,
            "labels": {"severity": severity},
            "annotations": {"summary": summary},
        }

    return {
        "groups": [
            {
                "name": f"{spec.name}-citus",
                "rules": [
                    rule(
                        "CitusGroupWithoutLeader",
                        'max by (citus_group) (patroni_primary{job="patroni"}) == 0',
                        "Citus group {{ $labels.citus_group }} has no Patroni leader",
                        "critical",
                        f"{spec.patroni.ttl}s",
                    ),
                    rule(
                        "CitusMemberDown",
                        'up{job=~"patroni|postgres"} == 0',
                        "{{ $labels.member }} ({{ $labels.job }}) does not answer scrapes",
                        "warning",
                    ),
                    rule(
                        "CitusReplicationLagOverFailoverLimit",
                        f"citus_replication_lag_bytes > {spec.patroni.maximum_lag_on_failover}",
                        "standby {{ $labels.standby }} lags more than Patroni's "
                        "maximum_lag_on_failover: it would not be promoted",
                        "warning",
                    ),
                    rule(
                        "CitusPreparedTransactionStuck",
                        "citus_transactions_prepared_oldest_seconds > "
                        f"{m.prepared_xact_alert_seconds}",
                        "{{ $labels.member }} holds a prepared transaction for "
                        "{{ $value | humanizeDuration }}",
                        "warning",
                    ),
                    rule(
                        "CitusRebalanceMoveFailed",
                        "citus_rebalance_tasks_failed > 0 and citus_rebalance_job_running == 0",
                        "the latest rebalance job ended with failed shard moves",
                        "warning",
                        "0s",
                    ),
                    *(_pooler_rules(rule, every) if spec.pooler.enabled else []),
                ],
            }
        ]
    }


def _pooler_rules(rule: Callable[..., dict], every: str) -> list[dict]:
    return [
        rule(
            "CitusPoolerDown",
            'pgbouncer_up == 0 or up{job="pgbouncer"} == 0',
            "the pooler {{ $labels.pooler }} does not answer its exporter: clients that come "
            "in through it are refused",
            "critical",
            every,
        ),
        # In transaction pooling a burst waits a moment by design; clients waiting at every
        # evaluation for a minute mean the pool is too small for the load (or the leader slow).
        rule(
            "CitusPoolerClientsWaiting",
            "pgbouncer_pools_client_waiting_connections > 0",
            "clients of {{ $labels.database }} have waited for a server connection for a "
            "minute: pooler.default_pool_size is too small for the load, or the leader is slow",
            "warning",
            "1m",
        ),
    ]


__all__ = [
    "CITUS_QUERIES",
    "EXPORTER_ARGS",
    "EXPORTER_QUERIES",
    "POOLER_EXPORTER_COMMAND",
    "POOLER_EXPORTER_VERSION",
    "POSTGRES_QUERIES",
    "alert_rules",
    "exporter_queries_yaml",
    "pooler_exporter_argv",
    "pooler_exporter_config",
]
