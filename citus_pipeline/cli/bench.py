"""`citus-pipeline bench`: benchmarks that print figures and ratios (never asserted in tests).

Each benchmark lives in its own module of ``citus_pipeline.bench`` as a plain function; the
commands here only read the options, check what the benchmark cannot (an unknown scenario,
section or loader) and call it.
"""

from __future__ import annotations

import json
import signal
import sys
from pathlib import Path
from typing import Annotated, Literal

import typer

from ..bench import backup, cluster, endpoints, faults, load, queries, rebalance
from ..bench.loaders import LOADERS
from ..bench.rebalance import BENCH_STATE
from ..bench.seed import RESULTS, SECTIONS, run_seed
from ..drills import SCENARIOS
from ..pipeline.report import REFERENCE_ROWS

app = typer.Typer(
    help="Benchmarks: load, rebalance, queries, endpoints, cluster, backup, faults, seed (figures and ratios).",
    no_args_is_help=True,
)

# options of every benchmark that runs on the dedicated bench cluster
KeepOpt = Annotated[bool, typer.Option(help="leave the bench cluster running")]
BenchStateOpt = Annotated[Path, typer.Option(help="state directory of the dedicated bench cluster")]
BaseSpecOpt = Annotated[
    str | None, typer.Option(help="base spec (addresses/ports are moved to the bench block)")
]


@app.command("load")
def load_command(
    rows: Annotated[
        int, typer.Option("--rows", help="rows in the generated file (≥ 2 M for the real figure)")
    ] = 2_000_000,
    seed: Annotated[int, typer.Option("--seed")] = 2024,
    jobs: Annotated[
        list[int] | None,
        typer.Option(
            "--jobs", help="loader streams to try, repeat the option (default: 1, 2 and 4)"
        ),
    ] = None,
    big_rows: Annotated[
        int,
        typer.Option(
            "--big-rows", help="also time both ways on a file of this many rows (e.g. 10000000)"
        ),
    ] = 0,
    dsn: Annotated[
        str | None,
        typer.Option(
            "--dsn",
            help="coordinator conninfo (default: $CITUS_PIPELINE_DSN, else the bench cluster)",
        ),
    ] = None,
    shard_count: Annotated[int, typer.Option("--shard-count")] = 32,
    keep: Annotated[
        bool,
        typer.Option("--keep", help="keep the bench schemas (and the bench cluster) afterwards"),
    ] = False,
) -> None:
    """Reference psql \\COPY + distribute vs this loader (file -> validated distributed uk_price)."""
    load.run_bench(rows, seed, jobs, big_rows, dsn, shard_count, keep)


@app.command("rebalance")
def rebalance_command(
    rows: Annotated[
        int, typer.Option(help="rows in uk_price before the third worker joins")
    ] = 2_000_000,
    seed: Annotated[int, typer.Option(help="seed of the generated data")] = 2024,
    keep: KeepOpt = False,
    state_dir: BenchStateOpt = BENCH_STATE,
    spec: BaseSpecOpt = None,
) -> None:
    """(a) rebalance_table_shards vs (b) the uk_price_rebalanced asset's background rebalance."""
    rebalance.run_bench(rows, seed, keep, state_dir, spec)


@app.command("queries")
def queries_command(
    rows: Annotated[int, typer.Option(help="rows in both tables")] = 2_000_000,
    seed: Annotated[int, typer.Option(help="seed of the generated data")] = 2024,
    runs: Annotated[int, typer.Option(help="runs per query (median reported)")] = 5,
    keep: KeepOpt = False,
    state_dir: BenchStateOpt = BENCH_STATE,
    spec: BaseSpecOpt = None,
) -> None:
    """The four timing-check queries on (a) the reference schema and (b) uk_price."""
    queries.run_bench(rows, seed, runs, keep, state_dir, spec)


@app.command("endpoints")
def endpoints_command(
    rows: Annotated[
        int, typer.Option(help="rows of uk_price for the analytic queries")
    ] = 2_000_000,
    seed: Annotated[int, typer.Option(help="seed of the generated data")] = 2024,
    seconds: Annotated[int, typer.Option(help="seconds of each pgbench run")] = 20,
    keep: KeepOpt = False,
    state_dir: BenchStateOpt = BENCH_STATE,
    spec: BaseSpecOpt = None,
) -> None:
    """The pooler (pgbench at 100 and 1,000 clients) and the read endpoint vs direct."""
    endpoints.run_bench(rows, seed, seconds, keep, state_dir, spec)


@app.command("cluster")
def cluster_command(
    repeat: int = typer.Option(3, help="up/down cycles (medians are reported)"),
    idle: float = typer.Option(
        15, help="seconds to let the cluster settle before measuring memory"
    ),
    base_address: str = typer.Option("127.0.200.0", help="loopback block for the bench cluster"),
) -> None:
    """Time `cluster up` of the default topology from nothing and `cluster down`; idle memory."""
    cluster.run_bench(repeat, idle, base_address)


@app.command("backup")
def backup_command(
    rows: int = typer.Option(2_000_000, help="rows loaded before the backups"),
    seed: int = typer.Option(1, help="seed of the generated file"),
    monthly_rows: int = typer.Option(20_000, help="rows of the monthly file before the incr"),
    keep: KeepOpt = False,
    spec: BaseSpecOpt = None,
) -> None:
    """Archiving under the loader, full/incr backup vs pg_basebackup, restore to a point."""
    backup.run_bench(rows, seed, monthly_rows, keep, spec)


@app.command("faults")
def faults_command(
    scenario: Annotated[
        list[str] | None,
        typer.Option(help=f"scenario to run (repeatable; default all): {', '.join(SCENARIOS)}"),
    ] = None,
    json_out: Annotated[bool, typer.Option("--json", help="print the figures as JSON")] = False,
    keep: Annotated[bool, typer.Option(help="leave the bench cluster running")] = False,
    spec: Annotated[
        str | None, typer.Option(help="base spec (addresses/ports are moved to the bench block)")
    ] = None,
    backend: Annotated[
        Literal["local", "kubernetes"],
        typer.Option(help="local: the bench cluster; kubernetes: the sandbox's nodes (root)"),
    ] = "local",
) -> None:
    """Kill and freeze members, nodes and the DCS under writes: lost writes, gaps, recovery."""
    unknown = [n for n in scenario or [] if n not in SCENARIOS]
    if unknown:
        raise typer.BadParameter(f"unknown scenario(s) {unknown}; known: {list(SCENARIOS)}")
    if backend == "kubernetes" and spec:
        raise typer.BadParameter(
            "--spec is the local bench cluster's; Kubernetes runs the sandbox's"
        )
    faults.run_faults(scenario, json_out=json_out, keep=keep, spec=spec, backend=backend)


@app.command("seed")
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


__all__ = ["app"]
