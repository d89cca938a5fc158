"""`citus-pipeline bench endpoints`: the pooler and the read endpoint against the coordinator's
leader reached directly, on the same cluster in the same run.

(1) pgbench (PostgreSQL's own) on a distributed key-value table, one short transaction each
    (a router SELECT or UPDATE by key): at 100 clients on kept connections, at 100 clients
    with a new connection per transaction (``-C``: what short-lived clients such as sensors
    and checks do), and at 1,000 clients, five times the coordinator's ``max_connections``.
(2) The reference query and the four analytic queries through the read endpoint (a
    coordinator standby; the worker groups' standbys answer) against the same through the
    leader, each while a pgbench writer inserts through the leader.

Figures and ratios; nothing is asserted. On one machine the standbys share its cores with the
leaders: the read endpoint moves the reads off the leaders' processes, not off the machine.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import psycopg
from rich.table import Table

from .. import settings
from ..data.queries import UK_PRICE_QUERIES, time_queries
from .rebalance import bench_cluster, console, load_sample

RESULTS = settings.REPO_ROOT / "bench-results"
KEYS = 100_000
SETUP = [
    "DROP TABLE IF EXISTS bench_kv, bench_writes",
    "CREATE TABLE bench_kv (id int PRIMARY KEY, n bigint NOT NULL DEFAULT 0)",
    "SELECT create_distributed_table('bench_kv', 'id')",
    f"INSERT INTO bench_kv (id) SELECT generate_series(1, {KEYS})",
    "CREATE TABLE bench_writes (id bigserial, at timestamptz DEFAULT now(), v text)",
    "SELECT create_distributed_table('bench_writes', 'id')",
    "VACUUM ANALYZE bench_kv",
]
# one transaction = one statement routed to the worker holding the key
KV_SCRIPT = f"""\\set id random(1, {KEYS})
\\set w random(1, 10)
\\if :w <= 2
UPDATE bench_kv SET n = n + 1 WHERE id = :id;
\\else
SELECT n FROM bench_kv WHERE id = :id;
\\endif
"""
WRITER_SCRIPT = "INSERT INTO bench_writes (v) VALUES (md5(random()::text));\n"


@dataclass
class PgbenchRun:
    clients: int
    tps: float | None  # None: the run did not complete
    failed: int  # transactions that failed in a completed run
    error: str | None = None  # why it did not complete: every error line pgbench printed
    reason: str | None = None  # the short of it


def _reason(error: str) -> str:
    """The short of a failed run. libpq tries every host of the DSN and says what each
    answered: the leader's refusal is the reason, the standbys' "read-only" is not."""
    if "too many clients" in error or "remaining connection slots" in error:
        return "the leader refused connections: too many clients already"
    if "timeout expired" in error:
        return "connections timed out (connect_timeout) at the leader"
    return error.splitlines()[0][:120]


def _pgbench_argv(
    dsn: str, script: Path, clients: int, jobs: int, seconds: int, new_conn: bool = False
) -> list[str]:
    """pgbench's command line; the DSN is its database argument, which libpq expands."""
    return [
        "pgbench",
        "--no-vacuum",
        f"--client={clients}",
        f"--jobs={jobs}",
        f"--time={seconds}",
        f"--file={script}",
        "--protocol=simple",  # PgBouncer 1.18 pools no prepared statements
        *(["--connect"] if new_conn else []),
        dsn,
    ]


# no PG* variable of the caller's may fill in what a DSN leaves out
PGBENCH_ENV = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}


def pgbench(
    dsn: str, script: Path, clients: int, seconds: int, new_conn: bool = False
) -> PgbenchRun:
    cmd = _pgbench_argv(dsn, script, clients, min(clients, 2), seconds, new_conn)
    r = subprocess.run(cmd, env=PGBENCH_ENV, capture_output=True, text=True, check=False)
    out = r.stdout + r.stderr
    tps = re.search(r"tps = ([0-9.]+)", out)
    failed = re.search(r"number of failed transactions: (\d+)", out)
    if r.returncode == 0 and tps:
        return PgbenchRun(clients, float(tps.group(1)), int(failed.group(1)) if failed else 0)
    lines = [ln for ln in out.splitlines() if "error" in ln.lower() or "fatal" in ln.lower()]
    error = "\n".join(lines)[:2000] or out.strip()[-400:]
    return PgbenchRun(clients, None, 0, error, _reason(error))


def _pgbench_table(rows: list[tuple[str, PgbenchRun, PgbenchRun]]) -> Table:
    t = Table(title="pgbench: direct to the coordinator's leader vs through the pooler")
    for col in ("clients", "direct tps", "pooler tps", "pooler / direct", "direct", "pooler"):
        t.add_column(col)
    for label, direct, pooled in rows:
        ratio = f"{pooled.tps / direct.tps:.2f}x" if direct.tps and pooled.tps else "direct failed"

        def said(r: PgbenchRun) -> str:
            return r.reason if r.reason else f"{r.failed} transactions failed"

        t.add_row(
            label,
            f"{direct.tps:,.0f}" if direct.tps else "-",
            f"{pooled.tps:,.0f}" if pooled.tps else "-",
            ratio,
            said(direct),
            said(pooled),
        )
    return t


def run_bench(
    rows: int, seed: int, seconds: int, keep: bool, state_dir: Path, spec: str | None
) -> dict:
    if not shutil.which("pgbench"):
        raise SystemExit("pgbench is not installed (Debian: postgresql-client-15)")
    cluster = bench_cluster(state_dir, spec)
    direct, pooler, read = cluster.coordinator_dsn(), cluster.pooler_dsn(), cluster.read_dsn()
    if pooler is None:
        raise SystemExit("the spec has the pooler off (pooler.enabled: false)")
    with psycopg.connect(direct, autocommit=True) as conn:
        for stmt in SETUP:
            conn.execute(stmt)
        max_conn = int(conn.execute("SHOW max_connections").fetchone()[0])
    work = Path(tempfile.mkdtemp(prefix="citus-pipeline-bench-endpoints-"))
    kv, writer = work / "kv.sql", work / "writer.sql"
    kv.write_text(KV_SCRIPT)
    writer.write_text(WRITER_SCRIPT)
    result: dict = {"max_connections": max_conn, "seconds": seconds, "pgbench": [], "reads": {}}
    try:
        runs = []
        for label, clients, new_conn in (
            ("100, kept connections", 100, False),
            ("100, a connection per transaction", 100, True),
            ("1,000, kept connections", 1000, False),
        ):
            console.print(f"pgbench {label}: direct, then through the pooler ({seconds} s each)")
            d = pgbench(direct, kv, clients, seconds, new_conn)
            time.sleep(3)  # the refused or closed sessions gone
            p = pgbench(pooler, kv, clients, seconds, new_conn)
            runs.append((label, d, p))
            result["pgbench"].append({"run": label, "direct": d.__dict__, "pooler": p.__dict__})
        console.print(_pgbench_table(runs))
        result["reads"] = _reads_under_load(direct, read, writer, rows, seed)
    finally:
        shutil.rmtree(work, ignore_errors=True)
        if not keep:
            cluster.down(purge=True)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "endpoints.json").write_text(json.dumps(result, indent=2))
    console.print(f"figures: {RESULTS / 'endpoints.json'}")
    return result


def _reads_under_load(direct: str, read: str, writer: Path, rows: int, seed: int) -> dict:
    load_sample(direct, rows, seed)
    out: dict = {}
    for name, dsn in (("leader", direct), ("read endpoint", read)):
        w = subprocess.Popen(
            _pgbench_argv(direct, writer, clients=4, jobs=1, seconds=600),
            env=PGBENCH_ENV,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            time.sleep(2)
            with psycopg.connect(dsn, autocommit=True) as conn:
                timings = time_queries(conn, UK_PRICE_QUERIES, runs=5)
        finally:
            w.terminate()
            w.wait(30)
        out[name] = {n: t.median * 1000 for n, t in timings.items()}
    t = Table(title=f"analytic queries at {rows:,} rows while pgbench inserts through the leader")
    for col in ("query", "leader ms", "read endpoint ms", "read / leader"):
        t.add_column(col)
    for q in UK_PRICE_QUERIES:
        a, b = out["leader"][q], out["read endpoint"][q]
        t.add_row(q, f"{a:.0f}", f"{b:.0f}", f"{b / a:.2f}x")
    console.print(t)
    return out


__all__ = ["PgbenchRun", "pgbench", "run_bench"]
