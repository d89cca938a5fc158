"""`citus-pipeline cluster ...`: the local HA Citus cluster from the command line."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from .citus_meta import DrainError
from .local import ClusterError, LocalCluster
from .render import print_topology
from .spec import SpecError, load_spec

app = typer.Typer(
    help="The local HA Citus cluster (etcd + Patroni + PostgreSQL + Citus).", no_args_is_help=True
)
# not a terminal (CI, pipes): wide enough that host:port and roles are never cut
out = Console(width=None if Console().is_terminal else 160)
err = Console(stderr=True)

SpecOpt = Annotated[
    Path | None, typer.Option("--spec", help="cluster spec YAML (default: cluster.yaml)")
]


def _cluster(spec: Path | None) -> LocalCluster:
    try:
        return LocalCluster(load_spec(spec))
    except (SpecError, ClusterError) as e:
        _fail(e)


def _fail(e: Exception) -> None:
    err.print(f"[bold red]error:[/] {e}", highlight=False, soft_wrap=True)
    raise typer.Exit(1)


def _progress():
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
        console=err,
        transient=True,
    )


def _run(fn, *args, **kwargs):
    try:
        return fn(*args, **kwargs)
    except (SpecError, ClusterError, DrainError) as e:
        _fail(e)


@app.command()
def up(
    spec: SpecOpt = None, timeout: float = typer.Option(240, help="seconds to wait for readiness")
):
    """Start (or confirm) the cluster; returns when every group is HA and registered in Citus."""
    c = _cluster(spec)
    t0 = time.monotonic()
    with _progress() as p:
        task = p.add_task("starting", total=1)

        def cb(msg: str, done: int, total: int) -> None:
            p.update(task, description=msg, completed=done, total=total)

        topo = _run(c.up, progress=cb, timeout=timeout)
    out.print(f"cluster ready in {time.monotonic() - t0:.1f} s")
    out.print(f"coordinator DSN: [bold]{c.coordinator_dsn()}[/]", highlight=False, soft_wrap=True)
    print_topology(topo, out)


@app.command()
def status(
    spec: SpecOpt = None,
    as_json: bool = typer.Option(False, "--json", help="machine-readable output"),
):
    """Members of every group (like patronictl list), pg_dist_node, and shards per node."""
    c = _cluster(spec)
    topo = _run(c.status)
    if as_json:
        print(json.dumps(topo.model_dump(mode="json"), indent=2))
    else:
        print_topology(topo, out)


@app.command("add-worker")
def add_worker(spec: SpecOpt = None):
    """Add the next worker group (members per the spec) and wait until Citus lists it."""
    c = _cluster(spec)
    with _progress() as p:
        task = p.add_task("starting", total=1)
        group = _run(
            c.add_worker,
            progress=lambda m, d, t: p.update(task, description=m, completed=d, total=t),
        )
    out.print(f"worker group {group} added")
    print_topology(_run(c.status), out)


@app.command("remove-worker")
def remove_worker(
    group: int,
    spec: SpecOpt = None,
    transfer_mode: str = typer.Option(
        "block_writes", help="citus shard_transfer_mode for the drain"
    ),
):
    """Drain GROUP's shards (citus_drain_node), then stop and remove it; refuses if the drain fails."""
    c = _cluster(spec)
    with err.status(f"draining group {group}"):
        moved = _run(c.remove_worker, group, transfer_mode)
    out.print(f"worker group {group} removed after moving {moved} shard placements")


@app.command()
def switchover(group: int, candidate: str | None = typer.Option(None), spec: SpecOpt = None):
    """Planned leader change in GROUP (to its synchronous standby unless --candidate)."""
    c = _cluster(spec)
    with err.status(f"switchover of group {group}"):
        new = _run(c.switchover, group, candidate)
    out.print(f"group {group}: new leader {new}")


@app.command()
def failover(group: int, candidate: str | None = typer.Option(None), spec: SpecOpt = None):
    """Forced leader change in GROUP."""
    c = _cluster(spec)
    with err.status(f"failover of group {group}"):
        new = _run(c.failover, group, candidate)
    out.print(f"group {group}: new leader {new}")


@app.command()
def stop(
    member: str,
    kill: bool = typer.Option(False, "--kill", help="SIGKILL Patroni and PostgreSQL"),
    spec: SpecOpt = None,
):
    """Stop one MEMBER (fault drill); Patroni fails over if it was a leader."""
    c = _cluster(spec)
    _run(c.stop_member, member, kill)
    out.print(f"member {member} {'killed' if kill else 'stopped'}")


@app.command()
def start(member: str, spec: SpecOpt = None):
    """Start one MEMBER again and wait until it streams."""
    c = _cluster(spec)
    with err.status(f"starting {member}"):
        _run(c.start_member, member)
    out.print(f"member {member} running")


@app.command()
def down(
    purge: bool = typer.Option(False, "--purge", help="also delete data, logs and secrets"),
    spec: SpecOpt = None,
):
    """Stop every process of the cluster (etcd, Patroni, PostgreSQL)."""
    c = _cluster(spec)
    t0 = time.monotonic()
    _run(c.down, purge)
    out.print(
        f"cluster stopped in {time.monotonic() - t0:.1f} s" + ("; data deleted" if purge else "")
    )
