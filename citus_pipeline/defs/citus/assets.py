"""The `uk_price` asset graph: cluster -> raw load -> distributed table -> rebalanced placement,
plus the monthly A/C/D updates as a partitioned asset.

Every asset calls the same functions as the CLI (`citus_pipeline.data`, the cluster
backend); this module only decides what runs when, retries idempotent steps across
failovers, and reports numbers Dagster can plot.
"""

import csv
import dataclasses
import gzip
import time
import uuid
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import dagster as dg
import psycopg
from psycopg import sql

from ...cluster.citus_meta import fetch_node_shards
from .partitions import monthly_partitions, partition_month
from .resources import CitusResource, ClusterResource, PricePaidFiles

GROUP = "uk_price"
KINDS = {"postgres", "citus"}
COORDINATOR_POOL = "citus_coordinator"  # heavy coordinator work runs one at a time (dagster.yaml)

VERSIONS_SQL = """
SELECT current_setting('server_version'),
       (SELECT extversion FROM pg_catalog.pg_extension WHERE extname = 'citus')
"""
SHARD_COUNT_SQL = """
SELECT count(*) FROM pg_catalog.pg_dist_shard WHERE logicalrelid = 'uk_price'::regclass
"""
TABLE_ROWS_SQL = {
    "uk_price": "SELECT count(*) FROM uk_price",
    "uk_price_raw": "SELECT count(*) FROM uk_price_raw",
}
REJECTS_PREVIEW_SQL = """
SELECT line_number, reason, left(raw_record, 120) AS record, source
FROM uk_price_rejects ORDER BY rejected_at DESC, line_number LIMIT 10
"""

# --- rebalance ------------------------------------------------------------------------
REBALANCE_START_SQL = """
SELECT pg_catalog.citus_rebalance_start(
    shard_transfer_mode => %s::citus.shard_transfer_mode,
    parallel_transfer_colocated_shards => %s)
"""
REBALANCE_STATUS_SQL = (
    "SELECT job_id, state::text, details FROM pg_catalog.citus_rebalance_status()"
)
REBALANCE_ERRORS_SQL = """
SELECT task_id, status::text, message
FROM pg_catalog.pg_dist_background_task
WHERE job_id = %s AND message IS NOT NULL AND message <> ''
ORDER BY (status::text = 'error') DESC, task_id
LIMIT 5
"""
REBALANCE_TASKS_SQL = "SELECT count(*) FROM pg_catalog.pg_dist_background_task WHERE job_id = %s"
PLACEMENTS_SQL = """
SELECT p.shardid, p.groupid FROM pg_catalog.pg_dist_placement p
JOIN pg_catalog.pg_dist_shard s USING (shardid)
"""
SHARD_SIZES_SQL = "SELECT shard_id, size FROM pg_catalog.citus_shard_sizes()"
RUNNING_STATES = ("scheduled", "running", "cancelling", "failing")
FAILED_STATES = ("failed", "cancelled")


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


# ---- helpers --------------------------------------------------------------------------
def _report_dict(report: Any) -> dict[str, Any]:
    if report is None:
        return {}
    if hasattr(report, "model_dump"):
        return report.model_dump()
    if dataclasses.is_dataclass(report):
        return dataclasses.asdict(report)
    if isinstance(report, dict):
        return dict(report)
    return {k: v for k, v in vars(report).items() if not k.startswith("_")}


def numeric_metadata(report: Any, prefix: str = "") -> dict[str, dg.MetadataValue]:
    """Every int/float field of a report as numeric metadata, so the UI plots it across runs."""
    out: dict[str, dg.MetadataValue] = {}
    for key, value in _report_dict(report).items():
        if isinstance(value, bool):
            continue
        if isinstance(value, int):
            out[prefix + key] = dg.MetadataValue.int(value)
        elif isinstance(value, float):
            out[prefix + key] = dg.MetadataValue.float(round(value, 4))
    return out


def markdown_table(headers: Iterable[str], rows: Iterable[Iterable[Any]]) -> str:
    headers = list(headers)

    def cell(v: Any) -> str:
        return str("" if v is None else v).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(cell(v) for v in r) + " |" for r in rows]
    return "\n".join(lines)


def describe_source(source: str) -> str:
    """A source for display: a URL without credentials or query string, or a path."""
    if "://" in source:
        parts = urlsplit(source)
        return f"{parts.scheme}://{parts.hostname or ''}{parts.path}"
    return source


def progress_logger(
    log: Callable[[str], None], every_seconds: float = 10.0
) -> Callable[[Any], None]:
    last = [0.0]

    def progress(event: Any) -> None:
        now = time.monotonic()
        if now - last[0] < every_seconds:
            return
        last[0] = now
        done_rows = getattr(event, "done_rows", None)
        done_bytes = getattr(event, "done_bytes", None)
        total_bytes = getattr(event, "total_bytes", None)
        msg = getattr(event, "message", "") or ""
        pct = f" ({100 * done_bytes / total_bytes:.0f}%)" if done_bytes and total_bytes else ""
        log(f"{msg} rows={done_rows}{pct}".strip())

    return progress


def node_bytes(conn: psycopg.Connection) -> dict[int, dict[str, int]]:
    """{group: {"shards": n, "bytes": b}} for every primary worker group."""
    return {
        n.groupid: {"shards": n.shards, "bytes": n.bytes}
        for n in fetch_node_shards(conn)
        if n.groupid > 0
    }


def per_node_metadata(prefix: str, nodes: dict[int, dict[str, int]]) -> dict[str, dg.MetadataValue]:
    md: dict[str, dg.MetadataValue] = {}
    for g, v in sorted(nodes.items()):
        md[f"{prefix}bytes_group_{g}"] = dg.MetadataValue.int(v["bytes"])
        md[f"{prefix}shards_group_{g}"] = dg.MetadataValue.int(v["shards"])
    return md


def nodes_markdown(nodes: dict[int, dict[str, int]]) -> str:
    return markdown_table(
        ["worker group", "shards", "MB"],
        [(g, v["shards"], f"{v['bytes'] / 1e6:.1f}") for g, v in sorted(nodes.items())],
    )


# ---- assets ---------------------------------------------------------------------------
@dg.asset(
    group_name=GROUP,
    kinds=KINDS,
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
            "sql_seconds": dg.MetadataValue.float(round(time.perf_counter() - t0, 3)),
        }
    )


def sample_source(files: PricePaidFiles, log: Callable[[str], None]) -> tuple[Path, float]:
    """The generated sample of the configured size (generated once, reused while it matches),
    and the seconds spent generating it now (0 when reused)."""
    from ...data.generate import generate_complete

    out = files.work_path() / f"pp-sample-{files.sample_rows}-{files.sample_seed}.csv"
    t0 = time.perf_counter()
    if not out.exists():
        log(f"generating a {files.sample_rows:,}-row sample (seed {files.sample_seed}) at {out}")
        tmp = out.with_suffix(".partial")
        generate_complete(tmp, rows=files.sample_rows, seed=files.sample_seed)
        tmp.rename(out)
    return out, time.perf_counter() - t0


@dg.asset(
    group_name=GROUP,
    kinds=KINDS,
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
    from ...data import load_price_paid
    from ...data.schema import ensure_schema

    generate_seconds = 0.0
    source = files.source
    if not source:
        sample, generate_seconds = sample_source(files, context.log.info)
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
    report = citus.retry_idempotent(
        lambda: load_price_paid(
            source,
            dsn,
            schema=schema,
            target="uk_price_raw",
            shard_count=shard_count,
            progress=progress_logger(context.log.info),
        ),
        what=f"load {describe_source(source)}",
        log=context.log.warning,
    )
    seconds = time.perf_counter() - t0
    r = _report_dict(report)
    with citus.connection() as conn:
        cur = conn.execute(REJECTS_PREVIEW_SQL)
        headers = [d.name for d in cur.description]
        rejects = markdown_table(headers, cur.fetchall())
        raw_rows = conn.execute(TABLE_ROWS_SQL["uk_price_raw"]).fetchone()[0]
    metadata = numeric_metadata(report)
    metadata.update(
        {
            "source": dg.MetadataValue.text(describe_source(source)),
            "rows_read": dg.MetadataValue.int(int(r.get("rows_read", 0))),
            "rows_loaded": dg.MetadataValue.int(int(r.get("rows_loaded", 0))),
            "rows_rejected": dg.MetadataValue.int(int(r.get("rows_rejected", 0))),
            "mb_per_s": dg.MetadataValue.float(float(r.get("mb_per_s", 0.0))),
            "seconds": dg.MetadataValue.float(round(seconds, 3)),
            "sql_seconds": dg.MetadataValue.float(round(seconds, 3)),
            "generate_seconds": dg.MetadataValue.float(round(generate_seconds, 3)),
            "dagster/row_count": dg.MetadataValue.int(int(raw_rows)),
            "rejects_preview": dg.MetadataValue.md(rejects),
        }
    )
    return dg.MaterializeResult(metadata=metadata)


@dg.asset(
    group_name=GROUP,
    kinds=KINDS,
    deps=[uk_price_raw],
    pool=COORDINATOR_POOL,
    automation_condition=dg.AutomationCondition.eager(),
    description="The typed analytic table, distributed by transaction id over the worker groups.",
)
def uk_price(context: dg.AssetExecutionContext, citus: CitusResource) -> dg.MaterializeResult:
    from ...data import publish_uk_price

    dsn = citus.conninfo()
    t0 = time.perf_counter()
    report = citus.retry_idempotent(
        lambda: publish_uk_price(
            dsn, schema=citus.checked_schema(), progress=progress_logger(context.log.info)
        ),
        what="publish uk_price",
        log=context.log.warning,
    )
    seconds = time.perf_counter() - t0

    def read_layout():
        with citus.connection() as conn:
            return (
                conn.execute(TABLE_ROWS_SQL["uk_price"]).fetchone()[0],
                conn.execute(SHARD_COUNT_SQL).fetchone()[0],
                node_bytes(conn),
            )

    rows, shard_count, nodes = citus.retry_idempotent(read_layout, what="read uk_price layout")
    metadata = numeric_metadata(report, prefix="publish_")
    metadata.update(
        {
            "dagster/row_count": dg.MetadataValue.int(int(rows)),
            "shard_count": dg.MetadataValue.int(int(shard_count)),
            "worker_count": dg.MetadataValue.int(len(nodes)),
            "shards_per_worker": dg.MetadataValue.md(nodes_markdown(nodes)),
            "seconds": dg.MetadataValue.float(round(seconds, 3)),
            "sql_seconds": dg.MetadataValue.float(round(seconds, 3)),
            **per_node_metadata("", nodes),
        }
    )
    return dg.MaterializeResult(metadata=metadata)


@dataclasses.dataclass
class RebalanceOutcome:
    job_id: int | None
    state: str
    moves: int
    bytes_moved: int
    seconds: float
    before: dict[int, dict[str, int]]
    after: dict[int, dict[str, int]]


class RebalanceFailed(RuntimeError):
    """The background rebalance job failed; the message is Citus's own."""


def run_background_rebalance(
    conn: psycopg.Connection,
    *,
    transfer_mode: str = "force_logical",
    parallel_colocated: bool = True,
    poll_seconds: float = 1.0,
    timeout_seconds: float = 3600.0,
    log: Callable[[str], None] = print,
) -> RebalanceOutcome:
    """Start (or join) Citus's background rebalance and wait for it, logging progress.

    A rebalance job already running (e.g. started by a run that crashed) is waited for
    instead of starting a second one. Raises :class:`RebalanceFailed` with the task errors
    Citus recorded when the job fails.
    """
    t0 = time.perf_counter()
    before = node_bytes(conn)
    placements_before = dict(conn.execute(PLACEMENTS_SQL).fetchall())
    sizes = dict(conn.execute(SHARD_SIZES_SQL).fetchall())

    status = conn.execute(REBALANCE_STATUS_SQL).fetchone()
    if status and status[1] in RUNNING_STATES:
        job_id = status[0]
        log(f"joining rebalance job {job_id} already {status[1]}")
    else:
        job_id = conn.execute(REBALANCE_START_SQL, (transfer_mode, parallel_colocated)).fetchone()[
            0
        ]
        if job_id is None:
            log("citus_rebalance_start: no moves needed, the placement is already balanced")

    state = "finished"
    last_counts = None
    if job_id is not None:
        deadline = time.monotonic() + timeout_seconds
        while True:
            job, state, details = conn.execute(REBALANCE_STATUS_SQL).fetchone()
            counts = (details or {}).get("task_state_counts", {})
            if counts != last_counts:
                log(f"rebalance job {job}: {state}, tasks {counts}")
                last_counts = counts
            if state not in RUNNING_STATES:
                break
            if time.monotonic() > deadline:
                raise RebalanceFailed(
                    f"rebalance job {job_id} still {state} after {timeout_seconds:.0f}s; "
                    "it keeps running in the background (citus_rebalance_status())"
                )
            time.sleep(poll_seconds)
        if state in FAILED_STATES:
            errors = conn.execute(REBALANCE_ERRORS_SQL, (job_id,)).fetchall()
            detail = "; ".join(f"task {t} ({s}): {m.strip()}" for t, s, m in errors) or "no message"
            raise RebalanceFailed(f"Citus rebalance job {job_id} {state}: {detail}")

    placements_after = dict(conn.execute(PLACEMENTS_SQL).fetchall())
    moved = [s for s, g in placements_after.items() if placements_before.get(s, g) != g]
    moves = conn.execute(REBALANCE_TASKS_SQL, (job_id,)).fetchone()[0] if job_id is not None else 0
    return RebalanceOutcome(
        job_id=job_id,
        state=state,
        moves=int(moves),
        bytes_moved=int(sum(sizes.get(s, 0) for s in moved)),
        seconds=time.perf_counter() - t0,
        before=before,
        after=node_bytes(conn),
    )


@dg.asset(
    group_name=GROUP,
    kinds=KINDS,
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
    # Not retried as a whole: a failover mid-move is reported by Citus as a failed task,
    # which is surfaced as is; a re-run joins or restarts the job (it is idempotent).
    def rebalance() -> RebalanceOutcome:
        with citus.connection() as conn:
            return run_background_rebalance(
                conn,
                transfer_mode=config.shard_transfer_mode,
                parallel_colocated=config.parallel_transfer_colocated_shards,
                poll_seconds=config.poll_seconds,
                timeout_seconds=config.timeout_seconds,
                log=context.log.info,
            )

    try:
        out = citus.retry_idempotent(
            rebalance, what="background rebalance", log=context.log.warning
        )
    except RebalanceFailed as err:
        raise dg.Failure(description=str(err)) from err
    mb = out.bytes_moved / 1e6
    context.log.info(
        f"rebalance: {out.moves} moves, {mb:.1f} MB in {out.seconds:.1f}s "
        f"({mb / out.seconds if out.seconds else 0:.1f} MB/s)"
    )
    return dg.MaterializeResult(
        metadata={
            "job_id": dg.MetadataValue.int(out.job_id or 0),
            "moves": dg.MetadataValue.int(out.moves),
            "bytes_moved": dg.MetadataValue.int(out.bytes_moved),
            "seconds": dg.MetadataValue.float(round(out.seconds, 3)),
            "sql_seconds": dg.MetadataValue.float(round(out.seconds, 3)),
            "mb_per_s": dg.MetadataValue.float(round(mb / out.seconds, 3) if out.seconds else 0.0),
            "worker_count": dg.MetadataValue.int(len(out.after)),
            "before": dg.MetadataValue.md(nodes_markdown(out.before)),
            "after": dg.MetadataValue.md(nodes_markdown(out.after)),
            **per_node_metadata("before_", out.before),
            **per_node_metadata("after_", out.after),
        }
    )


# ---- monthly updates -----------------------------------------------------------------
MONTHLY_CHECK = "monthly_counts"
MONTHLY_VERIFY_SQL = (
    "SELECT transaction_id, price, date_of_transfer FROM {schema}.uk_price "
    "WHERE transaction_id = ANY(%s::uuid[])"
)
# What the apply recorded for this file: ids it could not change or delete (unknown) and A
# records whose id already existed (left as they were) are expected, not failures.
MONTHLY_LOGGED_SQL = (
    "SELECT transaction_id, outcome FROM {schema}.uk_price_monthly_log "
    "WHERE source_fingerprint = %s AND outcome IN ('unknown id', 'exists')"
)


def read_monthly_actions(path: Path) -> dict[uuid.UUID, tuple[str, int, str]]:
    """{transaction id: (status, price, 'YYYY-MM-DD')} — the last record per id wins.

    Lines are decoded as the loader decodes them (UTF-8, else Windows-1252); records the
    loader rejects are skipped here too (they are in uk_price_rejects).
    """
    from ...data.parse import decode_line

    opener = gzip.open if path.suffix == ".gz" else open
    out: dict[uuid.UUID, tuple[str, int, str]] = {}
    with opener(path, "rb") as f:
        for raw in f:
            rec = next(csv.reader([decode_line(raw.rstrip(b"\r\n"))]), [])
            if len(rec) != 16:
                continue
            try:
                out[uuid.UUID(rec[0].strip().strip("{}"))] = (rec[15], int(rec[1]), rec[2][:10])
            except ValueError:
                continue
    return out


def verify_monthly(
    conn: psycopg.Connection,
    actions: dict[uuid.UUID, tuple[str, int, str]],
    fingerprint: str,
    schema: str = "public",
) -> dict[str, int]:
    """Compare uk_price with the file: A/C ids present with the file's values, D ids gone;
    ids the apply logged as unknown (or A ids that already existed) are counted, not failed."""
    logged = {
        tid: outcome
        for tid, outcome in conn.execute(
            sql.SQL(MONTHLY_LOGGED_SQL).format(schema=sql.Identifier(schema)), (fingerprint,)
        ).fetchall()
    }
    found: dict[uuid.UUID, tuple[int, str]] = {}
    ids = list(actions)
    query = sql.SQL(MONTHLY_VERIFY_SQL).format(schema=sql.Identifier(schema))
    for i in range(0, len(ids), 5000):
        for tid, price, day in conn.execute(query, (ids[i : i + 5000],)).fetchall():
            found[tid] = (int(price), str(day)[:10])
    counts = {
        "adds": 0,
        "changes": 0,
        "deletes": 0,
        "unknown_ids": 0,
        "adds_existing": 0,
        "missing": 0,
        "wrong_values": 0,
        "not_deleted": 0,
    }
    for tid, (status, price, day) in actions.items():
        key = {"A": "adds", "C": "changes", "D": "deletes"}.get(status)
        if key is None:
            continue
        counts[key] += 1
        outcome = logged.get(tid)
        if outcome == "unknown id":
            counts["unknown_ids"] += 1
            counts["not_deleted"] += status == "D" and tid in found
        elif status == "D":
            counts["not_deleted"] += tid in found
        elif tid not in found:
            counts["missing"] += 1
        elif outcome != "exists" and found[tid] != (price, day):
            counts["wrong_values"] += 1
        elif outcome == "exists":
            counts["adds_existing"] += 1
    return counts


@dg.asset(
    group_name=GROUP,
    kinds=KINDS,
    deps=[uk_price],
    pool=COORDINATOR_POOL,
    partitions_def=monthly_partitions,
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
    from ...data import apply_monthly
    from ...data.sources import fingerprint

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
    t0 = time.perf_counter()
    report = citus.retry_idempotent(
        lambda: apply_monthly(
            str(path),
            dsn,
            schema=citus.checked_schema(),
            progress=progress_logger(context.log.info),
        ),
        what=f"apply {path.name}",
        log=context.log.warning,
    )
    seconds = time.perf_counter() - t0
    actions = read_monthly_actions(path)
    with citus.connection() as conn:
        counts = verify_monthly(conn, actions, fingerprint(path), citus.checked_schema())
    bad = counts["missing"] + counts["wrong_values"] + counts["not_deleted"]
    metadata = numeric_metadata(report)
    metadata.update(
        {
            "month": dg.MetadataValue.text(month),
            "file": dg.MetadataValue.text(path.name),
            "seconds": dg.MetadataValue.float(round(seconds, 3)),
            "sql_seconds": dg.MetadataValue.float(round(seconds, 3)),
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
    "RebalanceConfig",
    "RebalanceFailed",
    "RebalanceOutcome",
    "assets",
    "citus_cluster",
    "markdown_table",
    "node_bytes",
    "numeric_metadata",
    "read_monthly_actions",
    "run_background_rebalance",
    "uk_price",
    "uk_price_monthly",
    "uk_price_raw",
    "uk_price_rebalanced",
    "verify_monthly",
]
