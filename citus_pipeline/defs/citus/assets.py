"""The `uk_price` asset graph: cluster -> raw load -> distributed table -> rebalanced placement,
plus the monthly A/C/D updates as a partitioned asset.

Every asset calls the same functions as the CLI (`citus_pipeline.data`, `citus_pipeline.cluster`);
this module only decides what runs when, which steps the resource retries across failovers,
and which numbers Dagster plots. Each step is retried in exactly one place: the loader retries
its own chunks, so a load is called as is; single idempotent steps (schema, publish, monthly
apply, rebalance, reads) go through `CitusResource.retry_idempotent`.
"""

# No `from __future__ import annotations`: Dagster reads the parameters' annotations (context,
# resources, config) as types when the decorators run.
import time
from datetime import timedelta

import dagster as dg

from ...cluster.citus_meta import fetch_active_worker_groups, node_bytes
from ...cluster.rebalance import RebalanceOutcome, run_background_rebalance
from ...data import apply_monthly, load_price_paid, publish_uk_price
from ...data.monthly_check import records_not_as_the_file_says, verify_monthly_file
from ...data.schema import ensure_schema, table_columns
from ...errors import RebalanceFailed
from .backups import restore_point_before
from .metadata import (
    column_schema,
    describe_source,
    markdown_table,
    nodes_markdown,
    numeric_metadata,
    per_node_metadata,
    progress_logger,
    seconds_metadata,
)
from .partitions import monthly_partitions, partition_month
from .resources import CitusResource, ClusterResource, PricePaidFiles

GROUP = "uk_price"
KINDS = {"postgres", "citus"}
# Who answers for these assets, and what the UI can filter them by.
COMMON = {
    "group_name": GROUP,
    "kinds": KINDS,
    "owners": ["team:data-platform"],
    "tags": {"dataset": "price-paid"},
}
# HM Land Registry publishes a month's file around the 20th working day of the next month:
# data older than ~5 weeks means a month was missed, older than ~6.5 weeks two.
MONTHLY_FRESHNESS = dg.FreshnessPolicy.time_window(
    fail_window=timedelta(days=45), warn_window=timedelta(days=35)
)
COORDINATOR_POOL = "citus_coordinator"  # heavy coordinator work runs one at a time (dagster.yaml)
MONTHLY_CHECK = "monthly_counts"

VERSIONS_SQL = """
SELECT current_setting('server_version'),
       (SELECT extversion FROM pg_catalog.pg_extension WHERE extname = 'citus')
"""
SHARD_COUNT_SQL = """
SELECT count(*) FROM pg_catalog.pg_dist_shard WHERE logicalrelid = 'uk_price'::regclass
"""
UK_PRICE_ROWS_SQL = "SELECT count(*) FROM uk_price"
RAW_ROWS_SQL = "SELECT count(*) FROM uk_price_raw"
REJECTS_PREVIEW_SQL = """
SELECT line_number, reason, left(raw_record, 120) AS record, source
FROM uk_price_rejects ORDER BY rejected_at DESC, line_number LIMIT 10
"""


class RebalanceConfig(dg.Config):
    """How `uk_price_rebalanced` moves shards.

    ``force_logical`` copies each shard while logical replication keeps it in sync, so
    inserts through the coordinator keep working during the whole move; ``auto`` does the
    same where every table has a replica identity.
    """

    shard_transfer_mode: str = "force_logical"
    parallel_transfer_colocated_shards: bool = True
    poll_seconds: float = 1.0
    timeout_seconds: float = 3600.0


@dg.asset(
    **COMMON,
    description="The HA Citus cluster of the spec: started (local backend) or observed (kubernetes).",
)
def citus_cluster(
    context: dg.AssetExecutionContext, cluster: ClusterResource, citus: CitusResource
) -> dg.MaterializeResult:
    t0 = time.perf_counter()
    topology = cluster.ensure_up()
    pg_version, citus_version = citus.query_idempotent(VERSIONS_SQL, what="read versions")[0]
    status = markdown_table(
        ["group", "member", "address", "role", "state", "timeline", "lag MB"],
        [
            (m.group, m.name, f"{m.host}:{m.port}", m.role, m.state, m.timeline, m.lag_mb)
            for m in topology.members
        ],
    )
    dist = markdown_table(
        ["nodeid", "group", "address", "role", "active", "should have shards"],
        [
            (n.nodeid, n.groupid, f"{n.host}:{n.port}", n.role, n.active, n.should_have_shards)
            for n in topology.dist_nodes
        ],
    )
    workers = topology.active_worker_groups
    context.log.info(f"cluster {topology.scope}: worker groups {workers}, citus {citus_version}")
    return dg.MaterializeResult(
        metadata={
            "status": dg.MetadataValue.md(status),
            "pg_dist_node": dg.MetadataValue.md(dist),
            "worker_count": dg.MetadataValue.int(len(workers)),
            "members": dg.MetadataValue.int(len(topology.members)),
            "citus_version": dg.MetadataValue.text(str(citus_version)),
            "postgresql_version": dg.MetadataValue.text(str(pg_version)),
            "backend": dg.MetadataValue.text(topology.backend),
            "sql_seconds": seconds_metadata(time.perf_counter() - t0),
        }
    )


@dg.asset(
    **COMMON,
    deps=[citus_cluster],
    pool=COORDINATOR_POOL,
    description="Price Paid records loaded by the parallel loader into uk_price_raw (bad rows to uk_price_rejects).",
)
def uk_price_raw(
    context: dg.AssetExecutionContext,
    citus: CitusResource,
    cluster: ClusterResource,
    files: PricePaidFiles,
) -> dg.MaterializeResult:
    generate_seconds = 0.0
    source = files.source
    if not source:
        sample, generate_seconds = files.ensure_sample(context.log.info)
        source = str(sample)
    dsn = citus.conninfo()
    schema = citus.checked_schema()
    shard_count = cluster.spec().shard_count
    t0 = time.perf_counter()
    citus.retry_idempotent(
        lambda: ensure_schema(dsn, shard_count=shard_count, schema=schema),
        what="ensure schema",
        log=context.log.warning,
    )
    # Not wrapped in retry_idempotent: the loader retries each chunk across failovers itself.
    report = load_price_paid(
        source,
        dsn,
        schema=schema,
        target="uk_price_raw",
        shard_count=shard_count,
        ensure=False,  # just done, with retries
        progress=progress_logger(context.log.info),
    )

    def read_outcome(conn) -> tuple[str, int, list]:
        cur = conn.execute(REJECTS_PREVIEW_SQL)
        headers = [d.name for d in cur.description]
        rejects = markdown_table(headers, cur.fetchall())
        columns = table_columns(conn, schema, "uk_price_raw")
        return rejects, conn.execute(RAW_ROWS_SQL).fetchone()[0], columns

    rejects, raw_rows, columns = citus.run_idempotent(read_outcome, what="read uk_price_raw")
    # the loader's own figures (rows_*, seconds, mb_per_s, retries ...), then the asset's
    metadata = numeric_metadata(report)
    metadata.update(
        {
            "source": dg.MetadataValue.text(describe_source(source)),
            "sql_seconds": seconds_metadata(time.perf_counter() - t0),
            "generate_seconds": seconds_metadata(generate_seconds),
            "dagster/row_count": dg.MetadataValue.int(int(raw_rows)),
            "dagster/column_schema": column_schema(columns),
            "rejects_preview": dg.MetadataValue.md(rejects),
        }
    )
    return dg.MaterializeResult(metadata=metadata)


@dg.asset(
    **COMMON,
    deps=[uk_price_raw],
    pool=COORDINATOR_POOL,
    automation_condition=dg.AutomationCondition.eager(),
    description="The typed analytic table, distributed by transaction id over the worker groups.",
)
def uk_price(context: dg.AssetExecutionContext, citus: CitusResource) -> dg.MaterializeResult:
    dsn = citus.conninfo()
    point = restore_point_before(context, citus, "uk_price")
    t0 = time.perf_counter()
    report = citus.retry_idempotent(
        lambda: publish_uk_price(
            dsn, schema=citus.checked_schema(), progress=progress_logger(context.log.info)
        ),
        what="publish uk_price",
        log=context.log.warning,
    )

    def read_layout(conn):
        return (
            conn.execute(UK_PRICE_ROWS_SQL).fetchone()[0],
            conn.execute(SHARD_COUNT_SQL).fetchone()[0],
            node_bytes(conn),
            fetch_active_worker_groups(conn),
            table_columns(conn, citus.checked_schema(), "uk_price"),
        )

    rows, shard_count, nodes, workers, columns = citus.run_idempotent(
        read_layout, what="read uk_price layout"
    )
    metadata = numeric_metadata(report, prefix="publish_")
    metadata.update(
        {
            "dagster/row_count": dg.MetadataValue.int(int(rows)),
            "dagster/column_schema": column_schema(columns),
            "shard_count": dg.MetadataValue.int(int(shard_count)),
            "worker_count": dg.MetadataValue.int(len(workers)),
            "shards_per_worker": dg.MetadataValue.md(nodes_markdown(nodes)),
            "sql_seconds": seconds_metadata(time.perf_counter() - t0),
            **per_node_metadata("", nodes),
            **point,
        }
    )
    return dg.MaterializeResult(metadata=metadata)


@dg.asset(
    **COMMON,
    deps=[uk_price],
    pool=COORDINATOR_POOL,
    description=(
        "uk_price spread evenly over every active worker group by a background rebalance "
        "(citus_rebalance_start); requested by new_workers_sensor when a worker group joins."
    ),
)
def uk_price_rebalanced(
    context: dg.AssetExecutionContext, config: RebalanceConfig, citus: CitusResource
) -> dg.MaterializeResult:
    def rebalance(conn) -> RebalanceOutcome:
        return run_background_rebalance(
            conn,
            transfer_mode=config.shard_transfer_mode,
            parallel_colocated=config.parallel_transfer_colocated_shards,
            poll_seconds=config.poll_seconds,
            timeout_seconds=config.timeout_seconds,
            log=context.log.info,
        )

    point = restore_point_before(context, citus, "uk_price_rebalanced")
    # Retried here only (the engine has no retry loop): after a failover error the next
    # attempt joins the job Citus keeps running in the background. A job Citus reports as
    # failed is RebalanceFailed, not a failover error: it is surfaced as is, never retried.
    t0 = time.perf_counter()
    try:
        out = citus.run_idempotent(rebalance, what="background rebalance", log=context.log.warning)
    except RebalanceFailed as err:
        raise dg.Failure(description=str(err)) from err
    mb = out.bytes_moved / 1e6
    mb_per_s = mb / out.seconds if out.seconds else 0.0
    context.log.info(
        f"rebalance: {out.moves} moves, {mb:.1f} MB in {out.seconds:.1f}s ({mb_per_s:.1f} MB/s)"
    )
    return dg.MaterializeResult(
        metadata={
            "job_id": dg.MetadataValue.int(out.job_id or 0),
            "moves": dg.MetadataValue.int(out.moves),
            "bytes_moved": dg.MetadataValue.int(out.bytes_moved),
            "seconds": seconds_metadata(out.seconds),
            "sql_seconds": seconds_metadata(time.perf_counter() - t0),
            "mb_per_s": dg.MetadataValue.float(round(mb_per_s, 3)),
            "vacuumed": dg.MetadataValue.text(", ".join(out.vacuumed)),
            "vacuum_seconds": seconds_metadata(out.vacuum_seconds),
            "worker_count": dg.MetadataValue.int(len(out.worker_groups)),
            "before": dg.MetadataValue.md(nodes_markdown(out.before)),
            "after": dg.MetadataValue.md(nodes_markdown(out.after)),
            **per_node_metadata("before_", out.before),
            **per_node_metadata("after_", out.after),
            **point,
        }
    )


@dg.asset(
    **COMMON,
    deps=[uk_price],
    pool=COORDINATOR_POOL,
    partitions_def=monthly_partitions,
    # the monthly data in uk_price is as fresh as the last month applied
    freshness_policy=MONTHLY_FRESHNESS,
    check_specs=[
        dg.AssetCheckSpec(
            MONTHLY_CHECK,
            asset="uk_price_monthly",
            blocking=True,
            description="After the month's update: every A/C id holds the file's values, every D id is gone.",
        )
    ],
    description="One month's update file (A add / C change / D delete) applied to uk_price, idempotently.",
)
def uk_price_monthly(
    context: dg.AssetExecutionContext, citus: CitusResource, files: PricePaidFiles
):
    month = partition_month(context.partition_key)
    path = files.monthly_file(month)
    if path is None:
        raise dg.Failure(
            description=(
                f"no update file for {month}: expected {files.monthly_path()}/pp-{month}.csv "
                "(or .csv.gz); download the month's file there and re-run the partition"
            )
        )
    dsn = citus.conninfo()
    schema = citus.checked_schema()
    point = restore_point_before(context, citus, "uk_price_monthly")
    t0 = time.perf_counter()
    report = citus.retry_idempotent(
        lambda: apply_monthly(
            str(path), dsn, schema=schema, progress=progress_logger(context.log.info)
        ),
        what=f"apply {path.name}",
        log=context.log.warning,
    )
    counts = citus.run_idempotent(
        lambda conn: verify_monthly_file(conn, path, schema), what=f"verify {path.name}"
    )
    bad = records_not_as_the_file_says(counts)
    metadata = numeric_metadata(report)
    metadata.update(
        {
            "month": dg.MetadataValue.text(month),
            "file": dg.MetadataValue.text(path.name),
            "sql_seconds": seconds_metadata(time.perf_counter() - t0),
            **point,
        }
    )
    yield dg.MaterializeResult(
        metadata=metadata,
        check_results=[
            dg.AssetCheckResult(
                check_name=MONTHLY_CHECK,
                passed=bad == 0,
                severity=dg.AssetCheckSeverity.ERROR,
                metadata={k: dg.MetadataValue.int(v) for k, v in counts.items()},
                description=None
                if bad == 0
                else f"{bad} records of {path.name} not as the file says",
            )
        ],
    )


assets = [citus_cluster, uk_price_raw, uk_price, uk_price_rebalanced, uk_price_monthly]

__all__ = [
    "COORDINATOR_POOL",
    "MONTHLY_CHECK",
    "RebalanceConfig",
    "assets",
    "citus_cluster",
    "uk_price",
    "uk_price_monthly",
    "uk_price_raw",
    "uk_price_rebalanced",
]
