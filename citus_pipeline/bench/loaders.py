"""`bench seed --section loaders`: five ways to get one file into a distributed table, on the
same cluster, one after the other, each from an empty schema and a settled cluster.

(a) the reference: psql `\\copy` into the reference schema's plain table on the coordinator,
    then `create_distributed_table` and `truncate_local_data_after_distributing_table`;
(b) psql `\\copy` straight into the reference table, distributed while still empty;
(c) the file cut into N line-aligned parts (`split -n l/N`), N psql `\\copy` at once into
    the distributed reference table: what people do by hand;
(d) pgloader (Debian's) into the distributed reference table;
(e) this loader: every row parsed, validated and typed into `uk_price` (distributed), bad
    rows to `uk_price_rejects`, each chunk exactly once;
(f) and (g): the file's second half (`split -n l/2`) into a table that already holds its
    first half, by psql `\\copy` into the distributed reference table and by this loader into
    uk_price: the load after a first one (its first half loaded untimed beforehand).

(a)-(d) take the file as PostgreSQL parses it (a bad row stops the whole load); (e) is the
only one that types and checks every field. Each result has rows/s, CPU-seconds per million
rows (the client's and every member's) and the client's peak RSS.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from urllib.parse import quote

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

from ..data.schema import RAW_DDL, drop_all, ensure_schema, q, regclass
from ..errors import WaitTimeout
from ..waiting import until
from .usage import ClusterUsage, Measured, run_children

SCHEMA = "bench_loaders"
RAW_TABLE = f"{SCHEMA}.uk_price_raw"
DISTRIBUTE_RAW = (
    "SELECT create_distributed_table(%s, 'transaction_unique_identifier', shard_count => %s)"
)
_LOADER_CHILD = r"""
import sys
from citus_pipeline.data.load import load_price_paid
path, dsn, schema, shards = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
r = load_price_paid(path, dsn, schema=schema, target="uk_price", shard_count=shards)
print("loaded", r.rows_loaded, "rejected", r.rows_rejected)
"""


@dataclass
class LoaderResult:
    name: str
    label: str
    rows: int
    seconds: float
    client_cpu_s: float
    cluster_cpu_s: float
    peak_rss_mb: float
    note: str = ""
    phases: dict[str, float] = field(default_factory=dict)  # seconds of each step, if several

    @property
    def rows_per_s(self) -> float:
        return self.rows / self.seconds if self.seconds else 0.0

    @property
    def cpu_s_per_m_rows(self) -> float:
        return (self.client_cpu_s + self.cluster_cpu_s) / (self.rows / 1e6) if self.rows else 0.0

    def as_json(self) -> dict:
        out = asdict(self)
        out.update(
            rows_per_s=round(self.rows_per_s), cpu_s_per_m_rows=round(self.cpu_s_per_m_rows, 2)
        )
        return out


AUTOVACUUM_BUSY = "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'autovacuum worker'"


def settle(dsn: str, timeout: float = 180.0) -> None:
    """Start every timed method from the same state: no autovacuum still working through an
    earlier method's rows (it competes for the same cores), no WAL left to checkpoint."""
    with psycopg.connect(dsn, autocommit=True) as conn:

        def quiet() -> bool:
            (here,) = conn.execute(AUTOVACUUM_BUSY).fetchone()
            there = conn.execute(
                "SELECT result FROM run_command_on_workers(%s)", (AUTOVACUUM_BUSY,)
            ).fetchall()
            return here == 0 and all(r == "0" for (r,) in there)

        # best effort: a method timed after a long autovacuum is still timed, only noisier
        with contextlib.suppress(WaitTimeout):
            until(quiet, timeout, 1.0, "autovacuum to finish on every node")
        conn.execute("CHECKPOINT")
        conn.execute("SELECT run_command_on_workers('CHECKPOINT')")


def _psql() -> str:
    return shutil.which("psql") or "/usr/bin/psql"


def _copy(dsn: str, path: Path, table: str = RAW_TABLE) -> list[str]:
    """psql's \\copy of the file into `table`."""
    return [
        _psql(),
        dsn,
        "-v",
        "ON_ERROR_STOP=1",
        "-q",
        "-c",
        f"\\copy {table} FROM '{path}' WITH (FORMAT csv)",
    ]


def _fresh_raw(dsn: str, shard_count: int | None, schema: str = SCHEMA) -> None:
    """An empty reference table in its own schema; distributed unless shard_count is None."""
    drop_all(dsn, schema=schema)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
        conn.execute(q(RAW_DDL, schema))
        if shard_count is not None:
            conn.execute(DISTRIBUTE_RAW, (regclass(schema, "uk_price_raw"), shard_count))


def _count(dsn: str, table: str) -> int:
    with psycopg.connect(dsn, autocommit=True) as conn:
        return conn.execute(
            sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(*table.split(".")))
        ).fetchone()[0]


def _result(
    name: str, label: str, m: Measured, rows: int, note: str = "", phases=None
) -> LoaderResult:
    return LoaderResult(
        name,
        label,
        rows,
        m.seconds,
        m.client_cpu_s,
        m.cluster_cpu_s,
        m.peak_rss_mb,
        note,
        phases or {},
    )


def reference(
    dsn: str,
    path: Path,
    usage: ClusterUsage | None,
    shard_count: int,
    schema: str = SCHEMA,
) -> LoaderResult:
    """(a) as the reference deployment did it (also `bench load`'s yardstick, in its own
    schema and without a cluster to read CPU from)."""
    _fresh_raw(dsn, None, schema)
    settle(dsn)
    table = f"{schema}.uk_price_raw"
    copy = run_children([_copy(dsn, path, table)], usage)
    cpu0 = usage.cpu_seconds() if usage else 0.0
    with psycopg.connect(dsn, autocommit=True) as conn:
        t0 = time.monotonic()
        rel = regclass(schema, "uk_price_raw")
        conn.execute(DISTRIBUTE_RAW, (rel, shard_count))
        conn.execute("SELECT truncate_local_data_after_distributing_table(%s)", (rel,))
        distribute_s = time.monotonic() - t0
    total = Measured(
        copy.seconds + distribute_s,
        copy.client_cpu_s,
        copy.cluster_cpu_s + (usage.cpu_seconds() - cpu0 if usage else 0.0),
        copy.peak_rss_mb,
    )
    note = f"\\copy {copy.seconds:.0f} s + distribute {distribute_s:.0f} s"
    return _result(
        "reference",
        "(a) \\copy into a plain table, then distribute",
        total,
        _count(dsn, table),
        note,
        {"copy_s": copy.seconds, "distribute_s": distribute_s},
    )


def copy_distributed(dsn: str, path: Path, usage: ClusterUsage, shard_count: int) -> LoaderResult:
    _fresh_raw(dsn, shard_count)
    settle(dsn)
    m = run_children([_copy(dsn, path)], usage)
    return _result(
        "copy_distributed", "(b) \\copy into the distributed table", m, _count(dsn, RAW_TABLE)
    )


def parallel_copy(
    dsn: str, path: Path, usage: ClusterUsage, shard_count: int, streams: int
) -> LoaderResult:
    _fresh_raw(dsn, shard_count)
    settle(dsn)
    with tempfile.TemporaryDirectory(prefix="citus-pipeline-split-", dir=path.parent) as tmp:
        split = run_children(
            [["split", "-n", f"l/{streams}", "-d", str(path), f"{tmp}/part-"]], None
        )
        parts = sorted(Path(tmp).iterdir())
        m = run_children([_copy(dsn, p) for p in parts], usage)
    total = Measured(
        split.seconds + m.seconds,
        split.client_cpu_s + m.client_cpu_s,
        m.cluster_cpu_s,
        max(split.peak_rss_mb, m.peak_rss_mb),
    )
    return _result(
        "parallel_copy",
        f"(c) {streams} \\copy at once of line-aligned splits",
        total,
        _count(dsn, RAW_TABLE),
        f"split {split.seconds:.0f} s + copy {m.seconds:.0f} s",
    )


def pgloader_url(dsn: str) -> str:
    """The coordinator's leader as the postgresql:// URL pgloader reads: pgloader takes one
    host and no passfile, so both come from a connection libpq made with the conninfo. Over
    TLS where that connection was (pgloader's strongest mode, `require`, checks no name)."""
    with psycopg.connect(dsn) as conn:
        i = conn.info
        auth = quote(i.user, safe="") + (":" + quote(i.password, safe="") if i.password else "")
        tls = "?sslmode=require" if conn.pgconn.ssl_in_use else ""
        return f"postgresql://{auth}@{i.host}:{i.port}/{quote(i.dbname, safe='')}{tls}"


PGLOADER_COMMAND = """LOAD CSV
    FROM '{path}'
    INTO {url}
    TARGET TABLE {schema}.uk_price_raw
    WITH fields optionally enclosed by '"',
         fields escaped by double-quote,
         fields terminated by ',',
         batch rows = 25000,
         workers = {workers}, concurrency = {concurrency};
"""


def pgloader(
    dsn: str, path: Path, usage: ClusterUsage, shard_count: int, streams: int
) -> LoaderResult:
    _fresh_raw(dsn, shard_count)
    settle(dsn)
    binary = shutil.which("pgloader")
    if binary is None:
        return LoaderResult(
            "pgloader",
            "(d) pgloader",
            0,
            0.0,
            0.0,
            0.0,
            0.0,
            "pgloader not installed (scripts/bootstrap.sh --dev installs Debian's)",
        )
    with tempfile.TemporaryDirectory(prefix="citus-pipeline-pgloader-") as tmp:
        command = Path(tmp) / "load.pgl"
        command.write_text(
            PGLOADER_COMMAND.format(
                path=path,
                url=pgloader_url(dsn),
                schema=SCHEMA,
                workers=streams,
                concurrency=max(1, streams // 2),
            )
        )
        command.chmod(0o600)
        # pgloader verifies the server against OpenSSL's default CA file: the cluster's CA
        ca = conninfo_to_dict(dsn).get("sslrootcert")
        env = {**os.environ, **({"SSL_CERT_FILE": str(ca)} if ca else {})}
        m = run_children([[binary, "--quiet", "--root-dir", tmp, str(command)]], usage, env=env)
    return _result("pgloader", "(d) pgloader", m, _count(dsn, RAW_TABLE), f"{streams} workers")


def this_loader(dsn: str, path: Path, usage: ClusterUsage, shard_count: int) -> LoaderResult:
    drop_all(dsn, schema=SCHEMA)
    # Its tables made and distributed before the clock starts, as (b)-(d)'s table is: every
    # way is timed loading into a distributed table that exists and is empty.
    ensure_schema(dsn, shard_count, schema=SCHEMA)
    settle(dsn)
    m = run_children(
        [[sys.executable, "-c", _LOADER_CHILD, str(path), dsn, SCHEMA, str(shard_count)]],
        usage,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    return _result(
        "this_loader",
        f"(e) this loader, validated and typed, --jobs {os.cpu_count()}",
        m,
        _count(dsn, f"{SCHEMA}.uk_price"),
        m.output.strip().splitlines()[-1] if m.output.strip() else "",
    )


def _halves(path: Path, work: Path) -> tuple[Path, Path]:
    """The file cut in two line-aligned halves (made once per run, in `work`)."""
    first, second = work / "half-00", work / "half-01"
    if not second.exists():
        run_children([["split", "-n", "l/2", "-d", str(path), f"{work}/half-"]], None)
    return first, second


def copy_non_empty(
    dsn: str, path: Path, usage: ClusterUsage, shard_count: int, work: Path
) -> LoaderResult:
    """(f) psql `\\copy` of the file's second half into the distributed reference table that
    holds its first half: the primary key kept row by row, as any load after the first."""
    first, second = _halves(path, work)
    _fresh_raw(dsn, shard_count)
    run_children([_copy(dsn, first)], None)
    before = _count(dsn, RAW_TABLE)
    settle(dsn)
    m = run_children([_copy(dsn, second)], usage)
    return _result(
        "copy_non_empty",
        "(f) \\copy of the second half into the non-empty distributed table",
        m,
        _count(dsn, RAW_TABLE) - before,
        f"{before:,} rows in it before",
    )


def this_loader_non_empty(
    dsn: str, path: Path, usage: ClusterUsage, shard_count: int, work: Path
) -> LoaderResult:
    """(g) this loader, the second half into a uk_price that holds the first: the load after a
    first one (a second file, the rest of an interrupted load, a re-load)."""
    first, second = _halves(path, work)
    drop_all(dsn, schema=SCHEMA)
    child = [sys.executable, "-c", _LOADER_CHILD]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    run_children([[*child, str(first), dsn, SCHEMA, str(shard_count)]], None, env=env)
    before = _count(dsn, f"{SCHEMA}.uk_price")
    settle(dsn)
    m = run_children([[*child, str(second), dsn, SCHEMA, str(shard_count)]], usage, env=env)
    return _result(
        "this_loader_non_empty",
        "(g) this loader, the second half into a non-empty uk_price",
        m,
        _count(dsn, f"{SCHEMA}.uk_price") - before,
        f"{before:,} rows in it before; " + (m.output.strip().splitlines() or [""])[-1],
    )


LOADERS = (
    "reference",
    "copy_distributed",
    "parallel_copy",
    "pgloader",
    "this_loader",
    "copy_non_empty",
    "this_loader_non_empty",
)


def run_loaders(
    dsn: str,
    path: Path,
    usage: ClusterUsage,
    shard_count: int,
    *,
    streams: int,
    only: tuple[str, ...] = LOADERS,
    log=print,
) -> list[LoaderResult]:
    """Each loader in turn on the same file; the schema is dropped at the end."""
    runs = {
        "reference": lambda: reference(dsn, path, usage, shard_count),
        "copy_distributed": lambda: copy_distributed(dsn, path, usage, shard_count),
        "parallel_copy": lambda: parallel_copy(dsn, path, usage, shard_count, streams),
        "pgloader": lambda: pgloader(dsn, path, usage, shard_count, streams),
        "this_loader": lambda: this_loader(dsn, path, usage, shard_count),
    }
    work = Path(tempfile.mkdtemp(prefix="citus-pipeline-halves-", dir=path.parent))
    runs["copy_non_empty"] = lambda: copy_non_empty(dsn, path, usage, shard_count, work)
    runs["this_loader_non_empty"] = lambda: this_loader_non_empty(
        dsn, path, usage, shard_count, work
    )
    out = []
    try:
        for name in only:
            r = runs[name]()
            log(
                f"{r.label}: {r.rows:,} rows in {r.seconds:.1f} s ({r.rows_per_s:,.0f} rows/s, "
                f"{r.cpu_s_per_m_rows:.1f} CPU-s per M rows, peak RSS {r.peak_rss_mb:.0f} MB) "
                f"{r.note}"
            )
            out.append(r)
    finally:
        drop_all(dsn, schema=SCHEMA)
        shutil.rmtree(work, ignore_errors=True)
    return out


__all__ = ["LOADERS", "LoaderResult", "pgloader_url", "run_loaders"]
