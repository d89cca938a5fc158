"""The whole pipeline on the embedded default, driven by Dagster: `citus-pipeline pipeline run`
and the first section of `bench seed` both call :func:`run_pipeline`.

From nothing: a Dagster instance in DAGSTER_HOME, the cluster up, a generated sample (unless
a source is given), every asset materialized, a worker added, `new_workers_sensor` evaluated
against the instance so it requests the rebalance, every check run, and a summary of each
stage's wall time and the reference query's median next to the reference deployment's
figures. The runs land in the instance, so `dagster dev` shows them afterwards.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.console import Console

from .. import settings
from .report import (
    SUMMARY_WIDTH,
    PipelineSummary,
    Stage,
    monthly_note,
    print_summary,
    write_plot,
)

# Its progress lines and the summary table: the table is laid out to fit SUMMARY_WIDTH.
console = Console(width=SUMMARY_WIDTH)


class PipelineFailed(SystemExit):
    """A run of the job failed, or the sensor did not ask for the one rebalance run; what
    went wrong is already on the console.

    A SystemExit (status 1): a caller that does not handle it (the CLI, `bench seed`) ends
    with that status and no traceback, as a command whose error line is already printed.
    """


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


# Times the reference query on a table at a stage: (the first call's seconds, the median).
QueryTimer = Callable[[Any, str], tuple[float, float]]


def reference_timing(citus, table: str, runs: int = 5) -> tuple[float, float]:
    """The first of ``runs`` executions of the reference query on ``table`` (our identifier),
    and their median."""
    from ..data.queries import (
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
        timing = time_query(conn, REFERENCE_QUERY, sql, runs)
    return timing.seconds[0], timing.median


class RunLog:
    """Dagster's own log of the main job's runs, kept in one file.

    The runs' console logger shows warnings and errors only (DEBUG lines would bury the
    summary); every event of every run is appended to ``path`` afterwards, from the
    instance's event log, so nothing Dagster said is lost. ``verbose`` streams it all.
    """

    def __init__(self, path: Path, verbose: bool) -> None:
        self.path = path
        self.verbose = verbose
        path.parent.mkdir(parents=True, exist_ok=True)

    @classmethod
    def in_home(cls, home: Path, verbose: bool = False) -> RunLog:
        """A new log under the instance directory, named by the time it starts."""
        return cls(home / "logs" / f"pipeline-{time.strftime('%Y%m%d-%H%M%S')}.log", verbose)

    @property
    def run_config(self) -> dict:
        level = "DEBUG" if self.verbose else "WARNING"
        return {"loggers": {"console": {"config": {"log_level": level}}}}

    def append(self, instance, run_id: str, label: str) -> None:
        with open(self.path, "a") as f:
            f.write(f"# {label}: run {run_id}\n")
            for e in instance.all_logs(run_id):
                when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(e.timestamp))
                level = logging.getLevelName(e.level)
                f.write(f"{when} {level} {e.step_key or '-'} - {e.message}\n")


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
    log: RunLog | None = None,
    query_timer: QueryTimer = reference_timing,
) -> PipelineSummary:
    """The main job from nothing, stage by stage on ``console``, ending in the summary table;
    raises :class:`PipelineFailed` once it has printed why a stage failed."""
    home = bootstrap_dagster_home(dagster_home)
    log = log or RunLog.in_home(home)
    import dagster as dg

    from ..data.generate import generate_monthly
    from ..definitions import build_resources, defs
    from ..defs.citus.partitions import monthly_partitions, partition_month
    from ..defs.citus.sensors import new_workers_sensor

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
        t0 = time.perf_counter()
        with console.status(f"[bold]{label}[/bold] …"):
            result = dg.materialize(
                all_defs,
                instance=instance,
                resources=resources,
                selection=selection,
                raise_on_error=False,
                run_config=log.run_config,
                **kw,
            )
        wall = time.perf_counter() - t0
        log.append(instance, result.run_id, label)
        console.print(f"[green]✓[/green] {label} [dim]{wall:.1f} s[/dim]")
        for ev in result.get_asset_check_evaluations():
            if not ev.passed:
                summary.failed_checks.append(
                    f"{ev.asset_key.to_user_string()}:{ev.check_name} {ev.description or ''}"
                )
        if not result.success:
            raise PipelineFailed(_report_failure(result, label))
        return result, wall

    def stage(name, result, wall, *, query=(None, None), note="", ref=None):
        first, median = query
        summary.stages.append(
            Stage(
                name,
                wall,
                median,
                note,
                ref,
                run_wall=wall,
                work_seconds=_work_seconds(result),
                query_first=first,
            )
        )

    # 1. cluster up
    r, wall = materialize("cluster up", [dg.AssetKey("citus_cluster")])
    workers = r.asset_materializations_for_node("citus_cluster")[0].metadata["worker_count"].value
    stage("cluster up", r, wall, note=f"{workers} worker groups")

    # 2. load into the raw table (the reference schema, distributed like uk_price)
    r, wall = materialize("load uk_price_raw", [dg.AssetKey("uk_price_raw")])
    md = r.asset_materializations_for_node("uk_price_raw")[0].metadata
    summary.rows = int(md["dagster/row_count"].value)
    raw = query_timer(citus, "uk_price_raw")
    stage(
        "load → uk_price_raw",
        r,
        wall,
        query=raw,
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
    dist = query_timer(citus, "uk_price")
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
    with console.status("[bold]add a worker group[/bold] …"):
        group = cluster.add_worker()
    add_wall = time.perf_counter() - t0
    console.print(f"[green]✓[/green] add worker group {group} [dim]{add_wall:.1f} s[/dim]")
    summary.stages.append(
        Stage(f"add worker group {group}", add_wall, note="Patroni members + pg_dist_node")
    )
    requests, cursor = tick(cursor)
    requests = requests or early
    if len(requests) != 1:
        console.print(
            f"[red]new_workers_sensor asked for {len(requests)} runs after add-worker, expected 1[/red]"
        )
        raise PipelineFailed(1)
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
    reb_first, reb = query_timer(citus, "uk_price")
    summary.stages.append(
        Stage(
            f"rebalanced over {rmd['worker_count'].value} workers",
            0.0,
            reb,
            reference_key="rebalanced_3",
            query_first=reb_first,
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
            note=monthly_note({k: v.value for k, v in mmd.items()}),
        )

    # 6. every check, once more, on the final state (the cluster's health included)
    r, wall = materialize(
        "all checks",
        dg.AssetSelection.checks_for_assets(
            dg.AssetKey("citus_cluster"),
            dg.AssetKey("uk_price"),
            dg.AssetKey("uk_price_rebalanced"),
        ),
    )
    stage("all checks", r, wall, note=f"{len(r.get_asset_check_evaluations())} checks")

    print_summary(summary, console)
    console.print(f"Dagster's log of these runs: {log.path}")
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


__all__ = [
    "PipelineFailed",
    "QueryTimer",
    "RunLog",
    "bootstrap_dagster_home",
    "reference_timing",
    "run_pipeline",
]
