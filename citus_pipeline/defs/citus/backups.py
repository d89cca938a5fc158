"""Backups in the Dagster layer: a restore point before every change the pipeline makes to
`uk_price`, and the scheduled backup of every group.

A restore point is named after the run that takes it (``<run id>.<asset>.<attempt>``), so the
asset's metadata says which point gives back the table as it was just before that run's
change: `citus-pipeline cluster restore --to <name>`.

The schedule's cron and whether it runs come from the spec, which this module never reads
itself: the code location passes the spec in when it builds its definitions
(`backup_schedule`), and the assets read theirs through the cluster resource at run time.
"""

# No `from __future__ import annotations`: Dagster reads the parameters' annotations.
import dagster as dg

from ...cluster.spec import ClusterSpec
from .metadata import markdown_table
from .resources import CitusResource, ClusterResource


def restore_point_before(
    context: dg.AssetExecutionContext, citus: CitusResource, what: str
) -> dict[str, dg.MetadataValue]:
    """Take the restore point before ``what`` changes uk_price; its name as metadata.

    Without a cluster resource (a bare DSN) or with archiving off there is nothing to take:
    the metadata then says so instead of a name.
    """
    if citus.cluster is None:
        return {"restore_point": dg.MetadataValue.text("none (no cluster resource)")}
    run_id = context.run.run_id
    name = f"{run_id[:8]}.{what}.{context.retry_number}"
    cluster = citus.cluster
    # across a leader change, like every single step; a retry after a half-taken point adds
    # a second record of the name, and recovery stops at the first: both precede the change
    point = citus.retry_idempotent(
        lambda: cluster.restore_point(name, run_id),
        what=f"restore point before {what}",
        log=context.log.warning,
    )
    if point is None:
        return {"restore_point": dg.MetadataValue.text("none (backup.archiving is off)")}
    context.log.info(f"restore point {point.name} taken before {what}")
    return {
        "restore_point": dg.MetadataValue.text(point.name),
        "restore_point_coordinator_lsn": dg.MetadataValue.text(point.coordinator_lsn),
    }


@dg.asset(
    group_name="operations",
    kinds={"pgbackrest", "citus"},
    owners=["team:data-platform"],
    description=(
        "A pgBackRest backup of every Citus group (from a streaming standby where there is "
        "one), then a cluster-consistent restore point: restoring to it needs that backup "
        "and the WAL archived since."
    ),
)
def cluster_backup(
    context: dg.AssetExecutionContext, cluster: ClusterResource
) -> dg.MaterializeResult:
    spec = cluster.spec()
    backups = cluster.backup(spec.backup.scheduled_type)
    run_id = context.run.run_id
    point = cluster.restore_point(f"{run_id[:8]}.backup.{context.retry_number}", run_id)
    rows = [
        [
            b.group,
            b.label,
            b.type,
            f"{b.size / 1e6:.1f}",
            f"{b.repo_size / 1e6:.1f}",
            f"{b.seconds:.0f}",
        ]
        for b in backups
    ]
    return dg.MaterializeResult(
        metadata={
            "backups": dg.MetadataValue.md(
                markdown_table(["Group", "Label", "Type", "MB", "Repo MB", "Seconds"], rows)
            ),
            "backup_mb": dg.MetadataValue.float(round(sum(b.size for b in backups) / 1e6, 1)),
            "backup_seconds": dg.MetadataValue.float(round(sum(b.seconds for b in backups), 1)),
            "restore_point": dg.MetadataValue.text(point.name if point else "none"),
        }
    )


cluster_backup_job = dg.define_asset_job(
    "cluster_backup_job",
    selection=[cluster_backup],
    description="Back up every group with pgBackRest and take a restore point.",
)


def backup_schedule(spec: ClusterSpec) -> dg.ScheduleDefinition:
    """``cluster_backup_schedule``: on the spec's ``backup.schedule``, stopped by default when
    the spec archives no WAL (a backup then could be restored to no point after it)."""
    return dg.ScheduleDefinition(
        name="cluster_backup_schedule",
        job=cluster_backup_job,
        cron_schedule=spec.backup.schedule,
        default_status=dg.DefaultScheduleStatus.RUNNING
        if spec.backup.archiving
        else dg.DefaultScheduleStatus.STOPPED,
        description="The scheduled backup and restore point (backup.schedule in the spec).",
    )


assets = [cluster_backup]
jobs = [cluster_backup_job]

__all__ = [
    "assets",
    "backup_schedule",
    "cluster_backup",
    "cluster_backup_job",
    "jobs",
    "restore_point_before",
]
