"""`citus-pipeline pipeline ...`: the Dagster pipeline end to end (`run`), the Dagster UI on the
project's instance (`ui`), and the README's pictures of that UI (`screenshots`).

`run` is :func:`citus_pipeline.pipeline.run.run_pipeline`, the job from nothing; `bench seed`
runs the same function as its first section.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from .. import settings
from ..errors import WaitTimeout
from ..pipeline.run import PipelineFailed, RunLog, bootstrap_dagster_home, console, run_pipeline
from ..waiting import until

app = typer.Typer(help="Run the Dagster pipeline end to end.", no_args_is_help=True)
err_console = Console(stderr=True)
SCREENSHOTS = settings.REPO_ROOT / "docs" / "screenshots"
# DAGSTER_HOME is Dagster's own variable (not one of settings): typer reads it
DagsterHomeOpt = Annotated[
    Path, typer.Option(envvar="DAGSTER_HOME", help="Dagster instance directory")
]


@app.command("run")
def run_command(
    rows: Annotated[
        int, typer.Option(help="rows of the generated sample (ignored with --source)")
    ] = 1_000_000,
    source: Annotated[
        str | None, typer.Option(help="Price Paid file, directory or URL instead of a sample")
    ] = None,
    dagster_home: DagsterHomeOpt = settings.DEFAULT_DAGSTER_HOME,
    spec: Annotated[str | None, typer.Option(help="cluster spec (default: cluster.yaml)")] = None,
    state_dir: Annotated[str | None, typer.Option(help="local cluster state directory")] = None,
    seed: Annotated[int, typer.Option(help="seed of the generated sample")] = 1995,
    plot: Annotated[
        Path | None,
        typer.Option(help="PNG of the query times per stage (default bench-results/)"),
    ] = None,
    verbose: Annotated[
        bool, typer.Option("--verbose", help="stream Dagster's own log (DEBUG) to the terminal")
    ] = False,
) -> None:
    """Bootstrap, cluster up, load, distribute, add a worker, rebalance via the sensor, check, summarise."""
    plot = plot or (
        settings.REPO_ROOT / "bench-results" / f"pipeline-{time.strftime('%Y%m%d-%H%M%S')}.png"
    )
    home = bootstrap_dagster_home(dagster_home)
    log = RunLog.in_home(home, verbose)
    try:
        run_pipeline(
            rows=rows,
            source=source,
            dagster_home=home,
            spec=spec,
            state_dir=state_dir,
            seed=seed,
            plot=plot,
            log=log,
        )
    except PipelineFailed as e:  # what failed is on the console already: the status only
        raise typer.Exit(e.code) from None


@app.command("screenshots")
def screenshots_command(
    dagster_home: DagsterHomeOpt = settings.DEFAULT_DAGSTER_HOME,
    out: Annotated[Path, typer.Option(help="where the PNGs go")] = SCREENSHOTS,
) -> None:
    """The README's pictures of the UI, taken anew from the instance's runs (after `pipeline run`)."""
    from .terminal import user_errors
    from .ui_tour import capture, serve

    home = bootstrap_dagster_home(dagster_home)
    # with the daemon: the sensor's page shows real ticks (the cluster of the run still up)
    with user_errors(), serve(home, home / "logs" / "webserver.log", daemon=True) as url:
        with console.status("waiting for the daemon's first sensor tick …"):
            _wait_for_sensor_tick(home, "new_workers_sensor", 120)
        for shot in capture(url, out):
            console.print(f"wrote {shot}")


def _wait_for_sensor_tick(home: Path, sensor: str, timeout: float) -> None:
    import dagster as dg
    from dagster._core.instance.ref import InstanceRef
    from dagster._core.scheduler.instigation import InstigatorType

    with dg.DagsterInstance.from_ref(InstanceRef.from_dir(str(home))) as instance:

        def ticked() -> bool:
            states = instance.all_instigator_state(instigator_type=InstigatorType.SENSOR)
            state = next((s for s in states if s.name == sensor), None)
            return bool(state and instance.get_ticks(state.instigator_origin_id, state.selector_id))

        # best effort: without a tick the screenshot shows an empty tick history, no more
        with contextlib.suppress(WaitTimeout):
            until(ticked, timeout, 2, f"a tick of {sensor}")


@app.command("ui")
def ui_command(
    dagster_home: DagsterHomeOpt = settings.DEFAULT_DAGSTER_HOME,
    host: Annotated[str, typer.Option(help="address the webserver listens on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="port of the webserver")] = 3000,
) -> None:
    """The Dagster UI and daemon (`dagster dev`) on the project's instance (.dagster_home/)."""
    home = bootstrap_dagster_home(dagster_home)
    err_console.print(f"DAGSTER_HOME={home}; http://{host}:{port}")
    workspace = str(settings.REPO_ROOT / "workspace.yaml")
    cmd = [sys.executable, "-m", "dagster", "dev", "-w", workspace, "-h", host, "-p", str(port)]
    os.execv(cmd[0], cmd)


__all__ = ["app"]
