"""`citus-pipeline pipeline run`: the whole pipeline on the embedded default, driven by Dagster.

From nothing: a Dagster instance in DAGSTER_HOME, the cluster up, a generated sample (unless
a source is given), every asset materialized, a worker added, `new_workers_sensor` evaluated
against the instance so it requests the rebalance, every check run, and a summary of each
stage's wall time and the reference query's median next to the reference deployment's
figures. The runs land in the instance, so `dagster dev` shows them afterwards.
"""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from . import settings

app = typer.Typer(help="Run the Dagster pipeline end to end.", no_args_is_help=True)
console = Console(width=170)

# The reference deployment (28,276,228 rows; 3 nodes of 4 vCPU / 16 GB).
REFERENCE_ROWS = 28_276_228
REFERENCE = {
    "load": ("\\COPY into a plain table", 59 * 60 + 49, None),
    "plain": ("count(*) where property_type='S', plain table", None, 2.40),
    "distributed_2": ("distributed over 2 workers", None, 1.53),
    "rebalance": ("rebalance onto the 3rd worker (10 shards, 1.66 GB)", 4 * 60 + 43, None),
    "rebalanced_3": ("over 3 workers", None, 1.25),
}


@dataclass
class Stage:
    name: str
    wall_seconds: float
    query_median: float | None = None
    note: str = ""
    reference_key: str | None = None
    run_wall: float = 0.0
    work_seconds: float = 0.0


@dataclass
class PipelineSummary:
    rows: int = 0
    stages: list[Stage] = field(default_factory=list)
    failed_checks: list[str] = field(default_factory=list)

    @property
    def dagster_overhead(self) -> tuple[float, float]:
        run = sum(s.run_wall for s in self.stages)
        work = sum(s.work_seconds for s in self.stages)
        return run, work


def bootstrap_dagster_home(home: Path) -> Path:
    """DAGSTER_HOME with the project's dagster.yaml (copied once, never overwritten)."""
    home = home.resolve()
    home.mkdir(parents=True, exist_ok=True)
    if not (home / "dagster.yaml").exists():
        shutil.copy(settings.REPO_ROOT / "dagster.yaml", home / "dagster.yaml")
    os.environ["DAGSTER_HOME"] = str(home)
    return home


def _work_seconds(result) -> float:
    """Seconds of SQL, loading and sample generation inside a run, as its assets and checks
    reported them (what is left of the run's wall time is Dagster's own)."""
    total = 0.0
    for ev in result.get_asset_materialization_events():
        md = ev.materialization.metadata
        for key in ("sql_seconds", "generate_seconds"):
            if key in md:
                total += float(md[key].value)
    for ev in result.get_asset_check_evaluations():
        if "sql_seconds" in ev.metadata:
            total += float(ev.metadata["sql_seconds"].value)
    return total


def reference_median(citus, table: str, runs: int = 5) -> float:
    """Median of ``runs`` executions of the reference query on ``table`` (our identifier)."""
    from .data.queries import (
        REFERENCE_QUERY,
        UK_PRICE_QUERIES,
        reference_schema_queries,
        time_query,
    )

    sql = (
        UK_PRICE_QUERIES[REFERENCE_QUERY]
        if table == "uk_price"
        else reference_schema_queries(table)[REFERENCE_QUERY]
    )
    with citus.connection() as conn:
        return time_query(conn, REFERENCE_QUERY, sql, runs).median


def run_pipeline(
    *,
    rows: int,
    source: str | None,
    dagster_home: Path,
    spec: str | None,
    state_dir: str | None,
    seed: int = 1995,
    monthly_rows: int | None = None,
    plot: Path | None = None,
) -> PipelineSummary:
    bootstrap_dagster_home(dagster_home)
    import dagster as dg

    from .data.generate import generate_monthly
    from .definitions import build_resources, defs
    from .defs.citus.partitions import monthly_partitions, partition_month
    from .defs.citus.sensors import new_workers_sensor

    instance = dg.DagsterInstance.get()
    # Values read now (not dg.EnvVar): this command also uses the resources outside the runs.
    # The source is the command's choice: --source, else the generated sample.
    resources = build_resources(
        spec=spec,
        state_dir=state_dir,
        source=source or "",
        sample_rows=rows,
        sample_seed=seed,
        env_by_name=False,
    )
    files, cluster, citus = resources["files"], resources["cluster"], resources["citus"]
    all_defs = [*defs.assets, *defs.asset_checks]
    summary = PipelineSummary(rows=rows)

    def materialize(label: str, selection, **kw):
        console.print(f"[bold]▶ {label}[/bold]")
        t0 = time.perf_counter()
        result = dg.materialize(
            all_defs,
            instance=instance,
            resources=resources,
            selection=selection,
            raise_on_error=False,
            **kw,
        )
        wall = time.perf_counter() - t0
        for ev in result.get_asset_check_evaluations():
            if not ev.passed:
                summary.failed_checks.append(
                    f"{ev.asset_key.to_user_string()}:{ev.check_name} {ev.description or ''}"
                )
        if not result.success:
            raise typer.Exit(_report_failure(result, label))
        return result, wall

    def stage(name, result, wall, *, query=None, note="", ref=None):
        summary.stages.append(
            Stage(name, wall, query, note, ref, run_wall=wall, work_seconds=_work_seconds(result))
        )

    # 1. cluster up
    r, wall = materialize("cluster up", [dg.AssetKey("citus_cluster")])
    workers = r.asset_materializations_for_node("citus_cluster")[0].metadata["worker_count"].value
    stage("cluster up", r, wall, note=f"{workers} worker groups")

    # 2. load into the plain table (reference schema on the coordinator)
    r, wall = materialize("load uk_price_raw", [dg.AssetKey("uk_price_raw")])
    md = r.asset_materializations_for_node("uk_price_raw")[0].metadata
    summary.rows = int(md["dagster/row_count"].value)
    plain = reference_median(citus, "uk_price_raw")
    stage(
        "load → plain table",
        r,
        wall,
        query=plain,
        ref="load",
        note=f"{summary.rows:,} rows, {md['mb_per_s'].value:.1f} MB/s, {md['rows_rejected'].value} rejected",
    )
    summary.stages[-1].reference_key = "plain"

    # 3. distributed table + its checks
    r, wall = materialize(
        "publish uk_price (+ checks)",
        dg.AssetSelection.assets("uk_price")
        | dg.AssetSelection.checks_for_assets(dg.AssetKey("uk_price")),
    )
    nworkers = r.asset_materializations_for_node("uk_price")[0].metadata["worker_count"].value
    dist = reference_median(citus, "uk_price")
    stage(f"distributed over {nworkers} workers", r, wall, query=dist, ref="distributed_2")

    # 4. add a worker; the sensor sees it and asks for one rebalance run
    sensor_ctx = {"instance": instance, "resources": {"citus": citus}, "definitions": defs}

    def tick(cursor):
        with dg.build_sensor_context(cursor=cursor, **sensor_ctx) as ctx:
            return _run_requests(new_workers_sensor(ctx)), ctx.cursor

    early, cursor = tick(None)
    if early:
        console.print(
            "new_workers_sensor: an empty worker group is already there; rebalancing it too"
        )
    t0 = time.perf_counter()
    group = cluster.add_worker()
    add_wall = time.perf_counter() - t0
    summary.stages.append(
        Stage(f"add worker group {group}", add_wall, note="Patroni members + pg_dist_node")
    )
    requests, cursor = tick(cursor)
    requests = requests or early
    if len(requests) != 1:
        console.print(
            f"[red]new_workers_sensor asked for {len(requests)} runs after add-worker, expected 1[/red]"
        )
        raise typer.Exit(1)
    again, cursor = tick(cursor)
    console.print(f"sensor: run_key {requests[0].run_key!r}; next tick requests {len(again)} runs")
    r, wall = materialize(
        "rebalance (sensor's run)",
        dg.AssetSelection.assets("uk_price_rebalanced")
        | dg.AssetSelection.checks_for_assets(dg.AssetKey("uk_price_rebalanced")),
        tags={
            "dagster/run_key": requests[0].run_key,
            "dagster/sensor_name": "new_workers_sensor",
            **requests[0].tags,
        },
    )
    rmd = r.asset_materializations_for_node("uk_price_rebalanced")[0].metadata
    stage(
        "rebalance",
        r,
        wall,
        ref="rebalance",
        note=f"{rmd['moves'].value} moves, {rmd['bytes_moved'].value / 1e6:.1f} MB, {rmd['mb_per_s'].value:.1f} MB/s",
    )
    reb = reference_median(citus, "uk_price")
    summary.stages.append(
        Stage(
            f"rebalanced over {rmd['worker_count'].value} workers",
            0.0,
            reb,
            reference_key="rebalanced_3",
        )
    )

    # 5. the latest month's update file (generated from the sample when absent)
    key = monthly_partitions.get_last_partition_key()
    month = partition_month(key)
    if files.monthly_file(month) is None:
        if source:
            console.print(
                f"no update file for {month} in {files.monthly_path()}: monthly partition skipped"
            )
        else:
            files.monthly_path().mkdir(parents=True, exist_ok=True)
            generate_monthly(
                files.monthly_path() / f"pp-{month}.csv",
                files.sample_path(),
                monthly_rows or max(100, rows // 1000),
                seed=seed + 1,
                month=(int(month[:4]), int(month[5:7])),
            )
    if files.monthly_file(month) is not None:
        r, wall = materialize(
            f"monthly update {month}", [dg.AssetKey("uk_price_monthly")], partition_key=key
        )
        mmd = r.asset_materializations_for_node("uk_price_monthly")[0].metadata
        stage(
            f"monthly update {month}",
            r,
            wall,
            note=", ".join(
                f"{k} {v.value}"
                for k, v in mmd.items()
                if k.startswith(("applied", "rows_", "adds", "changes", "deletes"))
            )[:80],
        )

    # 6. every check, once more, on the final state
    r, wall = materialize(
        "all checks",
        dg.AssetSelection.checks_for_assets(
            dg.AssetKey("uk_price"), dg.AssetKey("uk_price_rebalanced")
        ),
    )
    stage("all checks", r, wall, note=f"{len(r.get_asset_check_evaluations())} checks")

    print_summary(summary)
    if plot:
        write_plot(summary, plot)
        console.print(f"plot: {plot}")
    return summary


def _run_requests(result) -> list:
    import dagster as dg

    if result is None or isinstance(result, dg.SkipReason):
        return []
    if isinstance(result, dg.RunRequest):
        return [result]
    return [r for r in result if isinstance(r, dg.RunRequest)]


def _report_failure(result, label: str) -> int:
    for ev in result.all_events:
        if ev.is_failure and ev.event_specific_data is not None:
            err = getattr(ev.event_specific_data, "error", None)
            if err is not None:
                console.print(f"[red]{label} failed: {err.message.strip().splitlines()[-1]}[/red]")
                return 1
    console.print(f"[red]{label} failed (see the run {result.run_id} in dagster dev)[/red]")
    return 1


def _fmt(v: float | None) -> str:
    if v is None:
        return "–"
    return f"{v:.3f}" if v < 10 else f"{v:,.1f}"


def print_summary(s: PipelineSummary) -> None:
    t = Table(title=f"Pipeline on {s.rows:,} rows (reference: {REFERENCE_ROWS:,} rows, 3×4 vCPU)")
    for col in ("stage", "wall s", "ref query median s", "reference", "ref s", "notes"):
        t.add_column(col, justify="right" if col.endswith("s") else "left")
    for st in s.stages:
        label, ref_wall, ref_q = REFERENCE.get(st.reference_key or "", ("", None, None))
        ref_s = ref_q if ref_q is not None else ref_wall
        t.add_row(
            st.name, _fmt(st.wall_seconds), _fmt(st.query_median), label, _fmt(ref_s), st.note
        )
    console.print(t)
    run, work = s.dagster_overhead
    if run:
        pct = 100 * (run - work) / run
        console.print(
            f"Dagster overhead: runs {run:.1f}s, SQL/loading inside them {work:.1f}s → "
            f"{run - work:.1f}s ({pct:.1f}% of the runs)"
        )
    if s.failed_checks:
        console.print("[yellow]checks not passing:[/yellow] " + "; ".join(s.failed_checks))


def write_plot(s: PipelineSummary, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    stages = [st for st in s.stages if st.query_median is not None]
    labels = [st.name for st in stages]
    ours = [st.query_median for st in stages]
    ref = [REFERENCE.get(st.reference_key or "", (None, None, None))[2] for st in stages]
    fig, ax = plt.subplots(figsize=(8, 4.5))
    x = range(len(stages))
    ax.bar([i - 0.2 for i in x], ours, width=0.4, label=f"this run ({s.rows:,} rows)")
    ax.bar(
        [i + 0.2 for i in x],
        [r or 0 for r in ref],
        width=0.4,
        label=f"reference ({REFERENCE_ROWS:,} rows)",
    )
    ax.set_xticks(list(x), labels, rotation=10)
    ax.set_title("The reference query, count(*) where property_type = 'S', at each stage")
    ax.set_ylabel("median seconds (log scale)")
    ax.set_yscale("log")
    # outside the bars: the reference's bars reach the top of the axes
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.18), ncol=2, frameon=False)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


@app.command("run")
def run_command(
    rows: Annotated[
        int, typer.Option(help="rows of the generated sample (ignored with --source)")
    ] = 1_000_000,
    source: Annotated[
        str | None, typer.Option(help="Price Paid file, directory or URL instead of a sample")
    ] = None,
    # DAGSTER_HOME is Dagster's own variable (not one of settings): typer reads it
    dagster_home: Annotated[
        Path, typer.Option(envvar="DAGSTER_HOME", help="Dagster instance directory")
    ] = settings.DEFAULT_DAGSTER_HOME,
    spec: Annotated[str | None, typer.Option(help="cluster spec (default: cluster.yaml)")] = None,
    state_dir: Annotated[str | None, typer.Option(help="local cluster state directory")] = None,
    seed: Annotated[int, typer.Option(help="seed of the generated sample")] = 1995,
    plot: Annotated[
        Path | None,
        typer.Option(help="PNG of the query times per stage (default bench-results/)"),
    ] = None,
) -> None:
    """Bootstrap, cluster up, load, distribute, add a worker, rebalance via the sensor, check, summarise."""
    plot = plot or (
        settings.REPO_ROOT / "bench-results" / f"pipeline-{time.strftime('%Y%m%d-%H%M%S')}.png"
    )
    run_pipeline(
        rows=rows,
        source=source,
        dagster_home=dagster_home,
        spec=spec,
        state_dir=state_dir,
        seed=seed,
        plot=plot,
    )


__all__ = ["PipelineSummary", "Stage", "app", "bootstrap_dagster_home", "run_pipeline"]
