"""Cluster health as asset checks on `citus_cluster`, evaluated by a schedule every 5 minutes.

One question each (`cluster.health`): every group has a leader, every synchronous standby
streams, standbys within Patroni's failover lag limit, pg_dist_node follows Patroni's leaders,
and no shard move left slots, publications, subscriptions or cleanup records behind. The
backend is read once per evaluation; a cluster that does not answer fails every check with
the reason, rather than failing the run.
"""

import time

import dagster as dg
import psycopg

from ...cluster import health
from ...errors import UserError
from .assets import citus_cluster
from .metadata import seconds_metadata
from .resources import CitusResource, ClusterResource

ERROR, WARN = dg.AssetCheckSeverity.ERROR, dg.AssetCheckSeverity.WARN

# name -> (severity, description)
HEALTH_CHECKS = {
    "leaders": (ERROR, "Every Citus group has a running Patroni leader."),
    "sync_standbys": (WARN, "Every group of two or more members has a streaming sync standby."),
    "replication_lag": (WARN, "Every standby lags less than Patroni's maximum_lag_on_failover."),
    "pg_dist_node_follows_leaders": (
        ERROR,
        "pg_dist_node's primary of each group is the group's Patroni leader (the drift is named).",
    ),
    "no_shard_move_leftovers": (
        WARN,
        "No shard-move replication slot, publication, subscription or cleanup record is left.",
    ),
}


def _unreachable(err: Exception) -> health.Finding:
    return health.Finding(False, {}, f"not answered: {str(err).strip().splitlines()[0]}")


def _result(name: str, finding: health.Finding, seconds: float) -> dg.AssetCheckResult:
    severity, _ = HEALTH_CHECKS[name]
    metadata: dict[str, dg.MetadataValue] = {"sql_seconds": seconds_metadata(seconds)}
    for key, value in finding.seen.items():
        if isinstance(value, bool | str):
            metadata[key] = dg.MetadataValue.text(str(value))
        elif isinstance(value, int):
            metadata[key] = dg.MetadataValue.int(value)
        else:
            metadata[key] = dg.MetadataValue.float(float(value))
    return dg.AssetCheckResult(
        check_name=name,
        asset_key=citus_cluster.key,
        passed=finding.holds,
        severity=severity,
        metadata=metadata,
        description=finding.problem,
    )


@dg.multi_asset_check(
    specs=[
        dg.AssetCheckSpec(name, asset=citus_cluster, description=description)
        for name, (_, description) in HEALTH_CHECKS.items()
    ],
    description="The HA Citus cluster's health, from Patroni and the coordinator.",
)
def cluster_health(cluster: ClusterResource, citus: CitusResource):
    t0 = time.perf_counter()
    try:
        topo = cluster.topology()
        spec = cluster.spec()
        findings = {
            "leaders": health.every_group_has_a_leader(topo),
            "sync_standbys": health.every_sync_standby_streams(topo, spec),
            "replication_lag": health.replication_lag_within_failover_limit(topo, spec),
            "pg_dist_node_follows_leaders": health.dist_nodes_follow_leaders(topo),
        }
        if not findings["replication_lag"].holds:
            # a standby's position in Patroni's report may be a cycle old: ask again a cycle later
            time.sleep(spec.patroni.loop_wait + 1)
            findings["replication_lag"] = health.replication_lag_within_failover_limit(
                topo, spec, later=cluster.topology()
            )
    except UserError as err:  # the cluster does not answer: every question fails with why
        findings = dict.fromkeys(HEALTH_CHECKS, _unreachable(err))
    else:
        try:
            findings["no_shard_move_leftovers"] = citus.run_idempotent(
                health.no_shard_move_leftovers, what="health: shard-move leftovers"
            )
        except (UserError, psycopg.Error) as err:
            findings["no_shard_move_leftovers"] = _unreachable(err)
    seconds = time.perf_counter() - t0
    for name in HEALTH_CHECKS:
        yield _result(name, findings[name], seconds)


cluster_health_job = dg.define_asset_job(
    "cluster_health_job",
    selection=dg.AssetSelection.checks(cluster_health),
    description="Evaluate the cluster's health checks (no asset is materialized).",
)

cluster_health_schedule = dg.ScheduleDefinition(
    name="cluster_health_schedule",
    job=cluster_health_job,
    cron_schedule="*/5 * * * *",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="The cluster's health checks every 5 minutes.",
)

health_checks = [cluster_health]
jobs = [cluster_health_job]
schedules = [cluster_health_schedule]

__all__ = [
    "HEALTH_CHECKS",
    "cluster_health",
    "cluster_health_job",
    "cluster_health_schedule",
    "health_checks",
    "jobs",
    "schedules",
]
