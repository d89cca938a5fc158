"""`citus-pipeline bench rebalance`: the reference rebalance vs the `uk_price_rebalanced` way.

Same data, one run, on a dedicated local cluster (its own loopback addresses and ports):
N rows (default 2 M) in `uk_price` over 2 worker groups, a third group added, then

(a) the reference: ``SELECT rebalance_table_shards('uk_price')`` with PostgreSQL's default
    ``wal_retrieve_retry_interval = 5s`` (each logical-replication move waits for it);
(b) the asset's way: ``citus_rebalance_start`` (background tasks, moves in parallel,
    ``force_logical``) with the spec's ``wal_retrieve_retry_interval``,

with the third group drained in between so (b) starts from the same placement. During
both a writer inserts single rows through the coordinator; the bench prints seconds, MB
moved, MB/s, the writer's succeeded/failed inserts and rows lost. Figures, never asserts.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import psycopg
from psycopg.conninfo import make_conninfo
from rich.console import Console
from rich.table import Table

from .. import settings
from ..cluster.rebalance import run_background_rebalance
from ..cluster.write_probe import WriteProbe

console = Console(width=160)
BENCH_STATE = settings.REPO_ROOT / ".citus-pipeline" / "bench-cluster"
WORK = settings.DEFAULT_WORK_DIR

REFERENCE_SQL = "SELECT rebalance_table_shards('uk_price')"
REFERENCE_WAL_RETRY = "5s"  # PostgreSQL's default, as in the reference deployment
WRITER_POSTCODE = "ZZ99 9ZZ"  # marks the writer's rows (not a real postcode)
WRITER_INSERT = """
INSERT INTO uk_price (transaction_id, price, date_of_transfer, property_type, old_new, duration,
                      ppd_category_type, postcode, town_city, district, county)
VALUES (%s, 250000, DATE '2025-01-15', 'S', 'N', 'F', 'A', %s, 'BENCH', 'BENCH', 'BENCH')
"""


def bench_spec(spec_path: str | None = None, network: str = "loopback"):
    """The project spec moved to its own address block and ports, 2 worker groups (on
    loopback, or with ``network="netns"`` on a network of its own)."""
    from ..cluster.spec import load_spec, spec_from_mapping

    data = load_spec(spec_path).model_dump(mode="json")
    data["workers"]["groups"] = 2
    data["local"].update(
        network=network,
        base_address="10.232.0.0" if network == "netns" else "127.0.232.0",
        prometheus_address=None,
        postgres_port=7432,
        restapi_port=11008,
        etcd_client_port=12379,
        etcd_peer_port=12380,
        etcd_address=None,
    )
    return spec_from_mapping(data, "<bench spec>")


def bench_cluster(
    state_dir: Path = BENCH_STATE,
    spec_path: str | None = None,
    network: str = "loopback",
    spec=None,
):
    """A dedicated LocalCluster with exactly 2 worker groups, started (reused if running):
    the bench spec, or ``spec`` as given (a test's own addresses)."""
    from ..cluster.local import LocalCluster

    state_dir.mkdir(parents=True, exist_ok=True)
    state_dir.chmod(0o755)
    cluster = LocalCluster(spec or bench_spec(spec_path, network), state_dir)
    cluster.up()
    for g in [g for g in cluster.worker_groups() if g > 2]:
        console.print(f"removing worker group {g} left by an earlier bench run")
        cluster.remove_worker(g)
    return cluster


def load_sample(
    dsn: str, rows: int, seed: int, *, schema: str = "public", fresh: bool = True
) -> int:
    """`rows` generated records in `schema`.uk_price_raw and `schema`.uk_price; returns the count."""
    from ..data import load_price_paid, publish_uk_price
    from ..data.generate import generate_complete
    from ..data.schema import drop_all, ensure_schema

    WORK.mkdir(parents=True, exist_ok=True)
    sample = WORK / f"pp-sample-{rows}-{seed}.csv"
    if not sample.exists():
        console.print(f"generating {rows:,} rows → {sample}")
        generate_complete(sample.with_suffix(".partial"), rows=rows, seed=seed)
        sample.with_suffix(".partial").rename(sample)
    if fresh:
        drop_all(dsn, schema=schema)
    ensure_schema(dsn, schema=schema)
    t0 = time.perf_counter()
    load_price_paid(str(sample), dsn, schema=schema, target="uk_price_raw")
    publish_uk_price(dsn, schema=schema)
    with psycopg.connect(dsn, autocommit=True) as conn:
        n = conn.execute(
            psycopg.sql.SQL("SELECT count(*) FROM {}.uk_price").format(
                psycopg.sql.Identifier(schema)
            )
        ).fetchone()[0]
    console.print(f"loaded and distributed {n:,} rows in {time.perf_counter() - t0:.1f}s")
    return n


# ---- settings on every node ----------------------------------------------------------
def node_dsns(conn: psycopg.Connection, dsn: str) -> list[str]:
    """DSNs of the coordinator and every primary worker, from pg_dist_node (same credentials)."""
    rows = conn.execute(
        "SELECT DISTINCT nodename, nodeport FROM pg_dist_node WHERE noderole = 'primary' AND isactive"
    ).fetchall()
    out = [make_conninfo(dsn, target_session_attrs="read-write")]
    out += [make_conninfo(dsn, host=h, port=str(p), target_session_attrs="any") for h, p in rows]
    return out


def set_on_all_nodes(conn: psycopg.Connection, dsn: str, name: str, value: str | None) -> list[str]:
    """ALTER SYSTEM SET (or RESET when value is None) + reload on every primary; returns values."""
    from psycopg import sql

    stmt = (
        sql.SQL("ALTER SYSTEM RESET {}").format(sql.Identifier(name))
        if value is None
        else sql.SQL("ALTER SYSTEM SET {} = {}").format(sql.Identifier(name), sql.Literal(value))
    )
    seen = []
    for d in node_dsns(conn, dsn):
        with psycopg.connect(d, autocommit=True) as c:
            c.execute(stmt)
            c.execute("SELECT pg_reload_conf()")
    time.sleep(0.5)
    for d in node_dsns(conn, dsn):
        with psycopg.connect(d, autocommit=True) as c:
            seen.append(c.execute(sql.SQL("SHOW {}").format(sql.Identifier(name))).fetchone()[0])
    return seen


# ---- the writer ------------------------------------------------------------------------
# (a) and (b) write ids from separate ranges: (a)'s rows are still in uk_price during (b).
WRITER_IDS = {"a": 1, "b": 1 << 40}


def start_writer(dsn: str, first_id: int) -> WriteProbe:
    """Single rows into uk_price through the coordinator, one every 20 ms, until stopped."""
    probe = WriteProbe(
        dsn,
        WRITER_INSERT,
        params=lambda i: (uuid.UUID(int=i), WRITER_POSTCODE),
        start_id=first_id,
        pause=0.02,
        error_pause=0.1,
    )
    probe.start()
    return probe


@dataclass
class RebalanceRun:
    label: str
    settings: str
    seconds: float
    moves: int
    bytes_moved: int
    writer: WriteProbe
    rows_lost: int


def _placements(conn) -> dict[int, int]:
    return dict(conn.execute("SELECT shardid, groupid FROM pg_dist_placement").fetchall())


def _writer_rows(conn) -> int:
    return conn.execute(
        "SELECT count(*) FROM uk_price WHERE postcode = %s", (WRITER_POSTCODE,)
    ).fetchone()[0]


def run_reference(conn, dsn: str) -> RebalanceRun:
    seen = set_on_all_nodes(conn, dsn, "wal_retrieve_retry_interval", REFERENCE_WAL_RETRY)
    sizes = dict(conn.execute("SELECT shard_id, size FROM citus_shard_sizes()").fetchall())
    before, rows_before = _placements(conn), _writer_rows(conn)
    writer = start_writer(dsn, WRITER_IDS["a"])
    t0 = time.perf_counter()
    try:
        conn.execute(REFERENCE_SQL)
    finally:
        seconds = time.perf_counter() - t0
        writer.stop()
    after = _placements(conn)
    moved = [s for s, g in after.items() if before.get(s) != g]
    moves = len({s for s in moved if s in sizes and _is_uk_price_shard(conn, s)})
    lost = rows_before + len(writer.acked) - _writer_rows(conn)
    return RebalanceRun(
        "(a) rebalance_table_shards('uk_price')",
        f"sequential moves, transfer mode auto, wal_retrieve_retry_interval={'/'.join(sorted(set(seen)))}",
        seconds,
        moves,
        sum(sizes.get(s, 0) for s in moved),
        writer,
        lost,
    )


def _is_uk_price_shard(conn, shardid: int) -> bool:
    return bool(
        conn.execute(
            "SELECT 1 FROM pg_dist_shard WHERE shardid = %s AND logicalrelid = 'uk_price'::regclass",
            (shardid,),
        ).fetchone()
    )


def drain_back(conn, dsn: str, group: int) -> None:
    """Move everything off ``group`` again so (b) starts from the same 2-worker placement."""
    host, port = conn.execute(
        "SELECT nodename, nodeport FROM pg_dist_node WHERE groupid = %s AND noderole = 'primary'",
        (group,),
    ).fetchone()
    t0 = time.perf_counter()
    conn.execute("SELECT citus_drain_node(%s, %s)", (host, port))
    conn.execute("SELECT citus_set_node_property(%s, %s, 'shouldhaveshards', true)", (host, port))
    console.print(f"drained group {group} back to 2 workers in {time.perf_counter() - t0:.1f}s")


def run_asset_way(
    conn, dsn: str, first_id: int = WRITER_IDS["b"], label: str = "(b) uk_price_rebalanced"
) -> RebalanceRun:
    seen = set_on_all_nodes(conn, dsn, "wal_retrieve_retry_interval", None)  # the spec's value
    executors = conn.execute("SHOW citus.max_background_task_executors_per_node").fetchone()[0]
    rows_before = _writer_rows(conn)
    writer = start_writer(dsn, first_id)
    try:
        out = run_background_rebalance(
            conn, transfer_mode="force_logical", poll_seconds=0.25, log=console.print
        )
    finally:
        writer.stop()
    lost = rows_before + len(writer.acked) - _writer_rows(conn)
    return RebalanceRun(
        f"{label} (citus_rebalance_start)",
        f"background parallel moves, force_logical, executors/node={executors}, "
        f"wal_retrieve_retry_interval={'/'.join(sorted(set(seen)))}",
        out.seconds,
        out.moves,
        out.bytes_moved,
        writer,
        lost,
    )


def print_runs(runs: list[RebalanceRun], rows: int, compare: bool = True) -> None:
    """The runs as a table; with ``compare``, (a)'s seconds over (b)'s against the target."""
    t = Table(title=f"Rebalance onto a 3rd worker group, {rows:,} rows in uk_price")
    for col in (
        "way",
        "seconds",
        "moves",
        "MB moved",
        "MB/s",
        "inserts ok",
        "inserts failed",
        "rows lost",
    ):
        t.add_column(col, justify="left" if col == "way" else "right")
    for r in runs:
        mb = r.bytes_moved / 1e6
        t.add_row(
            r.label,
            f"{r.seconds:.1f}",
            str(r.moves),
            f"{mb:.1f}",
            f"{mb / r.seconds if r.seconds else 0:.1f}",
            str(len(r.writer.acked)),
            str(r.writer.failed),
            str(r.rows_lost),
        )
    console.print(t)
    for r in runs:
        console.print(f"{r.label}: {r.settings}")
        for e in r.writer.distinct_errors():
            console.print(f"   writer error: {e}")
    if compare and len(runs) == 2 and runs[1].seconds:
        console.print(
            f"speed-up (a)/(b): {runs[0].seconds / runs[1].seconds:.1f}x (target ≥ 3x, 0 failed inserts, 0 rows lost); "
            "reference deployment: 4 min 43 s for 10 shards ≈ 1.66 GB"
        )


def run_bench(
    rows: int, seed: int, keep: bool, state_dir: Path, spec: str | None
) -> list[RebalanceRun]:
    cluster = bench_cluster(state_dir, spec)
    dsn = cluster.coordinator_dsn()
    try:
        with psycopg.connect(dsn, autocommit=True) as conn:
            set_on_all_nodes(conn, dsn, "wal_retrieve_retry_interval", None)
        base = load_sample(dsn, rows, seed)
        group = cluster.add_worker()
        console.print(f"added worker group {group}")
        with psycopg.connect(dsn, autocommit=True) as conn:
            a = run_reference(conn, dsn)
            drain_back(conn, dsn, group)
            b = run_asset_way(conn, dsn)
            total = conn.execute("SELECT count(*) FROM uk_price").fetchone()[0]
        print_runs([a, b], base)
        expected = base + len(a.writer.acked) + len(b.writer.acked)
        console.print(f"uk_price rows: {total:,}, expected {expected:,} → lost {expected - total}")
        return [a, b]
    finally:
        with psycopg.connect(dsn, autocommit=True) as conn:
            set_on_all_nodes(conn, dsn, "wal_retrieve_retry_interval", None)
        if not keep:
            cluster.down(purge=True)


__all__ = [
    "RebalanceRun",
    "bench_cluster",
    "bench_spec",
    "drain_back",
    "load_sample",
    "run_asset_way",
    "run_bench",
    "set_on_all_nodes",
]
