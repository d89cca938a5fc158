"""`citus-pipeline bench seed`: the reference experiment at its own scale (28,276,228 rows by
default), and side by side with what users would pick instead.

Sections, in this order (each can run alone with `--section`; a section that needs data the
earlier ones leave behind loads it first):

- stages: the main Dagster job (`pipeline run`) on the dedicated bench cluster from nothing,
  each stage timed next to the reference deployment's figure; the reference query timed
  right after each stage (first call) and settled (autovacuum done, a checkpoint, one warm-up
  call, then the median of `--runs`): what a user sees a minute later. Memory of the loader
  (this process) and of every member sampled over the whole job.
- peers: the four timing queries on chDB and DuckDB (each loading the same file into its own
  storage) next to `uk_price`, its rollup and the reference schema's table on the cluster.
- rebalance: the third worker group drained, then filled again by the background rebalance
  with a single-row writer running (moves, MB, MB/s, failed writes, rows lost), once with the
  spec's parallel moves and once with one move per node at a time.
- loaders: the five ways of `bench.loaders` on the same file.

Raw output under `bench-results/seed-<rows>.{txt,json,png}`; `--json` prints the figures as one
object. Figures and ratios, never asserts.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import platform
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Annotated

import psycopg
import typer
import yaml
from rich.console import Console
from rich.table import Table

from .. import settings
from ..data import rollup
from ..data.queries import (
    REFERENCE_QUERY,
    UK_PRICE_QUERIES,
    reference_schema_queries,
    time_query,
)
from ..data.schema import drop_all
from ..pipeline_report import REFERENCE, REFERENCE_ROWS
from .load import data_file
from .loaders import LOADERS, run_loaders, settle
from .peers import ENGINES
from .rebalance import (
    BENCH_STATE,
    bench_cluster,
    bench_spec,
    drain_back,
    print_runs,
    run_asset_way,
    set_on_all_nodes,
)
from .usage import ClusterUsage, MemorySampler, run_children, self_rss_mb

SECTIONS = ("stages", "peers", "rebalance", "loaders")
RESULTS = settings.REPO_ROOT / "bench-results"
# The rebalance section's writers: ids apart from every other bench writer's.
WRITER_FIRST_IDS = {"parallel": 1 << 41, "one per node": (1 << 41) + (1 << 32)}


def seed_spec():
    """The bench spec without WAL archiving: at 28 M rows the archive alone grows by tens of
    GB per load, which fills this machine's disk (`bench backup` measures archiving)."""
    from ..cluster.spec import spec_from_mapping

    data = bench_spec().model_dump(mode="json")
    data["backup"]["archiving"] = False
    return spec_from_mapping(data, "<bench seed spec>")


class Seed:
    """One run of the bench: the cluster, the file, the console that is also the .txt file,
    and every figure collected for the JSON object."""

    def __init__(
        self, rows: int, seed: int, runs: int, state_dir: Path, console: Console, spec=None
    ):
        self.spec = spec or seed_spec()
        self.rows = rows
        self.runs = runs
        self.state_dir = state_dir
        self.console = console
        self.path = data_file(rows, seed)
        self.cluster = None
        self.out: dict = {
            "rows": rows,
            "file": str(self.path),
            "file_mb": round(self.path.stat().st_size / 1e6, 1),
            "machine": f"{os.cpu_count()} cores, {platform.platform()}",
            "stages": [],
            "loaders": [],
            "queries": [],
            "rebalance": None,
            "memory_peak_mb": {},
        }
        self.trace = None

    # ---- the cluster ---------------------------------------------------------------
    def dsn(self) -> str:
        return self.cluster.coordinator_dsn()

    def up(self):
        if self.cluster is None or not self.cluster.is_running():
            self.cluster = bench_cluster(self.state_dir, spec=self.spec)
        return self.cluster

    def sql(self, statement, params=None) -> list[tuple]:
        with psycopg.connect(self.dsn(), autocommit=True) as conn:
            cur = conn.execute(statement, params)
            return cur.fetchall() if cur.description else []

    def ensure_data(self) -> None:
        """uk_price and uk_price_raw (both distributed) hold the file's rows; loaded in one
        pass by the loader when they do not (a section run alone)."""
        from ..data import load_price_paid
        from ..data.schema import drop_all

        self.up()
        have = self.sql(
            "SELECT to_regclass('uk_price') IS NOT NULL AND to_regclass('uk_price_raw') IS NOT NULL"
        )[0][0]
        if have:
            typed = self.sql(
                "SELECT count(*) FROM uk_price WHERE postcode IS DISTINCT FROM 'ZZ99 9ZZ'"
            )[0][0]
            raw = self.sql("SELECT count(*) FROM uk_price_raw")[0][0]
            if typed == raw == self.rows:
                return
        self.console.print(f"loading {self.rows:,} rows into uk_price and uk_price_raw …")
        drop_all(self.dsn())
        t0 = time.monotonic()
        load_price_paid(str(self.path), self.dsn(), target="both")
        self.sql("VACUUM ANALYZE uk_price")
        self.sql("VACUUM ANALYZE uk_price_raw")
        self.console.print(f"loaded in {time.monotonic() - t0:.0f} s")

    def settled_timing(self, sql, runs: int | None = None) -> tuple[float, float]:
        """(first call now, median after the cluster settled and one warm-up call)."""
        with psycopg.connect(self.dsn(), autocommit=True) as conn:
            first = time_query(conn, REFERENCE_QUERY, sql, 1).seconds[0]
        settle(self.dsn())
        with psycopg.connect(self.dsn(), autocommit=True) as conn:
            time_query(conn, REFERENCE_QUERY, sql, 1)
            median = time_query(conn, REFERENCE_QUERY, sql, runs or self.runs).median
        return first, median

    # ---- stages --------------------------------------------------------------------
    def stages(self) -> None:
        from ..cluster.local import LocalCluster
        from ..pipeline_commands import RunLog, run_pipeline

        # from nothing: the job starts the cluster itself
        self.cluster = LocalCluster(self.spec, self.state_dir)
        self.cluster.down(purge=True)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.state_dir.chmod(0o755)  # Patroni runs as the service user
        spec_file = self.state_dir.parent / "bench-spec.yaml"
        spec_file.write_text(yaml.safe_dump(self.spec.model_dump(mode="json")))
        home = Path(tempfile.mkdtemp(prefix="citus-pipeline-seed-dagster-"))

        timing_s = [0.0]  # spent waiting for the cluster to settle and timing the query

        def timer(_citus, table: str) -> tuple[float, float]:
            sql = (
                UK_PRICE_QUERIES[REFERENCE_QUERY]
                if table == "uk_price"
                else reference_schema_queries(table)[REFERENCE_QUERY]
            )
            t = time.monotonic()
            try:
                return self.settled_timing(sql)
            finally:
                timing_s[0] += time.monotonic() - t

        usage = ClusterUsage(self.cluster)

        def memory() -> dict[str, float]:
            return {**usage.pss_mb(), "loader (Dagster process)": self_rss_mb()}

        t0 = time.monotonic()
        with MemorySampler(memory, interval=5.0) as trace:
            summary = run_pipeline(
                rows=self.rows,
                source=str(self.path),
                dagster_home=home,
                spec=str(spec_file),
                state_dir=str(self.state_dir),
                log=RunLog(home / "logs" / "seed.log", verbose=False),
                query_timer=timer,
            )
        whole = time.monotonic() - t0
        self.trace = trace
        self.out["memory_peak_mb"] = trace.peaks()
        timed = sum(1 for st in summary.stages if st.query_median is not None)
        for st in summary.stages:
            label, ref_wall, ref_q = REFERENCE.get(st.reference_key or "", ("", None, None))
            if st.reference_key == "plain":  # the load stage: the reference's \COPY time too
                label, ref_wall = REFERENCE["load"][0], REFERENCE["load"][1]
            self.out["stages"].append(
                {
                    "name": st.name,
                    "seconds": round(st.wall_seconds, 2),
                    "query_median_s": st.query_median,
                    "query_first_s": st.query_first,
                    "reference": label,
                    "reference_seconds": ref_wall,
                    "reference_query_s": ref_q,
                    "note": st.note,
                }
            )
        # the job's own time: the bench's waits for a settled cluster are not the job's
        job = whole - timing_s[0]
        self.out["whole_experiment_s"] = round(job, 1)
        self.out["with_settled_timings_s"] = round(whole, 1)
        self.console.print(
            f"whole experiment: {job:.0f} s ({job / 60:.1f} min; target ≤ 15 min); "
            f"{whole:.0f} s with the {timed} settled query timings ({timing_s[0]:.0f} s)"
        )

    # ---- peers ---------------------------------------------------------------------
    def peers(self) -> None:
        self.ensure_data()
        workers = len(self.cluster.worker_groups())
        settle(self.dsn())
        engines = {
            f"citus uk_price ({workers} workers)": UK_PRICE_QUERIES,
            "citus uk_price_rollup (coordinator)": rollup.QUERIES,
            f"reference schema uk_price_raw ({workers} workers)": reference_schema_queries(
                "uk_price_raw"
            ),
        }
        medians: dict[str, dict[str, float]] = {}
        answers = {}
        with psycopg.connect(self.dsn(), autocommit=True) as conn:
            for engine, queries in engines.items():
                medians[engine] = {}
                for name, sql in queries.items():
                    time_query(conn, name, sql, 1)  # warm
                    medians[engine][name] = time_query(conn, name, sql, self.runs).median
                answers[engine] = conn.execute(queries[REFERENCE_QUERY]).fetchone()[0]
        loads = {}
        work = Path(tempfile.mkdtemp(prefix="citus-pipeline-peers-", dir=self.path.parent))
        try:
            for engine in ENGINES:
                m = run_children(
                    [
                        [
                            sys.executable,
                            "-m",
                            "citus_pipeline.bench.peers",
                            engine,
                            str(self.path),
                            str(work),
                            str(self.runs),
                        ]
                    ],
                    None,
                )
                res = json.loads(m.output.strip().splitlines()[-1])
                medians[engine] = res["medians"]
                answers[engine] = res["answer"]
                loads[engine] = {
                    "load_s": round(res["load_s"], 1),
                    "rows": res["rows"],
                    "storage_mb": round(res["storage_mb"], 1),
                    "peak_rss_mb": round(m.peak_rss_mb),
                    "cpu_s": round(m.client_cpu_s, 1),
                }
        finally:
            shutil.rmtree(work, ignore_errors=True)
        self.out["peer_loads"] = loads
        self.out["reference_answers"] = answers
        if len(set(answers.values())) != 1:
            self.console.print(
                f"[red]the engines answer the reference query differently: {answers}"
            )
        for engine, by_query in medians.items():
            for name, median in by_query.items():
                self.out["queries"].append({"engine": engine, "query": name, "median_s": median})
        t = Table(title=f"Timing queries, {self.rows:,} rows, median of {self.runs} (warm)")
        t.add_column("query")
        for engine in medians:
            t.add_column(f"{engine} s", justify="right")
        citus = next(iter(medians))
        t.add_column("citus / chdb", justify="right")
        t.add_column("citus / duckdb", justify="right")
        for name in UK_PRICE_QUERIES:
            row = [f"{medians[e][name]:.4f}" for e in medians]
            c = medians[citus][name]
            row += [f"{c / medians[e][name]:.1f}x" for e in ENGINES]
            t.add_row(name, *row)
        self.console.print(t)
        for engine, ld in loads.items():
            self.console.print(
                f"{engine}: loaded {ld['rows']:,} rows in {ld['load_s']} s, "
                f"{ld['storage_mb']} MB on disk, peak RSS {ld['peak_rss_mb']} MB"
            )

    # ---- rebalance -----------------------------------------------------------------
    def rebalance(self) -> None:
        self.ensure_data()
        groups = self.cluster.worker_groups()
        if len(groups) < 3:
            groups.append(self.cluster.add_worker())
            self.console.print(f"added worker group {groups[-1]}")
        newest = max(groups)
        runs = []
        with psycopg.connect(self.dsn(), autocommit=True) as conn:
            for label, executors in (("parallel", None), ("one per node", "1")):
                drain_back(conn, self.dsn(), newest)
                set_on_all_nodes(
                    conn, self.dsn(), "citus.max_background_task_executors_per_node", executors
                )
                settle(self.dsn())
                try:
                    runs.append(
                        run_asset_way(conn, self.dsn(), WRITER_FIRST_IDS[label], f"moves {label}")
                    )
                finally:
                    set_on_all_nodes(
                        conn, self.dsn(), "citus.max_background_task_executors_per_node", None
                    )
        print_runs(runs, self.rows, compare=False)
        best = runs[0]
        mb = best.bytes_moved / 1e6
        self.out["rebalance"] = {
            "moves": best.moves,
            "mb": round(mb, 1),
            "seconds": round(best.seconds, 1),
            "mb_per_s": round(mb / best.seconds, 1) if best.seconds else 0.0,
            "failed_writes": best.writer.failed,
            "acked_writes": len(best.writer.acked),
            "rows_lost": best.rows_lost,
            "one_move_per_node": {
                "seconds": round(runs[1].seconds, 1),
                "mb_per_s": round(runs[1].bytes_moved / 1e6 / runs[1].seconds, 1)
                if runs[1].seconds
                else 0.0,
                "failed_writes": runs[1].writer.failed,
                "rows_lost": runs[1].rows_lost,
            },
        }
        ref_mb_s = 1660 / (4 * 60 + 43)
        self.console.print(
            f"rebalance: {mb / best.seconds:.1f} MB/s = {mb / best.seconds / ref_mb_s:.1f}x the "
            f"reference deployment's {ref_mb_s:.1f} MB/s (target ≥ 5x, ≥ 30 MB/s, 0 failed writes)"
        )

    # ---- loaders -------------------------------------------------------------------
    def loaders(self, streams: int, only: tuple[str, ...]) -> None:
        self.up()
        # The main job's tables are measured by now: at 28 M rows they and their standbys'
        # copies leave no disk on this machine for (a)'s plain table on the coordinator.
        drop_all(self.dsn())
        shard_count = self.sql("SHOW citus.shard_count")[0][0]
        usage = ClusterUsage(self.cluster)
        results = run_loaders(
            self.dsn(),
            self.path,
            usage,
            int(shard_count),
            streams=streams,
            only=only,
            log=self.console.print,
        )
        self.out["loaders"] = [r.as_json() for r in results]
        peers = [r for r in results if r.name not in ("this_loader", "reference") and r.rows]
        ours = next((r for r in results if r.name == "this_loader"), None)
        t = Table(title=f"Loaders, {self.rows:,} rows into a distributed table, one run each")
        for col in ("way", "rows", "s", "rows/s", "CPU-s / M rows", "peak RSS MB", "note"):
            t.add_column(col, justify="left" if col in ("way", "note") else "right")
        for r in results:
            t.add_row(
                r.label,
                f"{r.rows:,}",
                f"{r.seconds:.1f}",
                f"{r.rows_per_s:,.0f}",
                f"{r.cpu_s_per_m_rows:.1f}",
                f"{r.peak_rss_mb:.0f}",
                r.note,
            )
        self.console.print(t)
        if ours and peers:
            fastest = max(peers, key=lambda r: r.rows_per_s)
            ratio = ours.rows_per_s / fastest.rows_per_s
            self.out["loader_ratio_vs_fastest_peer"] = round(ratio, 2)
            self.console.print(
                f"this loader / fastest peer ({fastest.label}): {ratio:.2f}x (target ≥ 1.2x)"
            )


def _summary_targets(out: dict, console: Console) -> None:
    """The issue's targets next to what this run measured (sections that ran)."""
    q = {(x["engine"], x["query"]): x["median_s"] for x in out["queries"]}
    plain = next((e for e, _ in q if e.startswith("reference schema")), None)
    for citus in dict.fromkeys(e for e, _ in q if e.startswith("citus")):
        if ("chdb", REFERENCE_QUERY) not in q:
            break
        c = q[(citus, REFERENCE_QUERY)]
        console.print(
            f"{citus}: reference query {c:.4f} s = {c / q[('chdb', REFERENCE_QUERY)]:.2f}x chDB "
            f"(target ≤ 2x), {c / q[('duckdb', REFERENCE_QUERY)]:.2f}x DuckDB (target ≤ 1x); "
            + ", ".join(
                f"{name} {q[(citus, name)] / q[(plain, name)]:.2f}x the reference schema"
                for name in UK_PRICE_QUERIES
                if name != REFERENCE_QUERY and (plain, name) in q
            )
            + " (target ≤ 1x)"
        )


def write_plot(out: dict, trace, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [
        p
        for p, have in (
            ("stages", bool(out["stages"])),
            ("query", bool(out["stages"])),
            ("engines", bool(out["queries"])),
            ("loaders", bool(out["loaders"])),
            ("memory", trace is not None and bool(trace.times)),
        )
        if have
    ]
    if not panels:
        return
    fig, axes = plt.subplots(len(panels), 1, figsize=(14, 4.2 * len(panels)))
    axes = [axes] if len(panels) == 1 else list(axes)
    ref_label = f"reference deployment ({REFERENCE_ROWS:,} rows, 3×4 vCPU)"
    ours_label = f"this run ({out['rows']:,} rows, {out['machine'].split(',')[0]})"
    for ax, panel in zip(axes, panels, strict=True):
        if panel == "stages":
            st = [s for s in out["stages"] if s["seconds"]]
            y = range(len(st))
            ax.barh([i + 0.2 for i in y], [s["seconds"] for s in st], 0.4, label=ours_label)
            ax.barh(
                [i - 0.2 for i in y],
                [s["reference_seconds"] or 0 for s in st],
                0.4,
                label=ref_label,
            )
            ax.set_yticks(list(y), [s["name"] for s in st])
            ax.invert_yaxis()
            ax.set_xlabel("wall seconds")
            ax.set_title("Stages of the reference experiment")
            ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
        elif panel == "query":
            st = [s for s in out["stages"] if s["query_median_s"] is not None]
            x = range(len(st))
            ax.bar(
                [i - 0.27 for i in x],
                [s["query_first_s"] for s in st],
                0.27,
                label="this run, first call after the stage",
            )
            ax.bar(
                [i for i in x],
                [s["query_median_s"] for s in st],
                0.27,
                label="this run, settled median",
            )
            ax.bar(
                [i + 0.27 for i in x],
                [s["reference_query_s"] or 0 for s in st],
                0.27,
                label=ref_label,
            )
            ax.set_xticks(list(x), [s["name"] for s in st])
            ax.set_yscale("log")
            ax.set_ylabel("seconds (log)")
            ax.set_title("Reference query count(*) WHERE property_type = 'S' at each stage")
            ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
        elif panel == "engines":
            engines = list(dict.fromkeys(x["engine"] for x in out["queries"]))
            queries = list(UK_PRICE_QUERIES)
            q = {(x["engine"], x["query"]): x["median_s"] for x in out["queries"]}
            w = 0.8 / len(engines)
            for k, e in enumerate(engines):
                ax.bar(
                    [i + (k - (len(engines) - 1) / 2) * w for i in range(len(queries))],
                    [q.get((e, n), 0) for n in queries],
                    w,
                    label=e,
                )
            ax.set_xticks(range(len(queries)), [n.replace("_", " ") for n in queries], fontsize=8)
            ax.set_yscale("log")
            ax.set_ylabel("median seconds (log)")
            ax.set_title(f"Timing queries on {out['rows']:,} rows, warm")
            ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
        elif panel == "loaders":
            lo = out["loaders"]
            ax.barh(range(len(lo)), [x["rows_per_s"] for x in lo])
            ax.set_yticks(range(len(lo)), [x["label"] for x in lo], fontsize=8)
            ax.invert_yaxis()
            ax.set_xlabel("rows per second (higher is better)")
            ax.set_title(f"Loaders into a distributed table, {out['rows']:,} rows")
        elif panel == "memory":
            for name, column in trace.series.items():
                ax.plot(
                    trace.times,
                    [v if v is not None else float("nan") for v in column],
                    label=name,
                    linewidth=1,
                )
            ax.set_xlabel("seconds into the main job")
            ax.set_ylabel("MB (members: PSS; loader: RSS)")
            ax.set_title("Memory over the main job")
            ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def seed_command(
    rows: Annotated[
        int, typer.Option("--rows", help="rows of the generated file (the reference: 28,276,228)")
    ] = REFERENCE_ROWS,
    seed: Annotated[int, typer.Option("--seed", help="seed of the generated data")] = 2024,
    section: Annotated[
        list[str] | None,
        typer.Option(
            "--section", help=f"run only these, repeat the option ({', '.join(SECTIONS)})"
        ),
    ] = None,
    loader: Annotated[
        list[str] | None,
        typer.Option("--loader", help=f"loaders section: only these ({', '.join(LOADERS)})"),
    ] = None,
    runs: Annotated[int, typer.Option(help="runs per query (median reported)")] = 5,
    streams: Annotated[int, typer.Option(help="parallel \\copy parts and pgloader workers")] = 4,
    as_json: Annotated[
        bool, typer.Option("--json", help="print every figure as one JSON object")
    ] = False,
    out_dir: Annotated[Path, typer.Option(help="where the .txt/.json/.png go")] = RESULTS,
    keep: Annotated[bool, typer.Option(help="leave the bench cluster running")] = False,
    state_dir: Annotated[Path, typer.Option(help="state directory of the bench cluster")] = (
        BENCH_STATE
    ),
) -> None:
    """The reference experiment at 28 M rows; loaders, analytic engines and rebalance beside it."""
    chosen = tuple(section or SECTIONS)
    bad = [s for s in chosen if s not in SECTIONS] + [x for x in (loader or []) if x not in LOADERS]
    if bad:
        raise typer.BadParameter(f"unknown section or loader: {', '.join(bad)}")
    # An hour-long run is often started in the background, where SIGINT is ignored: let a
    # plain `kill` end it the same way, saving what it measured and stopping its cluster.
    signal.signal(signal.SIGTERM, _interrupted)
    out = run_seed(
        rows=rows,
        seed=seed,
        sections=chosen,
        loaders=tuple(loader or LOADERS),
        runs=runs,
        streams=streams,
        out_dir=out_dir,
        keep=keep,
        state_dir=state_dir,
        terminal=sys.stderr if as_json else sys.stdout,
    )
    if as_json:
        print(json.dumps(out))


def _interrupted(signum, frame) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def run_seed(
    *,
    rows: int,
    seed: int,
    sections: tuple[str, ...] = SECTIONS,
    loaders: tuple[str, ...] = LOADERS,
    runs: int = 5,
    streams: int = 4,
    out_dir: Path = RESULTS,
    keep: bool = False,
    state_dir: Path = BENCH_STATE,
    spec=None,
    terminal=None,
) -> dict:
    """The chosen sections in order; every figure as one dict (also in `<out_dir>/seed-<rows>.*`).

    ``spec``: the cluster to run on (default: the bench spec's own addresses and ports).
    """
    # Everything any part prints (the main job's own console, the rebalance log) goes to the
    # terminal (stderr with --json, so stdout is the JSON alone) and into the .txt file.
    tee = _Tee(terminal or sys.stdout)
    console = Console(width=200)
    stem = out_dir / f"seed-{rows}"

    def save() -> None:  # after every section: a long run that fails keeps what it measured
        out_dir.mkdir(parents=True, exist_ok=True)
        if run.trace is not None:
            run.out["memory_trace"] = {"seconds": run.trace.times, "mb": run.trace.series}
        Path(f"{stem}.json").write_text(json.dumps(run.out, indent=1) + "\n")
        write_plot(run.out, run.trace, Path(f"{stem}.png"))
        Path(f"{stem}.txt").write_text(tee.getvalue())

    with contextlib.redirect_stdout(tee):
        run = Seed(rows, seed, runs, state_dir, console, spec)
        try:
            _run_sections(run, sections, loaders, streams, keep, save)
        finally:
            save()
    Console(file=terminal).print(f"raw output: {stem}.txt, {stem}.json, {stem}.png")
    return {k: v for k, v in run.out.items() if k != "memory_trace"}


class _Tee(io.StringIO):
    """A stdout that also keeps what was written (never a terminal: plain text in the file)."""

    def __init__(self, stream) -> None:
        super().__init__()
        self.stream = stream

    def write(self, text: str) -> int:
        self.stream.write(text)
        return super().write(text)

    def flush(self) -> None:
        self.stream.flush()


def _run_sections(run: Seed, chosen, loader, streams: int, keep: bool, save) -> None:
    console = run.console
    console.print(f"file: {run.path} ({run.rows:,} rows, {run.out['file_mb']} MB)")
    t0 = time.monotonic()
    try:
        for name in SECTIONS:
            if name not in chosen:
                continue
            console.rule(name)
            s0 = time.monotonic()
            if name == "loaders":
                run.loaders(streams, loader)
            else:
                getattr(run, name)()
            run.out.setdefault("section_seconds", {})[name] = round(time.monotonic() - s0, 1)
            save()
    finally:
        if run.cluster is not None and not keep:
            run.cluster.down(purge=True)
    run.out["bench_seconds"] = round(time.monotonic() - t0, 1)
    _summary_targets(run.out, console)


__all__ = ["SECTIONS", "run_seed", "seed_command"]
